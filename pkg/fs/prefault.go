package fs

import (
	"errors"
	"os"
	"reflect"
	"sync"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// A server killed while the kernel copies a request into its read buffer
// costs the application an EIO: the kernel ends a request whose copy to
// the server failed with EIO (fuse_dev_do_read), and the copy fails when
// it must fault a page in for a thread with SIGKILL pending (the slow path
// of get_user_pages gives up on a fatal signal; the lockless fast path,
// taken when every page is mapped and writable, does not look). A request
// read by a server killed at any other moment waits for the next server
// (FUSE_NOTIFY_RESEND). So a server whose successor continues its
// connection keeps every page of its request buffers mapped: fresh ones
// are written through before use (go-fuse allocates them untouched, and
// the Go runtime hands out memory not yet faulted in), and a buffer stays
// mapped while it is pooled and reused.
//
// go-fuse has no option for this; its Server keeps the buffers in an
// unexported sync.Pool (readPool, go-fuse v2.12.1), reached here by
// reflection. TestPrefaultReadBuffers fails loudly when a go-fuse upgrade
// moves it.

// prefaultReadBuffers makes every request buffer of s mapped before the
// kernel writes into it.
func prefaultReadBuffers(s *fuse.Server) error {
	p, err := readPool(s)
	if err != nil {
		return err
	}
	alloc := p.New
	p.New = func() any {
		b := alloc()
		if buf, ok := b.([]byte); ok {
			touchPages(buf)
		}
		return b
	}
	// Buffers allocated before (the one INIT was read into) are pooled:
	// map them too.
	var held []any
	for range 4 {
		b := p.Get()
		if buf, ok := b.([]byte); ok {
			touchPages(buf)
		}
		held = append(held, b)
	}
	for _, b := range held {
		p.Put(b)
	}
	return nil
}

// readPool finds go-fuse's pool of request buffers in s.
func readPool(s *fuse.Server) (*sync.Pool, error) {
	v := reflect.ValueOf(s).Elem().FieldByName("readPool")
	if !v.IsValid() || v.Type() != reflect.TypeFor[sync.Pool]() {
		return nil, errors.New("go-fuse's Server has no readPool sync.Pool (a go-fuse upgrade?): see prefault.go")
	}
	p := (*sync.Pool)(unsafe.Pointer(v.UnsafeAddr()))
	if p.New == nil {
		return nil, errors.New("go-fuse's request buffer pool has no allocator (a go-fuse upgrade?): see prefault.go")
	}
	return p, nil
}

// touchPages writes to every page of buf, so each is mapped and writable.
// The contents do not matter: the kernel overwrites them.
func touchPages(buf []byte) {
	pg := os.Getpagesize()
	for i := 0; i < len(buf); i += pg {
		buf[i] = 0
	}
	if len(buf) > 0 {
		buf[len(buf)-1] = 0
	}
}
