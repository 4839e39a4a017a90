package storage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"podfs.io/podfs/internal/testenv"
)

// crashHelperArg makes the test binary run crashHelper instead of the
// tests: a process the crash tests kill with SIGKILL.
const crashHelperArg = "journal-crash-helper"

// crashHelper writes to the journaled store in dir and prints what it did,
// each line only after the store acknowledged it; it runs until killed.
func crashHelper(mode, dir string) int {
	ctx := context.Background()
	f, err := NewFile(dir, FileOptions{Fsync: true, JournalSegment: minJournalSegment})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	switch mode {
	case "put":
		var mu sync.Mutex
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 1_000_000 {
					k := fmt.Sprintf("g%d/%06d", g, i)
					if err := f.Put(ctx, k, objectFor(k)); err != nil {
						fmt.Fprintln(os.Stderr, err)
						os.Exit(1)
					}
					mu.Lock()
					fmt.Printf("ok %s\n", k)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
	case "retire-quiet", "retire-busy", "delete-before-retire":
		retireHelper(ctx, f, mode == "retire-busy", mode == "delete-before-retire")
	case "delete":
		for i := range 40 {
			k := fmt.Sprintf("d/%d", i)
			if err := f.Put(ctx, k, objectFor(k)); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		}
		for i := range 20 {
			if err := f.Delete(ctx, fmt.Sprintf("d/%d", i)); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		}
		fmt.Println("deleted")
	default:
		fmt.Fprintln(os.Stderr, "unknown mode", mode)
		return 1
	}
	select {} // until killed
}

// waitOutput polls the helper's output until ok says it has enough.
func waitOutput(t *testing.T, p *testenv.Process, ok func(string) bool) {
	t.Helper()
	poll(t, func() (bool, string) {
		out := p.Output()
		if p.Exited() && !ok(out) {
			t.Fatalf("helper exited early:\n%s", out)
		}
		return ok(out), fmt.Sprintf("helper did not get far enough:\n%.2000s", out)
	})
}

// A process killed while putting from several goroutines loses nothing it
// acknowledged, and leaves nothing half-written visible.
func TestJournalCrash(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	replayed := 0
	for round := range 3 {
		p := testenv.Start(t, "journal crash helper", os.Args[0], crashHelperArg, "put", dir)
		// A different moment each round: more and more acknowledged Puts.
		want := 150 * (round + 1)
		waitOutput(t, p, func(s string) bool { return strings.Count(s, "ok ") >= want })
		p.Kill()
		out := p.Output() // all it printed before it died
		var acked []string
		for _, line := range strings.Split(out, "\n") {
			if k, ok := strings.CutPrefix(line, "ok "); ok && strings.Count(k, "/") == 1 && len(k) == len("g0/000000") {
				acked = append(acked, k)
			}
		}
		if len(acked) < want {
			t.Fatalf("round %d: %d acknowledged puts parsed, want %d", round, len(acked), want)
		}
		f := openJournaled(t, dir, minJournalSegment)
		for _, k := range acked {
			checkObject(t, f, k)
		}
		objs, err := f.List(ctx, "", "", 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range objs {
			checkObject(t, f, o.Key) // acknowledged or not: whole
		}
		if ents, _ := os.ReadDir(filepath.Join(dir, tmpPrefix)); len(ents) != 0 {
			t.Fatalf("temp files left after reopen: %d", len(ents))
		}
		t.Logf("round %d: %d acknowledged, %d objects, %d from the replayed journal", round, len(acked), len(objs), f.j.replayed)
		replayed += f.j.replayed
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if replayed == 0 {
		t.Fatal("no round found objects in the journal: the test did not exercise its replay")
	}
}

// A delete acknowledged before a crash stays done: the journal's replay
// does not bring back the object its earlier records hold.
func TestJournalDeleteCrash(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	p := testenv.Start(t, "journal delete helper", os.Args[0], crashHelperArg, "delete", dir)
	waitOutput(t, p, func(s string) bool { return strings.Contains(s, "deleted\n") })
	p.Kill()
	f := openJournaled(t, dir, minJournalSegment)
	defer f.Close()
	t.Logf("%d keys in the replayed journal", f.j.replayed)
	for i := range 40 {
		k := fmt.Sprintf("d/%d", i)
		if i >= 20 {
			checkObject(t, f, k)
			continue
		}
		if _, err := f.Head(ctx, k); !errors.Is(err, ErrNotFound) {
			t.Fatalf("deleted %s after crash: %v", k, err)
		}
	}
	spilled(t, f)
	for i := range 20 {
		if _, err := os.Stat(f.path(fmt.Sprintf("d/%d", i))); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("deleted object's file after crash and spill: %v", err)
		}
	}
}

// A Delete acknowledged while the spiller is about to retire the segment
// that held the object (its file written, the segment still intact) stays
// done after a crash: the replay of that segment does not bring it back.
func TestJournalDeleteBeforeRetireCrash(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	p := testenv.Start(t, "journal retire helper", os.Args[0], crashHelperArg, "delete-before-retire", dir)
	waitOutput(t, p, func(s string) bool { return strings.Contains(s, "retiring\n") })
	p.Kill()
	if !strings.Contains(p.Output(), "deleted q/0\n") {
		t.Fatalf("the helper did not delete q/0:\n%s", p.Output())
	}
	f := openJournaled(t, dir, minJournalSegment)
	defer f.Close()
	if _, err := f.Head(ctx, "q/0"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("q/0, deleted before the crash: %v, want not found", err)
	}
	for i := 1; i < 12; i++ {
		checkObject(t, f, fmt.Sprintf("q/%d", i))
	}
	spilled(t, f)
	if _, err := os.Stat(f.path("q/0")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("q/0's file after the crash and a spill: %v, want none", err)
	}
}

// A process killed while retiring a spilled segment, between the write
// that marks its records gone and the one that makes its header say
// retired, opens again with every acknowledged object: the half-retired
// segment is not mistaken for a damaged one. In "retire-quiet" it is the
// journal's last segment (sealed when the store went quiet), in
// "retire-busy" older than the one Puts still fill.
func TestJournalRetireCrash(t *testing.T) {
	for _, mode := range []string{"retire-quiet", "retire-busy"} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			p := testenv.Start(t, "journal retire helper", os.Args[0], crashHelperArg, mode, dir)
			waitOutput(t, p, func(s string) bool { return strings.Contains(s, "retiring\n") })
			p.Kill()
			var acked []string
			for _, line := range strings.Split(p.Output(), "\n") {
				if k, ok := strings.CutPrefix(line, "ok "); ok {
					acked = append(acked, k)
				}
			}
			if len(acked) == 0 {
				t.Fatal("the helper acknowledged no put")
			}
			f, err := NewFile(dir, FileOptions{Fsync: true, JournalSegment: minJournalSegment})
			if err != nil {
				t.Fatalf("reopen after a crash in the middle of retiring a segment: %v", err)
			}
			defer f.Close()
			for _, k := range acked {
				checkObject(t, f, k)
			}
			t.Logf("%d acknowledged objects intact, %d from the replayed journal", len(acked), f.j.replayed)
		})
	}
}

// retireHelper puts objects (sequentially and then waits for the journal
// to spill them, or from several goroutines without pause) and stops for
// good at the first retirement of a segment, between its two writes, and
// says so: the test kills it there. With del, it stops before the
// retirement's first write instead, after deleting the first object.
func retireHelper(ctx context.Context, f *File, busy, del bool) {
	var mu sync.Mutex
	f.j.mu.Lock()
	f.j.retireMark = func(step int) {
		if del && step == 0 {
			if err := f.Delete(ctx, "q/0"); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			mu.Lock()
			fmt.Println("deleted q/0")
		} else if del || step != 1 {
			return
		} else {
			mu.Lock()
		}
		fmt.Println("retiring")
		select {} // until killed
	}
	f.j.mu.Unlock()
	putOne := func(k string) {
		if err := f.Put(ctx, k, objectFor(k)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		mu.Lock()
		fmt.Printf("ok %s\n", k)
		mu.Unlock()
	}
	if !busy {
		for i := range 12 {
			putOne(fmt.Sprintf("q/%d", i))
		}
		return
	}
	for g := range 8 {
		go func() {
			for i := 0; ; i++ {
				putOne(fmt.Sprintf("g%d/%06d", g, i))
			}
		}()
	}
}
