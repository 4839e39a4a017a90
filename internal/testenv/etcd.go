package testenv

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// StartEtcd runs a one-member etcd server (Debian's etcd-server, installed by
// hack/deps.sh) on free 127.0.0.1 ports with a temporary data directory, and
// returns its client endpoint (host:port). It is stopped when the test ends.
// A missing binary fails the test.
func StartEtcd(t testing.TB) string {
	t.Helper()
	bin := LookPath(t, "etcd", "hack/deps.sh")
	for attempt := 1; ; attempt++ {
		dir := t.TempDir()
		if err := os.Chmod(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		client, peer := FreePort(t), FreePort(t)
		clientURL := "http://" + Addr(client)
		peerURL := "http://" + Addr(peer)
		p := Start(t, "etcd", bin,
			"--name", "podfs-test",
			"--data-dir", dir,
			"--listen-client-urls", clientURL,
			"--advertise-client-urls", clientURL,
			"--listen-peer-urls", peerURL,
			"--initial-advertise-peer-urls", peerURL,
			"--initial-cluster", "podfs-test="+peerURL,
			"--initial-cluster-state", "new",
			// podfs transactions that release many chunks at once need more
			// than the default 128 operations.
			"--max-txn-ops", "4096",
			"--logger", "zap",
			"--log-level", "error",
		)
		err := WaitTCP(p, Addr(client), 30*time.Second)
		if err == nil {
			return fmt.Sprintf("127.0.0.1:%d", client)
		}
		// Another process may take a free port before etcd binds it.
		if attempt < 3 && strings.Contains(p.Output(), "address already in use") {
			continue
		}
		t.Fatalf("etcd did not start: %v", err)
	}
}
