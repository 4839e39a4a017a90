package csinode

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"podfs.io/podfs/pkg/fuseconn"
)

// sidecarHelperEnv makes the test binary act as a pod's podfs sidecar for
// one volume ("<handoff dir>|<volume name>"): it takes the connection the
// plugin offers and serves a tiny file system on it until killed.
const sidecarHelperEnv = "PODFS_CSINODE_TEST_SIDECAR"

func TestMain(m *testing.M) {
	if arg := os.Getenv(sidecarHelperEnv); arg != "" {
		os.Exit(sidecarHelper(arg))
	}
	code := m.Run()
	stopSharedKube()
	os.Exit(code)
}

func sidecarHelper(arg string) int {
	dir, name, _ := strings.Cut(arg, "|")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	h, err := fuseconn.Dial(ctx, dir, name, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dial:", err)
		return 1
	}
	a, err := attachTestFS(ctx, h, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, "attach:", err)
		return 1
	}
	h.ServeStats(func(context.Context) (fuseconn.Stats, error) {
		return fuseconn.Stats{TotalBytes: 4096000, UsedBytes: 1638400, AvailBytes: 2457600, TotalInodes: 100, UsedInodes: 60, FreeInodes: 40}, nil
	})
	if err := h.Report(ctx, fuseconn.Status{Served: true}); err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		return 1
	}
	fmt.Println("ready")
	a.Server.Serve()
	return 0
}

const (
	testFileName    = "hello.txt"
	testFileContent = "hello from podfs\n"
	testFSName      = "podfstest"
)

// testRoot is a tiny in-memory file system: one file and fixed statfs numbers.
type testRoot struct{ fs.Inode }

var (
	_ fs.NodeOnAdder  = (*testRoot)(nil)
	_ fs.NodeStatfser = (*testRoot)(nil)
)

func (r *testRoot) OnAdd(ctx context.Context) {
	f := &fs.MemRegularFile{Data: []byte(testFileContent), Attr: fuse.Attr{Mode: 0o444}}
	r.AddChild(testFileName, r.NewPersistentInode(ctx, f, fs.StableAttr{}), false)
}

// Numbers the statfs test checks: 1000 blocks of 4 KiB, 600 free; 100 inodes, 40 free.
func (r *testRoot) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	out.Bsize, out.Frsize = 4096, 4096
	out.Blocks, out.Bfree, out.Bavail = 1000, 600, 600
	out.Files, out.Ffree = 100, 40
	return 0
}

// attachTestFS serves the test file system on the connection h carries,
// as a sidecar serves podfs.
func attachTestFS(ctx context.Context, h *fuseconn.Handoff, log *slog.Logger) (*fuseconn.Attached, error) {
	raw := fs.NewNodeFS(&testRoot{}, &fs.Options{})
	return fuseconn.Attach(ctx, fuseconn.AttachConfig{
		Conn:     h.Conn,
		Init:     h.Init,
		SaveInit: func(b []byte) error { return h.SaveInit(ctx, b) },
		NewServer: func(mp string) (*fuse.Server, error) {
			return fuse.NewServer(raw, mp, &fuse.MountOptions{Name: testFSName, FsName: testFSName})
		},
		Log: log,
	})
}

// startSidecar serves the volume called name offered in the handoff dir
// from a child process, as a pod's sidecar would, and returns it once it
// serves.
func startSidecar(t *testing.T, dir, name string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), sidecarHelperEnv+"="+dir+"|"+name)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ready" {
		t.Fatalf("sidecar helper process did not come up: %q, %v", line, err)
	}
	return cmd
}
