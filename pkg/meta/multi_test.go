package meta

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"syscall"
	"testing"
	"time"
)

func multiEngines() []engineCase { return []engineCase{etcdCase(), tikvCase()} }

// eventually polls cond until it holds or 20 s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 20 s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Two clients of one volume see each other's changes at once and their
// locks conflict.
func TestTwoClients(t *testing.T) {
	for _, ec := range multiEngines() {
		t.Run(ec.name, func(t *testing.T) {
			ctx := context.Background()
			vol := ec.newVolume(t)
			a, b := vol(t), vol(t)
			ok(t, a.NewSession(ctx, "/mnt/a"))
			ok(t, b.NewSession(ctx, "/mnt/b"))
			if ss := must[[]Session](t)(a.ListSessions(ctx)); len(ss) != 2 || ss[0].MountPoint != "/mnt/a" || ss[1].MountPoint != "/mnt/b" {
				t.Fatalf("sessions %+v", ss)
			}

			f, _, err := a.Mknod(ctx, RootIno, "f", 0o644, 0, 0, 0)
			ok(t, err)
			if got, _, err := b.Lookup(ctx, RootIno, "f"); err != nil || got != f {
				t.Fatalf("b lookup: %d %v", got, err)
			}
			ok(t, b.Rename(ctx, RootIno, "f", RootIno, "g", 0))
			_, _, err = a.Lookup(ctx, RootIno, "f")
			wantErrno(t, err, syscall.ENOENT)
			_, err = a.SetAttr(ctx, f, SetSize, Attr{Size: 777})
			ok(t, err)
			if at := must[Attr](t)(b.GetAttr(ctx, f)); at.Size != 777 {
				t.Fatalf("b sees size %d", at.Size)
			}

			// flock: a holds it, b fails, b's blocking wait ends when a unlocks.
			ok(t, a.Flock(ctx, f, 1, syscall.F_WRLCK, false))
			wantErrno(t, b.Flock(ctx, f, 1, syscall.F_RDLCK, false), syscall.EAGAIN)
			got := make(chan error, 1)
			go func() { got <- b.Flock(ctx, f, 1, syscall.F_WRLCK, true) }()
			select {
			case err := <-got:
				t.Fatalf("blocking flock returned %v while a holds the lock", err)
			case <-time.After(100 * time.Millisecond):
			}
			ok(t, a.Flock(ctx, f, 1, syscall.F_UNLCK, false))
			select {
			case err := <-got:
				ok(t, err)
			case <-time.After(20 * time.Second):
				t.Fatal("blocking flock not granted 20 s after the unlock")
			}
			wantErrno(t, a.Flock(ctx, f, 2, syscall.F_RDLCK, false), syscall.EAGAIN)

			// fcntl ranges: the same owner number in two clients is two owners.
			ok(t, a.SetLk(ctx, f, 7, false, Plock{Type: syscall.F_WRLCK, Start: 0, End: 99, Pid: 1}))
			ok(t, b.SetLk(ctx, f, 7, false, Plock{Type: syscall.F_RDLCK, Start: 100, End: 199, Pid: 2}))
			wantErrno(t, b.SetLk(ctx, f, 7, false, Plock{Type: syscall.F_RDLCK, Start: 99, End: 100}), syscall.EAGAIN)
			lk := Plock{Type: syscall.F_WRLCK, Start: 150, End: 150}
			ok(t, a.GetLk(ctx, f, 7, &lk))
			if lk.Type != syscall.F_RDLCK || lk.Pid != 2 {
				t.Fatalf("a's getlk %+v", lk)
			}

			// Open in a, unlink in b: the file stays until a releases it.
			_, err = a.Open(ctx, f, 0)
			ok(t, err)
			ok(t, b.Unlink(ctx, RootIno, "g"))
			if at := must[Attr](t)(b.GetAttr(ctx, f)); at.Nlink != 0 {
				t.Fatalf("open-unlinked nlink %d", at.Nlink)
			}
			checkClean(t, b)
			ok(t, a.Release(ctx, f))
			_, err = b.GetAttr(ctx, f)
			wantErrno(t, err, syscall.ENOENT)
			checkClean(t, a)
		})
	}
}

// 16 goroutines over two clients create, rename and unlink in one
// directory; the result holds exactly what each goroutine left behind.
func TestConcurrentNamespace(t *testing.T) {
	for _, ec := range multiEngines() {
		t.Run(ec.name, func(t *testing.T) {
			ctx := context.Background()
			vol := ec.newVolume(t)
			clients := []*Client{vol(t), vol(t)}
			d, _, err := clients[0].Mkdir(ctx, RootIno, "d", 0o755, 0, 0)
			ok(t, err)
			const workers, ops = 16, 40
			var wg sync.WaitGroup
			left := make([][]string, workers)
			errs := make(chan error, workers)
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c := clients[w%2]
					rng := rand.New(rand.NewPCG(uint64(w), 1))
					var mine []string
					for i := range ops {
						switch op := rng.IntN(4); {
						case op < 2 || len(mine) == 0:
							name := fmt.Sprintf("w%d-%d", w, i)
							if _, _, err := c.Mknod(ctx, d, name, 0o644, 0, 0, 0); err != nil {
								errs <- err
								return
							}
							mine = append(mine, name)
						case op == 2:
							j := rng.IntN(len(mine))
							to := mine[j] + "r"
							if err := c.Rename(ctx, d, mine[j], d, to, 0); err != nil {
								errs <- err
								return
							}
							mine[j] = to
						default:
							j := rng.IntN(len(mine))
							if err := c.Unlink(ctx, d, mine[j]); err != nil {
								errs <- err
								return
							}
							mine = slices.Delete(mine, j, j+1)
						}
					}
					left[w] = mine
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			var want []string
			for _, m := range left {
				want = append(want, m...)
			}
			sort.Strings(want)
			var got []string
			for _, e := range must[[]Entry](t)(clients[1].Readdir(ctx, d, "", 0)) {
				got = append(got, e.Name)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("directory holds %d names, the workers left %d:\n%q\n%q", len(got), len(want), got, want)
			}
			if da := must[Attr](t)(clients[0].GetAttr(ctx, d)); da.Nlink != 2 {
				t.Fatalf("dir nlink %d", da.Nlink)
			}
			checkClean(t, clients[0])
		})
	}
}

// A client that dies with a file open (and unlinked) and locks held: once
// its session is stale, another client reclaims all of it.
func TestAbandonedSession(t *testing.T) {
	for _, ec := range multiEngines() {
		t.Run(ec.name, func(t *testing.T) {
			ctx := context.Background()
			vol := ec.newVolume(t)
			dead, live := vol(t), vol(t)
			ok(t, dead.NewSession(ctx, "/mnt/dead"))
			ok(t, live.NewSession(ctx, "/mnt/live"))
			f, _, err := dead.Mknod(ctx, RootIno, "f", 0o644, 0, 0, 0)
			ok(t, err)
			id := must[uint64](t)(dead.NewSliceID(ctx))
			ok(t, dead.WriteChunk(ctx, f, 0, Slice{ID: id, Size: 4096, Len: 4096}, time.Now()))
			_, err = dead.Open(ctx, f, 0)
			ok(t, err)
			ok(t, dead.Flock(ctx, f, 1, syscall.F_WRLCK, false))
			ok(t, dead.SetLk(ctx, f, 1, false, Plock{Type: syscall.F_WRLCK, Start: 0, End: 10}))
			ok(t, dead.Unlink(ctx, RootIno, "f"))
			deadID := dead.SessionID()
			dead.StopHeartbeat() // it dies

			// While the session is fresh nothing is reclaimed; the file is kept.
			ok(t, live.SetLk(ctx, RootIno, 1, false, Plock{Type: syscall.F_RDLCK, Start: 0, End: 0}))
			wantErrno(t, live.Flock(ctx, f, 1, syscall.F_RDLCK, false), syscall.EAGAIN)
			checkClean(t, live)

			// The live client's own sweep (every SessionTimeout) or an
			// explicit one reclaims it.
			eventually(t, "stale session reclaimed", func() bool {
				_, err := live.CleanStaleSessions(ctx)
				ok(t, err)
				for _, s := range must[[]Session](t)(live.ListSessions(ctx)) {
					if s.ID == deadID {
						return false
					}
				}
				return true
			})
			_, err = live.GetAttr(ctx, f)
			wantErrno(t, err, syscall.ENOENT)
			if p := pendingIDs(t, live); !p[id] {
				t.Fatalf("the dead client's file data is not pending deletion: %v", p)
			}
			checkClean(t, live)
		})
	}
}

// One client creates in a directory while another removes it. Under
// snapshot isolation (tikv, etcd's key compares) a create that leaves the
// directory's attributes alone (DirMtimeSkip) shares no written key with the
// rmdir, so both may commit; neither may leave the entry orphaned in a
// removed directory. The outcomes: the rmdir finds the file (ENOTEMPTY), the
// create finds the directory gone (ENOENT), or both succeed and the rmdir
// sweeps the file away, as if it had been unlinked in between.
func TestCreateRacingRmdir(t *testing.T) {
	for _, ec := range multiEngines() {
		t.Run(ec.name, func(t *testing.T) {
			ctx := context.Background()
			vol := ec.newVolume(t)
			a, b := vol(t), vol(t)
			// Every create within the hour after the directory's mkdir
			// skips its mtime update: the path the race needs.
			b.opt.DirMtimeSkip = time.Hour
			const rounds = 150
			var outcomes [3]int // rmdir refused, create refused, file swept
			for i := range rounds {
				name := fmt.Sprintf("d%d", i)
				d, _, err := a.Mkdir(ctx, RootIno, name, 0o755, 0, 0)
				ok(t, err)
				var wg sync.WaitGroup
				var f Ino
				var createErr, rmdirErr error
				wg.Add(2)
				go func() { defer wg.Done(); f, _, createErr = b.Mknod(ctx, d, "f", 0o644, 0, 0, 0) }()
				go func() { defer wg.Done(); rmdirErr = a.Rmdir(ctx, RootIno, name) }()
				wg.Wait()
				outcomes[raceOutcome(t, a, fmt.Sprintf("round %d", i), d, f, createErr, rmdirErr)]++
				checkClean(t, a)
			}
			t.Logf("rmdir refused %d, create refused %d, file swept %d", outcomes[0], outcomes[1], outcomes[2])
		})
	}
}

// raceOutcome checks how a create of f ("f" in directory d) racing the
// directory's rmdir ended and returns which of the allowed outcomes it was:
// 0 rmdir refused (the file is there), 1 create refused, 2 both succeeded
// and the file was swept with the directory.
func raceOutcome(t *testing.T, a *Client, what string, d, f Ino, createErr, rmdirErr error) int {
	t.Helper()
	ctx := context.Background()
	switch {
	case createErr == nil && rmdirErr != nil:
		wantErrno(t, rmdirErr, syscall.ENOTEMPTY)
		if got := must[Ino](t)(lookupIno(ctx, a, d, "f")); got != f {
			t.Fatalf("%s: rmdir refused, but the file is not there", what)
		}
		return 0
	case createErr != nil && rmdirErr == nil:
		wantErrno(t, createErr, syscall.ENOENT)
		return 1
	case createErr == nil && rmdirErr == nil:
		if _, err := a.GetAttr(ctx, f); !errors.Is(err, syscall.ENOENT) {
			t.Fatalf("%s: the file created in the removed directory is still there: %v", what, err)
		}
		return 2
	default:
		t.Fatalf("%s: both failed: create %v, rmdir %v", what, createErr, rmdirErr)
		return -1
	}
}

func lookupIno(ctx context.Context, c *Client, dir Ino, name string) (Ino, error) {
	ino, _, err := c.Lookup(ctx, dir, name)
	return ino, err
}

// As TestCreateRacingRmdir with several creates of one client at once, each
// in its own directory, whose confirming reads that client batches (see
// dirConfirms): every create must still learn whether its own directory was
// removed.
func TestCreatesRacingRmdirs(t *testing.T) {
	for _, ec := range multiEngines() {
		t.Run(ec.name, func(t *testing.T) {
			ctx := context.Background()
			vol := ec.newVolume(t)
			a, b := vol(t), vol(t)
			b.opt.DirMtimeSkip = time.Hour
			const rounds, dirs = 30, 6
			var outcomes [3]int // as in TestCreateRacingRmdir
			for i := range rounds {
				var wg sync.WaitGroup
				var (
					d                   [dirs]Ino
					f                   [dirs]Ino
					createErr, rmdirErr [dirs]error
				)
				for j := range dirs {
					var err error
					d[j], _, err = a.Mkdir(ctx, RootIno, fmt.Sprintf("d%d-%d", i, j), 0o755, 0, 0)
					ok(t, err)
				}
				for j := range dirs {
					wg.Add(2)
					go func() { defer wg.Done(); f[j], _, createErr[j] = b.Mknod(ctx, d[j], "f", 0o644, 0, 0, 0) }()
					// Only every other directory is removed: the batches
					// mix live and removed ones.
					go func() {
						defer wg.Done()
						if j%2 == 0 {
							rmdirErr[j] = a.Rmdir(ctx, RootIno, fmt.Sprintf("d%d-%d", i, j))
						}
					}()
				}
				wg.Wait()
				for j := range dirs {
					switch {
					case j%2 == 1:
						ok(t, createErr[j])
						if got := must[Ino](t)(lookupIno(ctx, a, d[j], "f")); got != f[j] {
							t.Fatalf("round %d: the file created in the kept directory %d is not there", i, j)
						}
					default:
						outcomes[raceOutcome(t, a, fmt.Sprintf("round %d, directory %d", i, j), d[j], f[j], createErr[j], rmdirErr[j])]++
					}
				}
				checkClean(t, a)
			}
			t.Logf("rmdir refused %d, create refused %d, file swept %d", outcomes[0], outcomes[1], outcomes[2])
		})
	}
}
