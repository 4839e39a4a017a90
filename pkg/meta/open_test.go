package meta

import (
	"context"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"podfs.io/podfs/internal/testenv"
)

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		url  string
		want *ParsedURL
	}{
		{"bolt:///var/lib/podfs/meta.db", &ParsedURL{Scheme: "bolt", Path: "/var/lib/podfs/meta.db"}},
		{"bolt:///tmp/Fuzz#1?/meta.db", &ParsedURL{Scheme: "bolt", Path: "/tmp/Fuzz#1?/meta.db"}},
		{"etcd://127.0.0.1:2379/vol1", &ParsedURL{Scheme: "etcd", Hosts: []string{"127.0.0.1:2379"}, Volume: "vol1"}},
		{"tikv://pd1:2379,pd2:2379/v.2", &ParsedURL{Scheme: "tikv", Hosts: []string{"pd1:2379", "pd2:2379"}, Volume: "v.2"}},
	} {
		got, err := ParseURL(tc.url)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseURL(%q) = %+v, %v; want %+v", tc.url, got, err, tc.want)
		}
	}
	for _, bad := range []string{
		"", "meta.db", "mysql://h/v", "bolt://relative.db", "bolt:///dir/", "etcd://h:1", "etcd://h:1/",
		"etcd://h/vol", "etcd://h:x/vol", "tikv://a:1,/vol", "etcd://h:1/a/b", "etcd://h:1/vol?x=1",
	} {
		_, err := ParseURL(bad)
		if err == nil || !strings.Contains(err.Error(), URLForms) {
			t.Errorf("ParseURL(%q): %v; want an error listing the accepted forms", bad, err)
		}
	}
}

func TestOpenBolt(t *testing.T) {
	ctx := context.Background()
	url := "bolt://" + filepath.Join(t.TempDir(), "sub", "meta.db")
	m, err := Open(ctx, url, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close(ctx)
	if _, err := m.Load(ctx); err == nil {
		t.Fatal("load of an unformatted volume succeeded")
	}
	if err := m.Init(ctx, Format{Name: "v"}); err != nil {
		t.Fatal(err)
	}
	// A second opener of the same file fails quickly with a clear error.
	opt := testOptions()
	opt.LockTimeout = 100e6
	if _, err := Open(ctx, url, opt); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second open: %v", err)
	}
}

// Networked engines with nothing at the address fail within the connect
// timeout, naming the address.
func TestOpenUnreachable(t *testing.T) {
	ctx := context.Background()
	addr := testenv.Addr(testenv.FreePort(t))
	for _, scheme := range []string{"etcd", "tikv"} {
		opt := testOptions()
		opt.ConnectTimeout = time.Second
		done := make(chan error, 1)
		go func() {
			_, err := Open(ctx, scheme+"://"+addr+"/vol", opt)
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), addr) {
				t.Fatalf("%s: %v; want an error naming %s", scheme, err, addr)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: Open still blocked 30 s after a 1 s connect timeout", scheme)
		}
	}
}
