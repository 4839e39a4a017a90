package storage

import (
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"podfs.io/podfs/internal/testenv"
)

// otherKey is a well-formed Ceph key that is not key.
func otherKey(t *testing.T, key string) string {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(key)
	if err != nil || len(b) < 28 {
		t.Fatalf("key %q: %v", key, err)
	}
	b[len(b)-1] ^= 0xff // in the 16-byte secret at the end
	return base64.StdEncoding.EncodeToString(b)
}

// With cephx on, client.podfs reaches its pool with its keyring (or the
// bare key in a file); a wrong key fails naming the user and where the key
// came from, and no message shows a key.
func TestRadosCephx(t *testing.T) {
	c := testenv.StartCephx(t)
	ctx := context.Background()
	dir := t.TempDir()
	key := testenv.CephKey(t, c.PodfsKeyring)
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	keyfile := write("podfs.key", key+"\n")
	wrong := otherKey(t, key)
	// A key with a '+' in the URL: a plus, not a space.
	plusKey := wrong[:len(wrong)-4] + "+" + wrong[len(wrong)-3:]
	wrongKeyring := write("wrong.keyring", "[client.podfs]\n\tkey = "+wrong+"\n")
	wrongKeyfile := write("wrong.key", wrong+"\n")

	t.Run("keyring", func(t *testing.T) {
		s, err := Open(ctx, c.PodfsURL("namespace=keyring"))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		conformance(t, s)
		if strings.Contains(s.String(), key) {
			t.Fatalf("store name %q shows the key", s)
		}
	})
	t.Run("keyfile", func(t *testing.T) {
		s, err := Open(ctx, "rados://"+c.Pool+"?mon_host=v1:"+c.MonAddr+"&user=client.podfs&keyfile="+keyfile+"&namespace=keyfile")
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if err := s.Put(ctx, "k", []byte("v")); err != nil {
			t.Fatal(err)
		}
		p := make([]byte, 1)
		if n, err := s.Get(ctx, "k", 0, p); err != nil || n != 1 || p[0] != 'v' {
			t.Fatalf("get: %d %q %v", n, p, err)
		}
	})

	base := "rados://" + c.Pool + "?mon_host=v1:" + c.MonAddr + "&connect_timeout=10s&"
	for _, tc := range []struct {
		name, url string
		want      []string
	}{
		{"wrong key in a keyring", base + "user=podfs&keyring=" + wrongKeyring,
			[]string{"cephx auth failed for client.podfs with keyring " + wrongKeyring}},
		{"wrong key in a keyfile", base + "user=podfs&keyfile=" + wrongKeyfile,
			[]string{"cephx auth failed for client.podfs with keyfile " + wrongKeyfile}},
		{"wrong key in the URL", base + "user=podfs&key=" + wrong,
			[]string{"cephx auth failed for client.podfs with the key= in the URL"}},
		{"wrong key with a plus in the URL", base + "user=podfs&key=" + plusKey,
			[]string{"cephx auth failed for client.podfs with the key= in the URL"}},
		{"keyring of another user", base + "user=admin&keyring=" + c.PodfsKeyring,
			[]string{"client.admin", "keyring " + c.PodfsKeyring}},
		{"no key", base + "user=podfs",
			[]string{"wants cephx, and client.podfs has no key", "add keyring=PATH"}},
		{"missing keyring file", base + "user=podfs&keyring=" + filepath.Join(dir, "none"),
			[]string{"rados: keyring for client.podfs: stat " + filepath.Join(dir, "none")}},
		{"two keys", base + "user=podfs&keyring=" + c.PodfsKeyring + "&key=" + key,
			[]string{"give the key one way"}},
		{"unknown option", base + "user=podfs&keyRing=" + c.PodfsKeyring,
			[]string{`unknown option "keyRing" for rados storage (known: conf, mon_host, user, keyring, keyfile, key, namespace, connect_timeout, op_timeout)`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Open(ctx, tc.url)
			if err == nil {
				s.Close()
				t.Fatal("opened")
			}
			t.Log(err)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\nwant it to contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), key) || strings.Contains(err.Error(), wrong) || strings.Contains(err.Error(), plusKey) {
				t.Errorf("error shows a key: %v", err)
			}
		})
	}
}
