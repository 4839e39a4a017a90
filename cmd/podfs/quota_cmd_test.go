package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"podfs.io/podfs/pkg/meta"
)

// podfs quota set/get/delete against a real bolt volume; bad input gets
// a usage error that says what to fix, and changes nothing.
func TestQuotaCommand(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	url := "bolt://" + filepath.Join(t.TempDir(), "meta.db")
	m, err := meta.Open(ctx, url, meta.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Init(ctx, meta.Format{Name: "v", Storage: "file:///nonexistent"}); err != nil {
		t.Fatal(err)
	}
	m.Close(ctx)
	quota := func(args ...string) error { return runQuota(ctx, log, args) }

	for _, bad := range []struct {
		args []string
		want string
	}{
		{[]string{"set", url, "--path", "/a"}, "give --capacity, --inodes or both"},
		{[]string{"set", url, "--capacity", "1G"}, "--path"},
		{[]string{"set", url, "--path", "/x/../a", "--capacity", "1G"}, "'..'"},
		{[]string{"set", url, "--path", "/a", "--inodes", "-5"}, "0 (unlimited) or more"},
		{[]string{"set", url, "--path", "/a", "--capacity", "1G"}, "does not exist"},
		{[]string{"get", url, "--path", "/"}, "has no quota"},
		{[]string{"nope", url}, "unknown subcommand"},
		{[]string{"set", url, url, "--path", "/a", "--capacity", "1G"}, "one META-URL"},
	} {
		err := quota(bad.args...)
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("quota %v: %v, want an error saying %q", bad.args, err, bad.want)
		}
	}
	if err := quota("set", url, "--path", "a/b", "--capacity", "10GiB", "--inodes", "1000", "--create"); err != nil {
		t.Fatal(err)
	}
	if err := quota("set", url, "--path", "/a/b", "--inodes", "5"); err != nil {
		t.Fatal(err)
	}
	check := func(want meta.Quota, wantErr error) {
		t.Helper()
		m, err := meta.Open(ctx, url, meta.Options{Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close(ctx)
		dir, err := meta.LookupPath(ctx, m, "/a/b")
		if err != nil {
			t.Fatal(err)
		}
		q, err := m.GetQuota(ctx, dir)
		if !errors.Is(err, wantErr) || q != want {
			t.Fatalf("quota %+v, %v; want %+v, %v", q, err, want, wantErr)
		}
	}
	check(meta.Quota{MaxBytes: 10 << 30, MaxInodes: 5}, nil)
	for _, args := range [][]string{{"get", url, "--path", "/a/b"}, {"list", url}, {"check", url}} {
		if err := quota(args...); err != nil {
			t.Fatalf("quota %v: %v", args, err)
		}
	}
	if err := quota("delete", url, "--path", "/a/b"); err != nil {
		t.Fatal(err)
	}
	check(meta.Quota{}, syscall.ENOENT)
}
