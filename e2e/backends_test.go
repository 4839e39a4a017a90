//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"podfs.io/podfs/internal/testenv"
)

// The podfs backends live on the host: metadata in an etcd of its own
// (testenv.StartEtcd, separate from the cluster's), data in a one-node Ceph
// (testenv.SharedCeph, hack/ceph.sh). Test pods use the host network, so
// they reach both on 127.0.0.1.

// volume is a formatted podfs volume: metadata in the host etcd, data in a
// RADOS namespace of its own.
type volume struct {
	name       string
	metaURL    string
	storageURL string
}

func (e *env) formatVolume(t *testing.T, name string) volume {
	t.Helper()
	v := volume{
		name:    name,
		metaURL: fmt.Sprintf("etcd://%s/%s", e.etcdAddr, name),
		// Ceph starts on first use: scenarios that need no data run without it.
		storageURL: testenv.SharedCeph(t).URL("namespace=" + name),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, e.podfsBin, "format", v.metaURL, name, "--storage", v.storageURL).CombinedOutput()
	if err != nil {
		t.Fatalf("podfs format %s %s --storage %s: %v\n%s", v.metaURL, name, v.storageURL, err, out)
	}
	return v
}

// hostMounts returns the mount points on the host that contain s.
func hostMounts(t *testing.T, s string) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 4 && strings.Contains(f[4], s) {
			out = append(out, f[4]+" ("+fstype(f)+")")
		}
	}
	return out
}

func fstype(fields []string) string {
	for i, f := range fields {
		if f == "-" && i+1 < len(fields) {
			return fields[i+1]
		}
	}
	return "?"
}
