package sidecar

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"podfs.io/podfs/pkg/fuseconn"
	"podfs.io/podfs/sidecar/volumeset"
)

// The Secret the CSI node sends with a connection becomes files in a
// directory of the volume's own, which its mount reads credentials from.
func TestFromSourceFiles(t *testing.T) {
	root := filepath.Join(t.TempDir(), "secrets")
	for _, name := range []string{"pv-a", "pv-b"} {
		v := Volume{Volume: volumeset.Volume{Name: name, Handoff: name}}
		src := &fuseconn.Source{MetaURL: "etcds://u@h:1/v?passwordFile=/etc/podfs/secret/password",
			Files: map[string][]byte{"password": []byte("pw of " + name)}}
		if err := fromSource(&v, src, root); err != nil {
			t.Fatal(err)
		}
		if v.SecretDir != filepath.Join(root, name) {
			t.Fatalf("SecretDir %q, want %q", v.SecretDir, filepath.Join(root, name))
		}
		b, err := os.ReadFile(filepath.Join(v.SecretDir, "password"))
		if err != nil || string(b) != "pw of "+name {
			t.Fatalf("%s: password file %q, %v", name, b, err)
		}
	}
	// No Secret, no directory.
	v := Volume{Volume: volumeset.Volume{Name: "plain", Handoff: "pv-plain"}}
	if err := fromSource(&v, &fuseconn.Source{MetaURL: "etcd://h:1/v"}, root); err != nil || v.SecretDir != "" {
		t.Fatalf("without files: SecretDir %q, %v", v.SecretDir, err)
	}
	// A key that is no file name is refused, naming the volume.
	v = Volume{Volume: volumeset.Volume{Name: "odd", Handoff: "pv-odd"}}
	err := fromSource(&v, &fuseconn.Source{MetaURL: "etcd://h:1/v", Files: map[string][]byte{"../x": nil}}, root)
	if err == nil || !strings.Contains(err.Error(), `volume "odd"`) {
		t.Fatalf("bad key: %v", err)
	}
}
