package kv

import (
	"reflect"
	"strings"
	"testing"

	"github.com/tikv/client-go/v2/config"
)

// client-go keeps one security configuration per process: a second one is
// refused while a client holds the first, and taken once none does.
func TestTiKVSecurityShared(t *testing.T) {
	a := config.Security{ClusterSSLCA: "/a/ca.crt"}
	b := config.Security{ClusterSSLCA: "/b/ca.crt"}
	relA, err := acquireTiKVSecurity(a)
	if err != nil {
		t.Fatal(err)
	}
	relA2, err := acquireTiKVSecurity(a)
	if err != nil {
		t.Fatalf("the same settings again: %v", err)
	}
	if _, err := acquireTiKVSecurity(b); err == nil || !strings.Contains(err.Error(), "other TLS settings") || !strings.Contains(err.Error(), "/a/ca.crt") {
		t.Fatalf("other settings while held: %v", err)
	}
	relA()
	relA() // a second call of one release is a no-op
	if _, err := acquireTiKVSecurity(b); err == nil {
		t.Fatal("other settings while still held once")
	}
	relA2()
	relB, err := acquireTiKVSecurity(b)
	if err != nil {
		t.Fatalf("other settings once released: %v", err)
	}
	defer relB()
	if got := config.GetGlobalConfig().Security; !reflect.DeepEqual(got, b) {
		t.Fatalf("client-go's global security %+v, want %+v", got, b)
	}
}
