package main

import (
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"podfs.io/podfs/internal/testenv"
)

// podfs format and podfs status against an etcd with TLS and auth, the
// password in the metadata URL: neither the output nor an error shows it.
func TestStatusRedactsPassword(t *testing.T) {
	bin := buildPodfs(t)
	e := testenv.StartEtcdTLS(t)
	const password = "Sw0rdf1sh-Secret"
	e.AddUser(t, "podfs", password, "podfs\x00")
	metaURL := fmt.Sprintf("etcds://podfs:%s@%s/vol?cacert=%s&cert=%s&key=%s", password, e.Endpoint, e.CA, e.ClientCert, e.ClientKey)
	run := func(wantOK bool, args ...string) string {
		t.Helper()
		out, err := exec.Command(bin, args...).CombinedOutput()
		if (err == nil) != wantOK {
			t.Fatalf("podfs %s: %v\n%s", args[0], err, out)
		}
		if strings.Contains(string(out), password) {
			t.Fatalf("podfs %s shows the password:\n%s", args[0], out)
		}
		return string(out)
	}
	out := run(true, "format", metaURL, "vol", "--storage", "file://"+t.TempDir())
	if !strings.Contains(out, "etcds://podfs:REDACTED@"+e.Endpoint+"/vol") {
		t.Fatalf("podfs format output does not show the redacted URL:\n%s", out)
	}
	out = run(true, "status", metaURL)
	for _, want := range []string{"Volume  ", "vol", "Metadata", "etcds://podfs:REDACTED@" + e.Endpoint + "/vol?cacert=" + e.CA, "key=REDACTED"} {
		if !strings.Contains(out, want) {
			t.Fatalf("podfs status output lacks %q:\n%s", want, out)
		}
	}
	// A wrong password: the error names the user, not the password.
	wrong := strings.Replace(metaURL, password, password+"-wrong", 1)
	out = run(false, "status", wrong)
	if !strings.Contains(out, `auth failed for user "podfs"`) {
		t.Fatalf("podfs status with a wrong password:\n%s", out)
	}
}

// One volume behind a TLS+auth etcd and a cephx Ceph, every credential a
// file as a mounted Secret gives them: podfs format probes both, the
// recorded storage URL holds only paths, and fsck reads the data through
// it. A key in the storage URL works but is warned about and never shown.
func TestFormatWithCredentialFiles(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "podfs")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build podfs with RADOS: %v\n%s", err, out)
	}
	e := testenv.StartEtcdTLS(t)
	pw := e.AddUser(t, "podfs", "podfs-pw", "podfs\x00")
	c := testenv.StartCephx(t)
	key := testenv.CephKey(t, c.PodfsKeyring)
	run := func(wantOK bool, args ...string) string {
		t.Helper()
		out, err := exec.Command(bin, args...).CombinedOutput()
		if (err == nil) != wantOK {
			t.Fatalf("podfs %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		for _, secret := range []string{key, "podfs-pw"} {
			if strings.Contains(string(out), secret) {
				t.Fatalf("podfs %s shows a secret:\n%s", args[0], out)
			}
		}
		return string(out)
	}
	metaURL := e.URL("podfs", pw, "credvol")
	storageURL := c.PodfsURL("namespace=credvol")
	run(true, "format", metaURL, "credvol", "--storage", storageURL)
	if out := run(true, "status", metaURL); !strings.Contains(out, "keyring="+c.PodfsKeyring) {
		t.Fatalf("podfs status does not show the recorded storage URL:\n%s", out)
	}
	if out := run(true, "fsck", metaURL); !strings.Contains(out, "0 problems") {
		t.Fatalf("podfs fsck:\n%s", out)
	}

	// The key itself in the URL: accepted, warned about, redacted.
	keyURL := "rados://" + c.Pool + "?mon_host=v1:" + c.MonAddr + "&user=podfs&namespace=credvol2&key=" + url.QueryEscape(key)
	out := run(true, "format", e.URL("podfs", pw, "credvol2"), "credvol2", "--storage", keyURL)
	if !strings.Contains(out, "carries a secret (key=)") || !strings.Contains(out, "key=REDACTED") {
		t.Fatalf("podfs format with key=:\n%s", out)
	}

	// A keyring with a wrong key: the error names the user and the file.
	wrong := filepath.Join(t.TempDir(), "wrong.keyring")
	if err := os.WriteFile(wrong, []byte("[client.podfs]\n\tkey = AQBvRxVrAAAAABAAbm90IHRoZSBrZXkgYXQgYWxsIQ==\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out = run(false, "format", e.URL("podfs", pw, "credvol3"), "credvol3", "--storage",
		"rados://"+c.Pool+"?mon_host=v1:"+c.MonAddr+"&user=podfs&keyring="+wrong)
	if !strings.Contains(out, "cephx auth failed for client.podfs with keyring "+wrong) {
		t.Fatalf("podfs format with a wrong keyring:\n%s", out)
	}
}
