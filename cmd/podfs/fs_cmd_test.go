package main

import (
	"flag"
	"reflect"
	"testing"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"4M": 4 << 20, "4MiB": 4 << 20, "64k": 64 << 10, "1G": 1 << 30, "100": 100, "1.5K": 1536} {
		got, err := parseSize(in)
		if err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "x", "-1M", "4Q"} {
		if _, err := parseSize(bad); err == nil {
			t.Errorf("parseSize(%q): no error", bad)
		}
	}
}

func TestParseInterleaved(t *testing.T) {
	f := flag.NewFlagSet("t", flag.ContinueOnError)
	d := f.Bool("d", false, "")
	o := f.String("o", "", "")
	pos, err := parseInterleaved(f, []string{"meta", "-d", "/mnt", "-o", "ro"})
	if err != nil || !*d || *o != "ro" || !reflect.DeepEqual(pos, []string{"meta", "/mnt"}) {
		t.Fatalf("pos %v d %v o %q err %v", pos, *d, *o, err)
	}
}

func TestMountName(t *testing.T) {
	if got := mountName("/mnt/pod fs/x"); got != "mnt_pod_fs_x" {
		t.Errorf("got %q", got)
	}
}
