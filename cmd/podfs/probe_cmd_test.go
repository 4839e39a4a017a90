package main

import (
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestProbeCommand: `podfs probe` exits 1 with what failed when the
// webhook's socket does not answer, and 2 on a usage error.
func TestProbeCommand(t *testing.T) {
	bin := buildPodfs(t)
	sock := filepath.Join(t.TempDir(), "health.sock")
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"probe", "--socket", sock, "--path", "/readyz"}, 1, "podfs probe: probe /readyz: no health socket at " + sock + " (is the webhook running with --health-socket " + sock + "?)"},
		{[]string{"probe"}, 2, "probe needs --socket PATH"},
		{[]string{"probe", "--socket", sock, "--path", "readyz"}, 1, "want an absolute path such as /readyz"},
	} {
		out, err := exec.Command(bin, tc.args...).CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != tc.code {
			t.Errorf("podfs %v: %v, want exit %d\n%s", tc.args, err, tc.code, out)
		}
		if !strings.Contains(string(out), tc.want) {
			t.Errorf("podfs %v says %q, want %q", tc.args, out, tc.want)
		}
	}
}
