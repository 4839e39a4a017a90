package fs

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"podfs.io/podfs/internal/testenv"
	"podfs.io/podfs/pkg/meta"
	"podfs.io/podfs/pkg/secretfiles"
)

// A volume whose URLs name their credentials as /etc/podfs/secret/KEY (a
// TLS+auth etcd, a cephx Ceph) mounts with Config.SecretDir holding the
// Secret's files: the metadata URL and the storage URL recorded at format
// time both read them from there. Without it, the error names the file.
func TestMountSecretDir(t *testing.T) {
	testenv.RequireRoot(t)
	e := testenv.StartEtcdTLS(t)
	pw := "secret-dir-pw"
	e.AddUser(t, "podfs", pw, "podfs\x00")
	c := testenv.StartCephx(t)
	read := func(p string) []byte {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	dir := filepath.Join(t.TempDir(), "secrets", "0")
	if err := secretfiles.Write(dir, map[string][]byte{
		"ca.crt": read(e.CA), "client.crt": read(e.ClientCert), "client.key": read(e.ClientKey),
		"password": []byte(pw + "\n"), "ceph.keyring": read(c.PodfsKeyring),
	}); err != nil {
		t.Fatal(err)
	}
	const s = secretfiles.Dir
	v := &volume{
		metaURL: "etcds://podfs@" + e.Endpoint + "/secvol?cacert=" + s + "/ca.crt&cert=" + s + "/client.crt&key=" + s + "/client.key&passwordFile=" + s + "/password",
		storage: "rados://" + c.Pool + "?mon_host=v1:" + c.MonAddr + "&user=podfs&keyring=" + s + "/ceph.keyring&namespace=secvol",
		name:    "secvol",
	}
	// Formatted as a Job with the Secret mounted at Dir would: the same URLs.
	formatVolume(t, secretfiles.Rebase(v.metaURL, dir), v.storage, v.name, meta.FormatVersion)

	mp := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mp, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := New(ctx, Config{MetaURL: v.metaURL, MountPoint: mp, Logger: testLogger(t)}); err == nil ||
		!strings.Contains(err.Error(), "read cacert: open "+s+"/ca.crt") {
		t.Fatalf("mount without SecretDir: %v; want an error naming %s/ca.crt", err, s)
	}

	_, mp = mountVolume(t, v, func(c *Config) { c.SecretDir = dir })
	want := bytes.Repeat([]byte("podfs"), 300_000)
	f := filepath.Join(mp, "f")
	mustWrite(t, f, want)
	if got := mustRead(t, f); !bytes.Equal(got, want) {
		t.Fatalf("read back %d bytes, want %d", len(got), len(want))
	}
}
