package fs

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"podfs.io/podfs/pkg/meta"
)

// onBoth runs the same operations in a podfs directory and in a local
// directory (the oracle) and checks they leave equal trees.
func onBoth(t *testing.T, mp string, ops func(t *testing.T, dir string)) {
	t.Helper()
	local := t.TempDir()
	remote := filepath.Join(mp, t.Name())
	if err := os.MkdirAll(remote, 0o755); err != nil {
		t.Fatal(err)
	}
	ops(t, local)
	ops(t, remote)
	compareTrees(t, local, remote)
}

// compareTrees checks names, types, sizes, modes and contents.
func compareTrees(t *testing.T, want, got string) {
	t.Helper()
	walk := func(root string) map[string]string {
		m := map[string]string{}
		err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, p)
			desc := fmt.Sprintf("%v size=%d", fi.Mode(), fi.Size())
			if fi.IsDir() {
				desc = fmt.Sprintf("%v", fi.Mode())
			}
			switch {
			case fi.Mode().IsRegular():
				b, err := os.ReadFile(p)
				if err != nil {
					return err
				}
				desc += fmt.Sprintf(" data=%x", sha(b))
			case fi.Mode()&os.ModeSymlink != 0:
				l, _ := os.Readlink(p)
				desc += " -> " + l
			}
			m[rel] = desc
			return nil
		})
		if err != nil {
			t.Fatalf("walk %s: %v", root, err)
		}
		return m
	}
	w, g := walk(want), walk(got)
	var names []string
	for n := range w {
		names = append(names, n)
	}
	for n := range g {
		if _, ok := w[n]; !ok {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		if n == "." {
			continue
		}
		if w[n] != g[n] {
			t.Errorf("%s: local %q, podfs %q", n, w[n], g[n])
		}
	}
}

func sha(b []byte) []byte {
	h := sha256.Sum256(b)
	return h[:8]
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func TestPOSIX(t *testing.T) {
	v := newBoltVolume(t)
	_, mp := mountVolume(t, v)

	t.Run("ReadWriteSeekAppendTrunc", func(t *testing.T) {
		payload := randBytes(3*testBlockSize + 12345)
		onBoth(t, mp, func(t *testing.T, dir string) {
			p := filepath.Join(dir, "f")
			mustWrite(t, p, payload)
			f, err := os.OpenFile(p, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			// overwrite in the middle, across a block boundary
			if _, err := f.WriteAt([]byte("overwritten across a block boundary"), testBlockSize-10); err != nil {
				t.Fatal(err)
			}
			if _, err := f.Seek(100, io.SeekStart); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, 50)
			if _, err := io.ReadFull(f, got); err != nil || !bytes.Equal(got, payload[100:150]) {
				t.Fatalf("read after seek: %v, %x", err, got[:8])
			}
			f.Close()
			// append
			a, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			a.Write([]byte("appended"))
			a.Close()
			// O_TRUNC
			q := filepath.Join(dir, "truncated")
			mustWrite(t, q, payload[:5000])
			mustWrite(t, q, []byte("short"))
			// truncate down and up
			r := filepath.Join(dir, "resized")
			mustWrite(t, r, payload[:2*testBlockSize])
			if err := os.Truncate(r, 1000); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(r, 3000); err != nil {
				t.Fatal(err)
			}
			// sparse: a write far beyond the end leaves a hole of zeros
			s, err := os.Create(filepath.Join(dir, "sparse"))
			if err != nil {
				t.Fatal(err)
			}
			s.WriteAt([]byte("end"), 5*testBlockSize+7)
			s.Close()
		})
		sp := mustRead(t, filepath.Join(mp, t.Name(), "sparse"))
		if len(sp) != 5*testBlockSize+10 || !bytes.Equal(sp[:5*testBlockSize], make([]byte, 5*testBlockSize)) {
			t.Errorf("sparse file: %d bytes, hole not zero", len(sp))
		}
	})

	t.Run("LargerThanTwoChunks", func(t *testing.T) {
		local := filepath.Join(t.TempDir(), "big")
		remote := filepath.Join(mp, "big")
		size := 2*meta.ChunkSize + 3*testBlockSize + 777
		for _, p := range []string{local, remote} {
			f, err := os.Create(p)
			if err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 1<<20)
			for off := 0; off < size; off += len(buf) {
				for i := range buf {
					buf[i] = byte(off>>20) ^ byte(i*7)
				}
				if _, err := f.Write(buf[:min(len(buf), size-off)]); err != nil {
					t.Fatal(err)
				}
			}
			// rewrite a range straddling the first chunk boundary
			if _, err := f.WriteAt(bytes.Repeat([]byte{0xAB}, 3<<20), meta.ChunkSize-(1<<20)); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
		}
		st, err := os.Stat(remote)
		if err != nil || st.Size() != int64(size) {
			t.Fatalf("stat: %v size %d want %d", err, st.Size(), size)
		}
		sameFile(t, local, remote)
		os.Remove(remote)
	})

	t.Run("Rename", func(t *testing.T) {
		onBoth(t, mp, func(t *testing.T, dir string) {
			p := func(n string) string { return filepath.Join(dir, n) }
			mustWrite(t, p("a"), []byte("A"))
			mustWrite(t, p("b"), []byte("B"))
			if err := os.Rename(p("a"), p("b")); err != nil { // over a file
				t.Fatal(err)
			}
			os.Mkdir(p("d1"), 0o755)
			os.Mkdir(p("d2"), 0o755)
			mustWrite(t, p("d1/x"), []byte("x"))
			if err := syscall.Rename(p("d1"), p("d2")); err != nil { // over an empty directory (os.Rename refuses)
				t.Fatal(err)
			}
			os.Mkdir(p("d3"), 0o755)
			mustWrite(t, p("d3/y"), []byte("y"))
			if err := syscall.Rename(p("d2"), p("d3")); !errors.Is(err, syscall.ENOTEMPTY) && !errors.Is(err, syscall.EEXIST) {
				t.Fatalf("rename over a non-empty directory: %v", err)
			}
			mustWrite(t, p("c"), []byte("C"))
			if err := unix.Renameat2(unix.AT_FDCWD, p("c"), unix.AT_FDCWD, p("b"), unix.RENAME_NOREPLACE); !errors.Is(err, syscall.EEXIST) {
				t.Fatalf("RENAME_NOREPLACE over an existing file: %v", err)
			}
			if err := unix.Renameat2(unix.AT_FDCWD, p("c"), unix.AT_FDCWD, p("d3"), unix.RENAME_EXCHANGE); err != nil {
				t.Fatalf("RENAME_EXCHANGE: %v", err)
			}
			if err := os.Rename(p("d2/x"), p("moved")); err != nil { // across directories
				t.Fatal(err)
			}
		})
	})

	t.Run("LinksAndSymlinks", func(t *testing.T) {
		onBoth(t, mp, func(t *testing.T, dir string) {
			p := func(n string) string { return filepath.Join(dir, n) }
			mustWrite(t, p("orig"), []byte("data"))
			if err := os.Link(p("orig"), p("hard")); err != nil {
				t.Fatal(err)
			}
			var st syscall.Stat_t
			if err := syscall.Stat(p("hard"), &st); err != nil || st.Nlink != 2 {
				t.Fatalf("hard link nlink %d: %v", st.Nlink, err)
			}
			os.Remove(p("orig"))
			if string(mustRead(t, p("hard"))) != "data" {
				t.Fatal("hard link lost its data when the original name was removed")
			}
			if err := os.Symlink("hard", p("sym")); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink("/nowhere/dangling", p("dangling")); err != nil {
				t.Fatal(err)
			}
			if string(mustRead(t, p("sym"))) != "data" {
				t.Fatal("read through symlink")
			}
		})
	})

	t.Run("ChmodChownUtimes", func(t *testing.T) {
		p := filepath.Join(mp, "attrs")
		mustWrite(t, p, []byte("x"))
		if err := os.Chmod(p, 0o640); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, 1234, 5678); err != nil {
			t.Fatal(err)
		}
		mt := time.Date(2020, 1, 2, 3, 4, 5, 600, time.UTC)
		at := time.Date(2021, 6, 7, 8, 9, 10, 0, time.UTC)
		if err := os.Chtimes(p, at, mt); err != nil {
			t.Fatal(err)
		}
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		if st.Mode&0o7777 != 0o640 || st.Uid != 1234 || st.Gid != 5678 {
			t.Errorf("mode %o uid %d gid %d, want 640 1234 5678", st.Mode&0o7777, st.Uid, st.Gid)
		}
		if got := time.Unix(st.Mtim.Unix()); !got.Equal(mt) {
			t.Errorf("mtime %v, want %v", got, mt)
		}
		if got := time.Unix(st.Atim.Unix()); !got.Equal(at) {
			t.Errorf("atime %v, want %v", got, at)
		}
	})

	t.Run("Xattrs", func(t *testing.T) {
		p := filepath.Join(mp, "xattrs")
		mustWrite(t, p, []byte("x"))
		buf := make([]byte, 256)
		// No SELinux labels: EOPNOTSUPP makes ls -l stop asking each file.
		if _, err := unix.Getxattr(p, "security.selinux", buf); !errors.Is(err, unix.EOPNOTSUPP) {
			t.Fatalf("getxattr security.selinux: %v, want EOPNOTSUPP", err)
		}
		if _, err := unix.Getxattr(p, "system.posix_acl_access", buf); !errors.Is(err, unix.ENODATA) {
			t.Fatalf("getxattr system.posix_acl_access on a fresh volume: %v, want ENODATA", err)
		}
		if err := unix.Setxattr(p, "user.color", []byte("blue"), 0); err != nil {
			t.Fatal(err)
		}
		if err := unix.Setxattr(p, "user.color", []byte("red"), unix.XATTR_CREATE); !errors.Is(err, unix.EEXIST) {
			t.Fatalf("XATTR_CREATE over existing: %v", err)
		}
		n, err := unix.Getxattr(p, "user.color", buf)
		if err != nil || string(buf[:n]) != "blue" {
			t.Fatalf("getxattr: %q %v", buf[:n], err)
		}
		if _, err := unix.Getxattr(p, "user.color", make([]byte, 1)); !errors.Is(err, unix.ERANGE) {
			t.Fatalf("getxattr into a small buffer: %v, want ERANGE", err)
		}
		if err := unix.Setxattr(p, "security.test", []byte("label"), 0); err != nil {
			t.Fatal(err)
		}
		n, err = unix.Getxattr(p, "security.test", buf)
		if err != nil || string(buf[:n]) != "label" {
			t.Fatalf("security xattr after it was set: %q %v", buf[:n], err)
		}
		n, err = unix.Listxattr(p, buf)
		if err != nil {
			t.Fatal(err)
		}
		names := bytes.Split(bytes.TrimRight(buf[:n], "\x00"), []byte{0})
		if len(names) != 2 {
			t.Errorf("listxattr: %q, want user.color and security.test", buf[:n])
		}
		if n, _ := unix.Listxattr(mp, buf); bytes.Contains(buf[:n], []byte(secMarker)) {
			t.Errorf("the volume's marker shows in listxattr of the root: %q", buf[:n])
		}
		if err := unix.Removexattr(p, "user.color"); err != nil {
			t.Fatal(err)
		}
		if _, err := unix.Getxattr(p, "user.color", buf); !errors.Is(err, unix.ENODATA) {
			t.Fatalf("after removexattr: %v", err)
		}
	})

	t.Run("Mmap", func(t *testing.T) {
		p := filepath.Join(mp, "mmap")
		data := randBytes(3 * 4096)
		mustWrite(t, p, data)
		// A page fault on the mapping waits for a FUSE READ; in this
		// process, which serves the mount, a garbage collection starting
		// meanwhile would wait for the faulting thread and stop the server
		// that would answer it. So a child touches the mapping.
		bin, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "-test.run=^$")
		cmd.Env = append(os.Environ(), mmapChildEnv+"="+p)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("mmap child: %v\n%s", err, out)
		}
		copy(data[4000:], "written through mmap")
		if got := mustRead(t, p); !bytes.Equal(got, data) {
			t.Fatal("read(2) after an mmap write differs")
		}
	})

	t.Run("UnlinkWhileOpen", func(t *testing.T) {
		p := filepath.Join(mp, "unlinked")
		data := randBytes(2*testBlockSize + 5)
		mustWrite(t, p, data)
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("stat after unlink: %v", err)
		}
		got := make([]byte, len(data))
		if _, err := f.ReadAt(got, 0); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read of an unlinked open file: %v", err)
		}
		if _, err := f.WriteAt([]byte("still writable"), 10); err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		var st syscall.Stat_t
		if err := syscall.Fstat(int(f.Fd()), &st); err != nil || st.Nlink != 0 {
			t.Fatalf("fstat of unlinked file: nlink %d, %v", st.Nlink, err)
		}
	})

	t.Run("Statfs", func(t *testing.T) {
		var st unix.Statfs_t
		if err := unix.Statfs(mp, &st); err != nil {
			t.Fatal(err)
		}
		if st.Bsize != 4096 || st.Blocks == 0 || st.Files == 0 || st.Namelen != 255 {
			t.Errorf("statfs: bsize %d blocks %d files %d namelen %d", st.Bsize, st.Blocks, st.Files, st.Namelen)
		}
	})

	t.Run("Fallocate", func(t *testing.T) {
		p := filepath.Join(mp, "falloc")
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := unix.Fallocate(int(f.Fd()), 0, 0, 3*testBlockSize); err != nil {
			t.Fatal(err)
		}
		if st, _ := f.Stat(); st.Size() != 3*testBlockSize {
			t.Fatalf("size after fallocate %d", st.Size())
		}
		got := make([]byte, 100)
		if _, err := f.ReadAt(got, testBlockSize); err != nil || !bytes.Equal(got, make([]byte, 100)) {
			t.Fatalf("fallocated range reads %v %x", err, got[:8])
		}
	})

	t.Run("CopyFileRange", func(t *testing.T) {
		src, dst := filepath.Join(mp, "cfr-src"), filepath.Join(mp, "cfr-dst")
		data := randBytes(2*testBlockSize + 100)
		mustWrite(t, src, data)
		in, err := os.Open(src)
		if err != nil {
			t.Fatal(err)
		}
		defer in.Close()
		out, err := os.Create(dst)
		if err != nil {
			t.Fatal(err)
		}
		defer out.Close()
		for done := 0; done < len(data); {
			n, err := unix.CopyFileRange(int(in.Fd()), nil, int(out.Fd()), nil, len(data)-done, 0)
			if err != nil {
				t.Fatal(err)
			}
			if n == 0 {
				t.Fatalf("copy_file_range stopped at %d of %d", done, len(data))
			}
			done += n
		}
		got := make([]byte, len(data))
		if _, err := out.ReadAt(got, 0); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read back the copy through the open destination: %v", err)
		}
		out.Close()
		if !bytes.Equal(mustRead(t, dst), data) {
			t.Fatal("copy differs")
		}
	})

	t.Run("Readdir10k", func(t *testing.T) {
		dir := filepath.Join(mp, "many")
		os.Mkdir(dir, 0o755)
		const n = 10000
		for i := range n {
			f, err := os.Create(filepath.Join(dir, fmt.Sprintf("f%05d", i)))
			if err != nil {
				t.Fatal(err)
			}
			f.Close()
		}
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != n {
			t.Fatalf("readdir: %d entries, want %d", len(entries), n)
		}
		for i, e := range entries {
			if want := fmt.Sprintf("f%05d", i); e.Name() != want || !e.Type().IsRegular() {
				t.Fatalf("entry %d: %s %v, want regular %s", i, e.Name(), e.Type(), want)
			}
		}
		// ls -l: every entry stat'ed after readdirplus
		for _, e := range entries[:100] {
			if _, err := e.Info(); err != nil {
				t.Fatal(err)
			}
		}
		// a directory listed in pages while it changes does not repeat names
		f, err := os.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		first, err := f.Readdirnames(10)
		if err != nil {
			t.Fatal(err)
		}
		os.Remove(filepath.Join(dir, first[0]))
		rest, err := f.Readdirnames(-1)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, name := range append(first, rest...) {
			if seen[name] {
				t.Fatalf("%s listed twice", name)
			}
			seen[name] = true
		}
		if len(seen) < n-1 {
			t.Fatalf("listed %d names, want at least %d", len(seen), n-1)
		}
	})
}

// mmapChildEnv makes the test binary map the file it names (TestMain): it
// checks that the mapping reads what read(2) does, writes through it and
// msyncs.
const mmapChildEnv = "PODFS_FS_MMAP_CHILD"

func mmapChild(path string) error {
	want, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	m, err := unix.Mmap(int(f.Fd()), 0, len(want), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("mmap: %w", err)
	}
	defer unix.Munmap(m)
	if !bytes.Equal(m, want) {
		return errors.New("mmap read differs from the file")
	}
	copy(m[4000:], "written through mmap")
	if err := unix.Msync(m, unix.MS_SYNC); err != nil {
		return fmt.Errorf("msync: %w", err)
	}
	return nil
}
