package secretfiles

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestRebase(t *testing.T) {
	const to = "/run/podfs/secrets/0"
	for _, tc := range []struct{ in, want string }{
		{"etcds://u@h:1/v?cacert=/etc/podfs/secret/ca.crt&cert=/etc/podfs/secret/c&key=/etc/podfs/secret/k&passwordFile=/etc/podfs/secret/pw",
			"etcds://u@h:1/v?cacert=/run/podfs/secrets/0/ca.crt&cert=/run/podfs/secrets/0/c&key=/run/podfs/secrets/0/k&passwordFile=/run/podfs/secrets/0/pw"},
		{"rados://pool?mon_host=1.2.3.4:6789&user=podfs&keyring=/etc/podfs/secret/ceph.keyring",
			"rados://pool?mon_host=1.2.3.4:6789&user=podfs&keyring=/run/podfs/secrets/0/ceph.keyring"},
		// Paths elsewhere, a bare Dir, other parts of the URL: unchanged.
		{"tikv://pd:1/v?ca=/etc/ssl/ca.crt&cert=/etc/podfs/secretx/c", "tikv://pd:1/v?ca=/etc/ssl/ca.crt&cert=/etc/podfs/secretx/c"},
		{"etcd://u:/etc/podfs/secret/x@h:1/v", "etcd://u:/etc/podfs/secret/x@h:1/v"},
		{"bolt:///tmp/a?k=/etc/podfs/secret/x", "bolt:///tmp/a?k=/etc/podfs/secret/x"},
		{"etcd://h:1/v", "etcd://h:1/v"},
	} {
		if got := Rebase(tc.in, to+"/"); got != tc.want {
			t.Errorf("Rebase(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestWrite(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "secrets", "0")
	if err := Write(dir, map[string][]byte{"ca.crt": []byte("CA"), "password": []byte("pw\n")}); err != nil {
		t.Fatal(err)
	}
	// Written again with a key less and one changed: exactly the new data.
	if err := Write(dir, map[string][]byte{"ca.crt": []byte("CA2")}); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if !reflect.DeepEqual(names, []string{"ca.crt"}) {
		t.Fatalf("directory holds %v, want [ca.crt]", names)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "ca.crt")); string(b) != "CA2" {
		t.Fatalf("ca.crt holds %q", b)
	}
	for p, want := range map[string]os.FileMode{dir: 0o700 | os.ModeDir, filepath.Join(dir, "ca.crt"): 0o400} {
		if st, err := os.Stat(p); err != nil || st.Mode() != want {
			t.Fatalf("%s: mode %v, %v; want %v", p, st.Mode(), err, want)
		}
	}
	for _, bad := range []string{"..", "a/b", "", "x y"} {
		if err := Write(dir, map[string][]byte{bad: nil}); err == nil {
			t.Errorf("key %q accepted", bad)
		}
	}
}
