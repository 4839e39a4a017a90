package fs

import (
	"context"
	"os"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestPrefaultReadBuffers serves a handed-off connection and checks that
// the request buffers go-fuse allocates from then on have every page
// mapped: the kernel's copy of a request into them then never faults, so a
// kill -9 of the server cannot fail it with EIO (see prefault.go). It also
// fails loudly when a go-fuse upgrade moves the buffer pool.
func TestPrefaultReadBuffers(t *testing.T) {
	v := newBoltVolume(t)
	mp, conn := mountConn(t, false)
	m := serveConn(t, v, mp, &Conn{File: conn, SaveInit: func([]byte) error { return nil }})
	defer m.Unmount(context.Background())
	p, err := readPool(m.server)
	if err != nil {
		t.Fatal(err)
	}
	buf, ok := p.New().([]byte)
	if !ok || len(buf) == 0 {
		t.Fatalf("go-fuse's request buffer pool allocates %T, want a []byte", p.New())
	}
	pg := uintptr(os.Getpagesize())
	start := uintptr(unsafe.Pointer(&buf[0])) &^ (pg - 1)
	end := uintptr(unsafe.Pointer(&buf[len(buf)-1])) + 1
	vec := make([]byte, (end-start+pg-1)/pg)
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, start, end-start, uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		t.Fatalf("mincore: %v", e)
	}
	missing := 0
	for _, v := range vec {
		if v&1 == 0 {
			missing++
		}
	}
	if missing > 0 {
		t.Fatalf("%d of the %d pages of a new request buffer are not mapped", missing, len(vec))
	}
	p.Put(buf)
}
