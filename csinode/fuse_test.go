package csinode

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// fuseHelperEnv makes the test binary serve a FUSE mount at the named
// directory until it is killed: a stand-in for a sidecar that crashes.
const fuseHelperEnv = "PODFS_CSINODE_TEST_FUSE_AT"

func TestMain(m *testing.M) {
	if dir := os.Getenv(fuseHelperEnv); dir != "" {
		os.Exit(serveFUSEHelper(dir))
	}
	os.Exit(m.Run())
}

func serveFUSEHelper(dir string) int {
	// Mount from a mount namespace of our own, as the sidecar does from its
	// container: the mount reaches the node through propagation only. The
	// namespace belongs to this thread, which mounts and then stays locked.
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		fmt.Fprintln(os.Stderr, "unshare the mount namespace:", err)
		return 1
	}
	srv, err := mountTestFS(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ns, err := os.Readlink("/proc/thread-self/ns/mnt")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("ready", ns)
	srv.Wait()
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

// mountTestFS mounts the test file system at dir the way the sidecar mounts
// podfs: a direct mount(2), no fusermount.
func mountTestFS(dir string) (*fuse.Server, error) {
	return fs.Mount(dir, &testRoot{}, &fs.Options{MountOptions: fuse.MountOptions{
		DirectMount: true,
		FsName:      testFSName,
		Name:        testFSName,
	}})
}

// startFUSEProcess serves the test file system at dir from a child process in
// its own mount namespace and returns it once the mount is up.
func startFUSEProcess(t *testing.T, dir string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fuseHelperEnv+"="+dir)
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
	ns, ok := strings.CutPrefix(strings.TrimSpace(line), "ready ")
	if err != nil || !ok {
		t.Fatalf("FUSE helper process did not come up: %q, %v", line, err)
	}
	if own, err := os.Readlink("/proc/self/ns/mnt"); err != nil || own == ns {
		t.Fatalf("FUSE helper mounted from the test's mount namespace %s (%v), not a namespace of its own", own, err)
	}
	return cmd
}
