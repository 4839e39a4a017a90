package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"podfs.io/podfs/internal/testenv"
)

// TestPushToRegistry pushes an image to a real registry (Debian's
// docker-registry with TLS and basic auth, started by hack/registry.sh on a
// free loopback port) and reads its manifest back by digest; a wrong
// password and an untrusted CA fail with errors that say so.
func TestPushToRegistry(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	addr := testenv.Addr(testenv.FreePort(t))
	script := filepath.Join("..", "registry.sh")
	env := append(os.Environ(), "PODFS_REGISTRY_DIR="+filepath.Join(dir, "registry"), "PODFS_REGISTRY_ADDR="+addr)
	sh := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(script, args...)
		cmd.Env = env
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("hack/registry.sh %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	sh("up")
	t.Cleanup(func() { sh("down") })
	ca := filepath.Join(dir, "registry", "ca.crt")
	password, err := os.ReadFile(filepath.Join(dir, "registry", "password"))
	if err != nil {
		t.Fatal(err)
	}

	data := filepath.Join(dir, "hello.txt")
	if err := os.WriteFile(data, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	tarPath := filepath.Join(dir, "img.tar")
	if err := run([]string{"-o", tarPath, "-tag", "podfs.io/test:v1", "-add", data + ":/etc/hello.txt"}); err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(tarPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	want, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}

	ref := addr + "/podfs/test:v1"
	t.Setenv(envCA, "")
	t.Setenv(envUser, "")
	t.Setenv(envPassword, "")
	if err := runPush(strings.NewReader(string(password)), []string{"-tar", tarPath, "-ref", ref, "-username", "podfs", "-password-stdin", "-ca-file", ca}); err != nil {
		t.Fatalf("push: %v", err)
	}
	// Read back with the same credentials, as a kubelet pulling through an
	// imagePullSecret would.
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	got, err := remoteDigest(r, &authn.Basic{Username: "podfs", Password: strings.TrimSpace(string(password))}, ca)
	if err != nil {
		t.Fatalf("read the manifest back: %v", err)
	}
	if got != want.String() {
		t.Fatalf("registry has %s, pushed %s", got, want)
	}

	err = runPush(strings.NewReader("wrong\n"), []string{"-tar", tarPath, "-ref", ref, "-username", "podfs", "-password-stdin", "-ca-file", ca})
	if err == nil || !strings.Contains(err.Error(), "refused the credentials") {
		t.Fatalf("push with a wrong password: %v, want the credentials named", err)
	}
	err = runPush(strings.NewReader(string(password)), []string{"-tar", tarPath, "-ref", ref, "-username", "podfs", "-password-stdin"})
	if err == nil || !strings.Contains(err.Error(), "certificate is not trusted") {
		t.Fatalf("push without the CA: %v, want the certificate named", err)
	}
}
