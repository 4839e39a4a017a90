package sidecar

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"podfs.io/podfs/pkg/data"
)

// MemoryLimitEnv may carry the container's memory limit in bytes (the
// webhook can set it from the downward API, resourceFieldRef
// limits.memory) for when no cgroup file says it.
const MemoryLimitEnv = "PODFS_MEMORY_LIMIT"

// runtimeReserve is the memory a sidecar needs besides its data budget: the
// Go runtime, the metadata client, FUSE request buffers (about 69 MiB
// measured idle on the cluster).
const runtimeReserve = 96 << 20

// Smallest shares a budget gets however small the limit: a few blocks of
// write buffers keep uploads streaming, a little cache keeps readahead useful.
const (
	minBufferBudget = 32 << 20
	minCacheBudget  = 16 << 20
)

// memoryLimit finds the container's memory limit: cgroup v2's memory.max or
// v1's memory.limit_in_bytes under cgroupRoot (/sys/fs/cgroup in a
// container), else override (a flag), else $PODFS_MEMORY_LIMIT. It returns 0
// when none is set, and where the figure came from.
func memoryLimit(cgroupRoot string, override int64, getenv func(string) string) (int64, string, error) {
	if override > 0 {
		return override, "flag", nil
	}
	for _, f := range []string{"memory.max", "memory/memory.limit_in_bytes"} {
		p := filepath.Join(cgroupRoot, f)
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		s := strings.TrimSpace(string(b))
		if s == "max" {
			break // v2, no limit
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, "", fmt.Errorf("read the memory limit from %s: %q is not a number", p, s)
		}
		// v1 writes a page-rounded huge number when there is no limit.
		if n > 0 && n < 1<<50 {
			return n, p, nil
		}
		break
	}
	if s := getenv(MemoryLimitEnv); s != "" {
		n, err := parseBytes(s)
		if err != nil {
			return 0, "", fmt.Errorf("$%s=%q: %w", MemoryLimitEnv, s, err)
		}
		return n, "$" + MemoryLimitEnv, nil
	}
	return 0, "", nil
}

// parseBytes reads a byte count: a number, optionally with a binary suffix
// Ki, Mi, Gi or Ti (as Kubernetes quantities write them).
func parseBytes(s string) (int64, error) {
	mult := int64(1)
	for i, suf := range []string{"Ki", "Mi", "Gi", "Ti"} {
		if v, ok := strings.CutSuffix(s, suf); ok {
			s, mult = v, 1<<(10*(i+1))
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, errors.New("want a positive number of bytes, optionally with Ki, Mi, Gi or Ti")
	}
	return n * mult, nil
}

// budgetSizes splits what a memory limit leaves for data between the block
// cache and the write buffers. The Go runtime is asked to stay under 90% of
// the limit (GOMEMLIMIT, see goMemLimit); of that, runtimeReserve is for
// everything but data, and a quarter of the rest stays free for garbage
// between collections. The data budget is split 40% cache, 60% write
// buffers: writes stall when buffers run out, reads only miss.
func budgetSizes(limit int64) (cache, buffer int64) {
	d := max((goMemLimit(limit)-runtimeReserve)*3/4, 0)
	cache = max(d*2/5, minCacheBudget)
	buffer = max(d-d*2/5, minBufferBudget)
	return cache, buffer
}

// goMemLimit is the soft limit given to the Go runtime for a container
// memory limit: collect harder before the kernel kills us.
func goMemLimit(limit int64) int64 { return limit / 10 * 9 }

// explicitSizes is the largest block cache and write-buffer sizes the
// volumes ask for (0 when none does).
func explicitSizes(vols []Volume) (cache, buffer int64) {
	for _, v := range vols {
		cache = max(cache, v.Cache.CacheSize)
		buffer = max(buffer, v.Cache.BufferSize)
	}
	return cache, buffer
}

// sharedBudget is the one memory budget of a sidecar's volumes: sized from
// the memory limit when there is one, capped by what the volumes ask for;
// otherwise what they ask for, or pkg/data's defaults.
func sharedBudget(limit int64, vols []Volume) (*data.Budget, int64, int64) {
	cache, buffer := explicitSizes(vols)
	if limit > 0 {
		lc, lb := budgetSizes(limit)
		if cache == 0 || lc < cache {
			cache = lc
		}
		if buffer == 0 || lb < buffer {
			buffer = lb
		}
	}
	if cache <= 0 {
		cache = data.DefaultCacheSize
	}
	if buffer <= 0 {
		buffer = data.DefaultBufferSize
	}
	return data.NewBudget(cache, buffer), cache, buffer
}
