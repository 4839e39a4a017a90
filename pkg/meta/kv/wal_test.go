package kv

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"podfs.io/podfs/internal/testenv"
)

// crashChildEnv makes the test binary a writer that the crash test kills
// (TestMain): its value is the database path.
const crashChildEnv = "PODFS_KV_CRASH_CHILD"

func TestMain(m *testing.M) {
	if path := os.Getenv(crashChildEnv); path != "" {
		crashChild(path)
		return
	}
	os.Exit(m.Run())
}

// crashChild commits transactions from 4 goroutines (or 1) until killed,
// printing each one's number once Update has returned (acknowledged). Transaction i
// writes a/i and b/i and bumps counter n; every 7th deletes a/(i-7) and
// b/(i-7) again. Small checkpoints make several happen during the run.
func crashChild(path string) {
	delay, _ := time.ParseDuration(os.Getenv(crashChildEnv + "_DELAY"))
	e, err := OpenBolt(path, BoltOptions{CheckpointBytes: 256 << 10, CheckpointAge: 50 * time.Millisecond,
		BufferedLog: os.Getenv(crashChildEnv+"_BUFFERED") != "", SyncDelay: delay})
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(2)
	}
	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	var seq atomic.Int64
	var wg sync.WaitGroup
	writers := 4
	if os.Getenv(crashChildEnv+"_ONE") != "" {
		writers = 1 // callers commit themselves (Update's idle path)
	}
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := seq.Add(1)
				err := Txn(context.Background(), e, func(tx Tx) error {
					tx.Set(fmt.Appendf(nil, "a/%09d", i), fmt.Appendf(nil, "%d", i))
					tx.Set(fmt.Appendf(nil, "b/%09d", i), make([]byte, 100))
					if i%7 == 0 {
						tx.Delete(fmt.Appendf(nil, "a/%09d", i-7))
						tx.Delete(fmt.Appendf(nil, "b/%09d", i-7))
					}
					v, err := tx.Get([]byte("n"))
					if err != nil {
						return err
					}
					tx.Set([]byte("n"), []byte(strconv.Itoa(atoi(v)+1)))
					return nil
				})
				if err != nil {
					fmt.Println("txn:", err)
					os.Exit(2)
				}
				mu.Lock()
				fmt.Fprintf(out, "ack %d\n", i)
				out.Flush()
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

// A writer killed with SIGKILL in mid-stream (checkpoints included) loses
// nothing it acknowledged, and no transaction is half applied. That holds
// with SyncDelay too: a commit is answered once its record is in the page
// cache, which outlives the process.
func TestBoltCrashRecovery(t *testing.T) {
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for round := range 6 {
		path := filepath.Join(t.TempDir(), "meta.db")
		t.Setenv(crashChildEnv, path)
		// Odd rounds write the log through the page cache; the first two
		// have one writer, as does the last. The last two sync lazily, the
		// very last only when a segment fills.
		t.Setenv(crashChildEnv+"_BUFFERED", strings.Repeat("1", round%2))
		t.Setenv(crashChildEnv+"_ONE", strings.Repeat("1", 1-min(round/2, 1)+round/5))
		t.Setenv(crashChildEnv+"_DELAY", [...]string{"", "", "", "", "2ms", "1h"}[round])
		p := testenv.Start(t, "writer", bin, "-test.run=^$")
		acked := waitAcks(t, p, 2000+(round%4)*2000)
		p.Kill()
		acked = parseAcks(p.Output()) // every ack printed before the kill
		t.Setenv(crashChildEnv, "")

		e, err := OpenBolt(path, BoltOptions{})
		if err != nil {
			t.Fatalf("round %d: reopen after kill: %v", round, err)
		}
		var committed int
		err = e.View(context.Background(), func(tx Tx) error {
			v, _ := tx.Get([]byte("n"))
			committed = atoi(v)
			have := map[int64]bool{}
			var nb int
			if err := tx.Scan([]byte("b/"), []byte("b0"), 0, func(k, _ []byte) bool {
				nb++
				i, _ := strconv.ParseInt(string(k[2:]), 10, 64)
				have[i] = true
				return true
			}); err != nil {
				return err
			}
			na := 0
			if err := tx.Scan([]byte("a/"), []byte("a0"), 0, func(k, v []byte) bool {
				na++
				i, _ := strconv.ParseInt(string(k[2:]), 10, 64)
				if string(v) != strconv.FormatInt(i, 10) || !have[i] {
					t.Errorf("a/%d = %q without its b/ key: half a transaction", i, v)
				}
				return true
			}); err != nil {
				return err
			}
			if na != nb {
				t.Errorf("%d a/ keys, %d b/ keys: half a transaction", na, nb)
			}
			for i := range acked {
				// Multiples of 7 may have been deleted by transaction i+7.
				if i%7 != 0 && !have[i] {
					t.Errorf("acknowledged transaction %d lost", i)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if committed < len(acked) {
			t.Errorf("counter %d < %d acknowledged transactions", committed, len(acked))
		}
		t.Logf("round %d: %d acknowledged, %d committed at the kill", round, len(acked), committed)
		if err := e.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func waitAcks(t *testing.T, p *testenv.Process, n int) map[int64]bool {
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		if p.Exited() {
			t.Fatalf("writer exited early: %s", p.Output())
		}
		if a := parseAcks(p.Output()); len(a) >= n {
			return a
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("writer acknowledged fewer than %d transactions in 2 minutes", n)
	return nil
}

func parseAcks(out string) map[int64]bool {
	acks := map[int64]bool{}
	lines := strings.Split(out, "\n")
	for _, l := range lines[:len(lines)-1] { // the last is unfinished
		if s, ok := strings.CutPrefix(l, "ack "); ok {
			if i, err := strconv.ParseInt(s, 10, 64); err == nil {
				acks[i] = true
			}
		}
	}
	return acks
}

// copyFiles copies the database and its log (a crash image: no checkpoint
// may run meanwhile) into a new directory and returns the new db path.
func copyFiles(t *testing.T, path string) string {
	dst := filepath.Join(t.TempDir(), "copy.db")
	matches, _ := filepath.Glob(path + ".wal.*")
	for _, m := range append(matches, path) {
		if strings.Contains(m, "spare") {
			continue // not part of the state
		}
		in, err := os.Open(m)
		if err != nil {
			t.Fatal(err)
		}
		out, err := os.Create(dst + strings.TrimPrefix(m, path))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(out, in); err != nil {
			t.Fatal(err)
		}
		in.Close()
		out.Close()
	}
	return dst
}

func setKeys(t *testing.T, e Engine, from, to int) {
	for i := from; i < to; i++ {
		if err := Txn(context.Background(), e, func(tx Tx) error {
			tx.Set(fmt.Appendf(nil, "k%04d", i), fmt.Appendf(nil, "v%d", i))
			tx.Set(fmt.Appendf(nil, "m%04d", i), []byte("x"))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
}

func countKeys(t *testing.T, e Engine, prefix string) int {
	n := 0
	if err := e.View(context.Background(), func(tx Tx) error {
		return tx.Scan([]byte(prefix), PrefixEnd([]byte(prefix)), 0, func(k, v []byte) bool {
			n++
			return true
		})
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// A record torn by a crash (cut short, or with a bad checksum) ends the log:
// the transactions before it are recovered, it is not.
func TestBoltTornTail(t *testing.T) {
	for _, damage := range []string{"cut", "flip"} {
		t.Run(damage, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "meta.db")
			e, err := OpenBolt(path, BoltOptions{CheckpointBytes: 1 << 30, CheckpointAge: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			setKeys(t, e, 0, 10)
			seg, lastLen := e.seg, len(e.rec) // the last record's size
			cp := copyFiles(t, path)
			f, err := os.OpenFile(walName(cp, seg.seq), os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			if damage == "cut" {
				err = f.Truncate(seg.off - 3)
			} else {
				_, err = f.WriteAt([]byte{0xee}, seg.off-int64(lastLen)+walHeader+2)
			}
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
			c, err := OpenBolt(cp, BoltOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if n := countKeys(t, c, "k"); n != 9 {
				t.Fatalf("%d keys recovered, want the 9 before the torn record", n)
			}
			if n := countKeys(t, c, "m"); n != 9 {
				t.Fatalf("%d m keys recovered, want 9", n)
			}
		})
	}
}

// A damaged record followed by a later segment means acknowledged writes
// are gone: opening refuses, saying what to do.
func TestBoltDamagedLogRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meta.db")
	e, err := OpenBolt(path, BoltOptions{CheckpointBytes: 1 << 30, CheckpointAge: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	setKeys(t, e, 0, 3)
	seg := e.seg
	cp := copyFiles(t, path)
	rec := appendOp(make([]byte, walHeader), "late", []byte("x"))
	sealRecord(rec, seg.seq+1)
	if err := os.WriteFile(walName(cp, seg.seq+1), rec, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = OpenBolt(cp, BoltOptions{})
	if err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("open with an unsealed segment before a later one: %v", err)
	}
}

// Close checkpoints everything and leaves no log behind; reopening finds
// every write, deletes included.
func TestBoltReopenAfterClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meta.db")
	for round := range 3 {
		e, err := OpenBolt(path, BoltOptions{CheckpointBytes: 4 << 10})
		if err != nil {
			t.Fatal(err)
		}
		if n := countKeys(t, e, "k"); n != round*100 {
			t.Fatalf("round %d: %d keys after reopen, want %d", round, n, round*100)
		}
		setKeys(t, e, round*100, round*100+150)
		for i := round*100 + 100; i < round*100+150; i++ {
			if err := Txn(context.Background(), e, func(tx Tx) error {
				tx.Delete(fmt.Appendf(nil, "k%04d", i))
				return nil
			}); err != nil {
				t.Fatal(err)
			}
		}
		if err := e.Close(); err != nil {
			t.Fatal(err)
		}
		if segs, _ := walSegments(path); len(segs) != 0 {
			t.Fatalf("log segments left after close: %v", segs)
		}
	}
}

// Readers and scans running while checkpoints move layers into the bolt
// file always see a consistent snapshot: transfers between 50 accounts keep
// the sum, and moving keys between two ranges keeps the count.
func TestBoltCheckpointSnapshots(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meta.db")
	e, err := OpenBolt(path, BoltOptions{NoSync: true, CheckpointBytes: 8 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx := context.Background()
	const accounts = 50
	if err := Txn(ctx, e, func(tx Tx) error {
		for i := range accounts {
			tx.Set(fmt.Appendf(nil, "acct%02d", i), []byte("100"))
			tx.Set(fmt.Appendf(nil, "x%02d", i), []byte("o"))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var writers, readers sync.WaitGroup
	for w := range 3 {
		writers.Add(1)
		go func() {
			defer writers.Done()
			for j := 0; j < 600; j++ {
				a, b := (j*7+w)%accounts, (j*13+w*5+1)%accounts
				err := Txn(ctx, e, func(tx Tx) error {
					va, _ := tx.Get(fmt.Appendf(nil, "acct%02d", a))
					vb, _ := tx.Get(fmt.Appendf(nil, "acct%02d", b))
					tx.Set(fmt.Appendf(nil, "acct%02d", a), []byte(strconv.Itoa(atoi(va)-3)))
					tx.Set(fmt.Appendf(nil, "acct%02d", b), []byte(strconv.Itoa(atoi(vb)+3)))
					// Move key a between x and y.
					xk, yk := fmt.Appendf(nil, "x%02d", a), fmt.Appendf(nil, "y%02d", a)
					if v, _ := tx.Get(xk); v != nil {
						tx.Delete(xk)
						tx.Set(yk, v)
					} else {
						v, _ := tx.Get(yk)
						tx.Delete(yk)
						tx.Set(xk, v)
					}
					return nil
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	var views atomic.Int64
	for range 3 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				err := e.View(ctx, func(tx Tx) error {
					sum, n := 0, 0
					if err := tx.Scan([]byte("acct"), []byte("acct~"), 0, func(_, v []byte) bool {
						sum += atoi(v)
						n++
						return true
					}); err != nil {
						return err
					}
					if sum != accounts*100 || n != accounts {
						return fmt.Errorf("snapshot sees %d accounts summing to %d", n, sum)
					}
					moved := 0
					if err := tx.Scan([]byte("x"), []byte("z"), 0, func(_, v []byte) bool {
						moved++
						return true
					}); err != nil {
						return err
					}
					if moved != accounts {
						return fmt.Errorf("snapshot sees %d keys in x..z, want %d", moved, accounts)
					}
					return nil
				})
				if err != nil {
					t.Error(err)
					return
				}
				views.Add(1)
			}
		}()
	}
	writers.Wait()
	close(stop)
	readers.Wait()
	if e.ckptStarted.Load() < 3 {
		t.Fatalf("only %d checkpoints ran: the test did not exercise them", e.ckptStarted.Load())
	}
	t.Logf("%d checkpoints, %d consistent views", e.ckptStarted.Load(), views.Load())
}

// A write waits at most CheckpointAge for its checkpoint even when no more
// writes come.
func TestBoltCheckpointByAge(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meta.db")
	e, err := OpenBolt(path, BoltOptions{CheckpointAge: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	setKeys(t, e, 0, 5)
	deadline := time.Now().Add(30 * time.Second)
	for e.ckptStarted.Load() == 0 || e.state.Load().frozen != nil {
		if time.Now().After(deadline) {
			t.Fatal("no checkpoint 30 s after the last write")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := countKeys(t, e, "k"); n != 5 {
		t.Fatalf("%d keys after the checkpoint, want 5", n)
	}
}

// After Close every call fails with ErrClosed and Close may run again.
func TestBoltUseAfterClose(t *testing.T) {
	e, err := OpenBolt(filepath.Join(t.TempDir(), "meta.db"), BoltOptions{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	setKeys(t, e, 0, 3)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := e.Update(ctx, func(tx Tx) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Fatalf("update after close: %v", err)
	}
	if err := e.View(ctx, func(tx Tx) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Fatalf("view after close: %v", err)
	}
	if err := e.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
}
