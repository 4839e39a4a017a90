package kv

import (
	"context"
	"errors"
	"testing"
	"time"

	"podfs.io/podfs/internal/testenv"
)

// An etcd transaction conflicts with inserts into the part of a range it
// scanned, not only with changes of the keys it saw: what rmdir's emptiness
// check relies on.
func TestEtcdScanConflicts(t *testing.T) {
	ctx := context.Background()
	e, err := OpenEtcd(ctx, EtcdConfig{Endpoints: []string{testenv.StartEtcd(t)}, Volume: "v", Prefix: []byte("v/"), Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	set := func(k string) {
		t.Helper()
		if err := e.Update(ctx, func(tx Tx) error { tx.Set([]byte(k), []byte("1")); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	set("s/b")
	set("s/d")
	for _, tc := range []struct {
		name     string
		start    string
		limit    int
		insert   string
		conflict bool
	}{
		{"insert into a range read empty", "r/", 0, "r/x", true},
		{"insert before the last key seen", "s/", 1, "s/a", true},
		// The scan may look one key ahead (s/d): past that nothing conflicts.
		{"insert past the keys seen", "s/", 1, "s/e", false},
		{"insert outside the range", "r/", 0, "q/x", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := e.Update(ctx, func(tx Tx) error {
				if err := tx.Scan([]byte(tc.start), PrefixEnd([]byte(tc.start)), tc.limit, func(_, _ []byte) bool { return true }); err != nil {
					return err
				}
				set(tc.insert) // another transaction commits meanwhile
				tx.Set([]byte("w/"+tc.name), []byte("1"))
				return nil
			})
			if got := errors.Is(err, ErrConflict); got != tc.conflict {
				t.Fatalf("commit: %v, want conflict %v", err, tc.conflict)
			}
			if err := e.Update(ctx, func(tx Tx) error { tx.Delete([]byte(tc.insert)); return nil }); err != nil {
				t.Fatal(err)
			}
		})
	}
}
