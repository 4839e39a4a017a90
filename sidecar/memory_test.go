package sidecar

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"podfs.io/podfs/sidecar/volumeset"
)

func TestMemoryLimit(t *testing.T) {
	for _, tc := range []struct {
		name     string
		files    map[string]string
		env      string
		override int64
		want     int64
		from     string
		err      string
	}{
		{name: "cgroup v2", files: map[string]string{"memory.max": "1073741824\n"}, want: 1 << 30, from: "memory.max"},
		{name: "cgroup v2 unlimited falls back to the env", files: map[string]string{"memory.max": "max\n"}, env: "512Mi", want: 512 << 20, from: "$" + MemoryLimitEnv},
		{name: "cgroup v1", files: map[string]string{"memory/memory.limit_in_bytes": "268435456\n"}, want: 256 << 20, from: "memory.limit_in_bytes"},
		{name: "cgroup v1 unlimited", files: map[string]string{"memory/memory.limit_in_bytes": "9223372036854771712\n"}, want: 0},
		{name: "the flag wins", files: map[string]string{"memory.max": "1073741824\n"}, override: 300 << 20, want: 300 << 20, from: "flag"},
		{name: "env in bytes", env: "134217728", want: 128 << 20, from: "$" + MemoryLimitEnv},
		{name: "bad env", env: "lots", err: MemoryLimitEnv},
		{name: "bad cgroup file", files: map[string]string{"memory.max": "soon\n"}, err: "memory.max"},
		{name: "nothing", want: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			for f, c := range tc.files {
				p := filepath.Join(root, f)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(c), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, from, err := memoryLimit(root, tc.override, getenv(map[string]string{MemoryLimitEnv: tc.env}))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one naming %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want || !strings.Contains(from, tc.from) {
				t.Fatalf("memoryLimit = %d from %q, %v; want %d from %q", got, from, err, tc.want, tc.from)
			}
		})
	}
}

// One budget for all volumes, within the container's limit.
func TestSharedBudget(t *testing.T) {
	vols := []Volume{{Volume: volumeset.Volume{Name: "a"}}, {Volume: volumeset.Volume{Name: "b"}}}
	for _, limit := range []int64{128 << 20, 256 << 20, 1 << 30, 4 << 30} {
		_, cache, buffer := sharedBudget(limit, vols)
		if cache < minCacheBudget || buffer < minBufferBudget {
			t.Errorf("limit %d MiB: cache %d, buffers %d: below the minimum", limit>>20, cache, buffer)
		}
		if limit >= 256<<20 && cache+buffer+runtimeReserve > goMemLimit(limit) {
			t.Errorf("limit %d MiB: cache %d MiB + buffers %d MiB + runtime %d MiB exceed the Go memory limit %d MiB",
				limit>>20, cache>>20, buffer>>20, runtimeReserve>>20, goMemLimit(limit)>>20)
		}
		t.Logf("memory limit %d MiB: block cache %d MiB, write buffers %d MiB", limit>>20, cache>>20, buffer>>20)
	}
	// What a volume asks for caps the share; without a limit it is the size.
	vols[1].Cache.CacheSize = 32 << 20
	if _, cache, _ := sharedBudget(1<<30, vols); cache != 32<<20 {
		t.Errorf("a volume asking for a 32 MiB cache under a 1 GiB limit got %d", cache)
	}
	if _, cache, buffer := sharedBudget(0, vols); cache != 32<<20 || buffer <= 0 {
		t.Errorf("no limit: cache %d, buffers %d; want the asked 32 MiB and the default buffers", cache, buffer)
	}
}
