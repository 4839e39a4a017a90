package main

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"podfs.io/podfs/internal/testenv"
)

// podfs format and podfs status against an etcd with TLS and auth, the
// password in the metadata URL: neither the output nor an error shows it.
func TestStatusRedactsPassword(t *testing.T) {
	bin := buildPodfs(t)
	e := testenv.StartEtcdTLS(t)
	const password = "Sw0rdf1sh-Secret"
	e.AddUser(t, "podfs", password, "podfs\x00")
	metaURL := fmt.Sprintf("etcds://podfs:%s@%s/vol?cacert=%s&cert=%s&key=%s", password, e.Endpoint, e.CA, e.ClientCert, e.ClientKey)
	run := func(wantOK bool, args ...string) string {
		t.Helper()
		out, err := exec.Command(bin, args...).CombinedOutput()
		if (err == nil) != wantOK {
			t.Fatalf("podfs %s: %v\n%s", args[0], err, out)
		}
		if strings.Contains(string(out), password) {
			t.Fatalf("podfs %s shows the password:\n%s", args[0], out)
		}
		return string(out)
	}
	out := run(true, "format", metaURL, "vol", "--storage", "file://"+t.TempDir())
	if !strings.Contains(out, "etcds://podfs:REDACTED@"+e.Endpoint+"/vol") {
		t.Fatalf("podfs format output does not show the redacted URL:\n%s", out)
	}
	out = run(true, "status", metaURL)
	for _, want := range []string{"Volume  ", "vol", "Metadata", "etcds://podfs:REDACTED@" + e.Endpoint + "/vol?cacert=" + e.CA, "key=REDACTED"} {
		if !strings.Contains(out, want) {
			t.Fatalf("podfs status output lacks %q:\n%s", want, out)
		}
	}
	// A wrong password: the error names the user, not the password.
	wrong := strings.Replace(metaURL, password, password+"-wrong", 1)
	out = run(false, "status", wrong)
	if !strings.Contains(out, `auth failed for user "podfs"`) {
		t.Fatalf("podfs status with a wrong password:\n%s", out)
	}
}
