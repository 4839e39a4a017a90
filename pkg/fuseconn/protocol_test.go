package fuseconn

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openFUSE opens /dev/fuse without mounting: a descriptor that passes the
// checks, for protocol tests that serve nothing.
func openFUSE(t *testing.T) *os.File {
	t.Helper()
	requireRoot(t)
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "/dev/fuse")
	t.Cleanup(func() { f.Close() })
	return f
}

// longDir makes a directory whose path is longer than sun_path.
func longDir(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	for len(d) <= 200 {
		d = filepath.Join(d, strings.Repeat("d", 40))
	}
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

// rawPeer connects to a holder's socket without speaking for a server.
func rawPeer(t *testing.T, dir, volume string) *peer {
	t.Helper()
	p, err := dialIn(dir, SocketName(volume))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.close() })
	return p
}

func sendRaw(t *testing.T, p *peer, b []byte, f *os.File) {
	t.Helper()
	var oob []byte
	if f != nil {
		oob = unix.UnixRights(int(f.Fd()))
	}
	if _, _, err := p.c.WriteMsgUnix(b, oob, nil); err != nil {
		t.Fatal(err)
	}
}

// expectRefusal reads the holder's answer: an error message containing
// want, within the holder's deadline plus a margin.
func expectRefusal(t *testing.T, p *peer, want string) {
	t.Helper()
	m, f, err := p.recv(time.Now().Add(opTimeout + 10*time.Second))
	if f != nil {
		f.Close()
	}
	if err != nil {
		t.Fatalf("want a refusal containing %q, got %v", want, err)
	}
	if m.Type != msgError || !strings.Contains(m.Error, want) {
		t.Fatalf("got %+v, want an error containing %q", m, want)
	}
	// Then the holder hangs up.
	if _, _, err := p.recv(time.Now().Add(10 * time.Second)); err == nil {
		t.Fatal("the holder kept the connection of a peer it refused")
	}
}

func TestLongSocketDir(t *testing.T) {
	conn := openFUSE(t)
	dir := longDir(t)
	if len(dir)+len(SocketName("v")) < 108 {
		t.Fatalf("test directory %d bytes: too short to prove anything", len(dir))
	}
	h := hold(t, HolderConfig{Dir: dir, Volume: Volume{Name: "v", VolumeID: "id-1"}, Conn: conn, Init: nil})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ho, err := Dial(ctx, dir, "v", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ho.Close()
	if ho.Volume.VolumeID != "id-1" || ho.Conn == nil || ho.Init != nil || !ho.Clean {
		t.Fatalf("handoff %+v: want volume id-1, a descriptor, no INIT, clean", ho)
	}
	if err := isFUSE(ho.Conn); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Stats(ctx); err == nil {
		t.Fatal("stats before the server serves them: no error")
	}
	ho.ServeStats(func(context.Context) (Stats, error) { return Stats{UsedInodes: 3}, nil })
	if st, err := h.Stats(ctx); err != nil || st.UsedInodes != 3 {
		t.Fatalf("stats: %+v, %v", st, err)
	}
	if err := ho.SaveInit(ctx, []byte("x")); err != nil || string(h.Init()) != "x" {
		t.Fatalf("SaveInit: %v; holder has %q", err, h.Init())
	}
}

func TestStatsWithoutServer(t *testing.T) {
	h := hold(t, HolderConfig{Dir: t.TempDir(), Volume: Volume{Name: "v"}, Conn: openFUSE(t)})
	start := time.Now()
	_, err := h.Stats(context.Background())
	if !errors.Is(err, ErrNotConnected) {
		t.Fatalf("stats with no server: %v, want ErrNotConnected", err)
	}
	t.Logf("answered in %s", time.Since(start))
}

// TestBadServers: peers on the holder's socket that do not follow the
// protocol are refused with an error that says what is wrong.
func TestBadServers(t *testing.T) {
	conn := openFUSE(t)
	dir := t.TempDir()
	hold(t, HolderConfig{Dir: dir, Volume: Volume{Name: "v"}, Conn: conn})
	adopting := t.TempDir()
	hold(t, HolderConfig{Dir: adopting, Volume: Volume{Name: "v"}})
	hello := func(v int, volume string, haveConn bool) []byte {
		b, _ := json.Marshal(message{V: v, Type: msgHello, Volume: volume, HaveConn: haveConn})
		return b
	}
	t.Run("Garbage", func(t *testing.T) {
		p := rawPeer(t, dir, "v")
		sendRaw(t, p, []byte("\x00\x01 not json"), nil)
		expectRefusal(t, p, "undecodable")
	})
	t.Run("WrongVersion", func(t *testing.T) {
		p := rawPeer(t, dir, "v")
		sendRaw(t, p, hello(2, "v", false), nil)
		expectRefusal(t, p, "protocol version 2")
	})
	t.Run("Oversize", func(t *testing.T) {
		p := rawPeer(t, dir, "v")
		sendRaw(t, p, bytes.Repeat([]byte(" "), maxMessage+100), nil)
		expectRefusal(t, p, "longer than")
	})
	t.Run("WrongVolume", func(t *testing.T) {
		p := rawPeer(t, dir, "v")
		sendRaw(t, p, hello(protoVersion, "other", false), nil)
		expectRefusal(t, p, `asked for "other"`)
	})
	t.Run("NeverSpeaks", func(t *testing.T) {
		p := rawPeer(t, dir, "v")
		expectRefusal(t, p, "within its deadline")
	})
	t.Run("GiveWithoutDescriptor", func(t *testing.T) {
		p := rawPeer(t, adopting, "v")
		sendRaw(t, p, hello(protoVersion, "v", true), nil)
		m, _, err := p.recv(time.Now().Add(10 * time.Second))
		if err != nil || m.Type != msgAdopt {
			t.Fatalf("adopting holder answered %+v, %v; want adopt", m, err)
		}
		b, _ := json.Marshal(message{V: protoVersion, Type: msgGive, Volume: "v"})
		sendRaw(t, p, b, nil)
		expectRefusal(t, p, "without the FUSE descriptor")
	})
	t.Run("GiveNotFUSE", func(t *testing.T) {
		p := rawPeer(t, adopting, "v")
		sendRaw(t, p, hello(protoVersion, "v", true), nil)
		if m, _, err := p.recv(time.Now().Add(10 * time.Second)); err != nil || m.Type != msgAdopt {
			t.Fatalf("adopting holder answered %+v, %v; want adopt", m, err)
		}
		b, _ := json.Marshal(message{V: protoVersion, Type: msgGive, Volume: "v"})
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		defer w.Close()
		sendRaw(t, p, b, r)
		expectRefusal(t, p, "not /dev/fuse")
	})
	t.Run("NoConnToAdopt", func(t *testing.T) {
		p := rawPeer(t, adopting, "v")
		sendRaw(t, p, hello(protoVersion, "v", false), nil)
		expectRefusal(t, p, "must be mounted again")
	})
}

// fakeHolder listens where a holder would and lets the test answer.
func fakeHolder(t *testing.T, dir, volume string, answer func(p *peer)) {
	t.Helper()
	h := &Holder{cfg: HolderConfig{Dir: dir}, name: SocketName(volume)}
	fd, err := openDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	h.dirfd = fd
	ln, err := h.listen()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.AcceptUnix()
		if err != nil {
			return
		}
		p := &peer{c: c}
		defer p.close()
		answer(p)
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		unix.Close(fd)
	})
}

// TestBadHolders: Dial fails clearly, within its deadline, on a holder
// that does not follow the protocol.
func TestBadHolders(t *testing.T) {
	requireRoot(t)
	dial := func(t *testing.T, dir string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		h, err := Dial(ctx, dir, "v", nil)
		if err == nil {
			h.Close()
			t.Fatal("Dial succeeded")
		}
		if ctx.Err() != nil {
			t.Fatalf("Dial failed only when its context ended: %v", err)
		}
		return err
	}
	reply := func(raw []byte, f *os.File) func(p *peer) {
		return func(p *peer) {
			if _, _, err := p.recv(time.Now().Add(10 * time.Second)); err != nil {
				return
			}
			var oob []byte
			if f != nil {
				oob = unix.UnixRights(int(f.Fd()))
			}
			_, _, _ = p.c.WriteMsgUnix(raw, oob, nil)
			_, _, _ = p.recv(time.Now().Add(10 * time.Second)) // until the server hangs up
		}
	}
	conn := func(v int) []byte {
		b, _ := json.Marshal(message{V: v, Type: msgConn, Volume: "v", Info: &Volume{Name: "v"}})
		return b
	}
	cases := []struct {
		name   string
		answer func(p *peer)
		want   string
	}{
		{"NeverAnswers", func(p *peer) {
			_, _, _ = p.recv(time.Now().Add(10 * time.Second)) // the hello
			_, _, _ = p.recv(time.Now().Add(20 * time.Second)) // until the server hangs up
		}, "within its deadline"},
		{"Garbage", reply([]byte("{{{"), nil), "undecodable"},
		{"WrongVersion", reply(conn(7), nil), "protocol version 7"},
		{"NoDescriptor", reply(conn(protoVersion), nil), "carries no descriptor"},
		{"NotFUSE", reply(conn(protoVersion), os.Stdin), "not /dev/fuse"},
		{"Oversize", reply(bytes.Repeat([]byte("x"), maxMessage+1), nil), "longer than"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			fakeHolder(t, dir, "v", c.answer)
			start := time.Now()
			err := dial(t, dir)
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Dial: %v; want an error containing %q", err, c.want)
			}
			t.Logf("refused after %s: %v", time.Since(start).Round(time.Millisecond), err)
		})
	}
}

// TestDialWaitsForHolder: a server started before its holder connects
// once the holder listens.
func TestDialWaitsForHolder(t *testing.T) {
	conn := openFUSE(t)
	dir := t.TempDir()
	type result struct {
		h   *Handoff
		err error
	}
	ch := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		h, err := Dial(ctx, dir, "late", nil)
		ch <- result{h, err}
	}()
	// Dial is retrying on a missing socket; now the holder appears.
	hold(t, HolderConfig{Dir: dir, Volume: Volume{Name: "late"}, Conn: conn})
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	r.h.Close()
	// And a Dial whose context ends says so.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := Dial(ctx, t.TempDir(), "nobody", nil); !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, syscall.ENOENT) && !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("Dial with no holder: %v; want the deadline and the missing socket", err)
	}
}
