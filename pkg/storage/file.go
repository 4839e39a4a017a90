package storage

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// tmpPrefix names the directory (under the store's root) that holds files
// being written; keys may not use it, and List never shows it.
const tmpPrefix = ".podfs-tmp"

// FileOptions tunes a file store.
type FileOptions struct {
	// Fsync makes Put fsync the object and its directory before returning, so a
	// returned Put survives a power loss. Without it a Put survives a crash of
	// podfs but not of the machine (only for caches and benchmarks).
	Fsync bool
	// Buffered writes every object through the page cache. By default objects
	// of at least directMin bytes (whole blocks of a streaming writer) are
	// written with O_DIRECT: copying them into the page cache cost more CPU
	// than anything else podfs does for a sequential write, and this disk
	// takes direct 4 MiB writes about 3x as fast as buffered ones. Such
	// objects are then not in the page cache when read back soon after.
	Buffered bool
	// NoJournal turns off the small-object journal of a store with Fsync
	// (see journal.go): every Put then makes its own file durable.
	NoJournal bool
	// JournalSegment is the size of a journal segment file (default
	// DefaultJournalSegment, at least 2 MiB).
	JournalSegment int64
	// Log receives the journal's reports (default slog.Default()).
	Log *slog.Logger
	// Remote says the directory is a network file system (NFS, CephFS):
	// the data layer then caches its blocks as it does an object store's,
	// instead of leaving caching to the local page cache (see IsLocal).
	Remote bool
}

// directMin is the smallest object written with O_DIRECT; smaller ones
// (small files, a slice's tail) are often read back soon and stay buffered.
const directMin = 1 << 20

// File keeps each object as a file named by its key under a root directory.
// Keys map to paths verbatim; podfs's block keys already spread over
// prefixes (chunks/<id%256>/<id/1000>/...), so no directory grows unbounded.
// Writes go to a temporary file in the same file system and are renamed into
// place, so a reader sees the old object or the new one, never a torn one.
type File struct {
	root string
	opts FileOptions
	fds  *fdCache
	// noDirect is set once the file system refused O_DIRECT.
	noDirect atomic.Bool
	// j journals small objects (nil: off, or no Fsync).
	j *journal
	// deferred: Puts skip their fsyncs, Sync makes them durable (DeferSync).
	deferred atomic.Bool
}

// DeferSync makes Puts skip their fsyncs (and the journal): an object is
// then durable only once Sync returned, which covers every object put
// before it with one syncfs. It is for a store whose user calls Sync before
// anything durable refers to its objects: pkg/fs passes Sync to the
// embedded metadata engine as the barrier it runs before writing its log.
func (f *File) DeferSync() { f.deferred.Store(true) }

// Journaled reports whether the store journals small objects (see journal.go).
func (f *File) Journaled() bool { return f.j != nil }

// DefaultFileOption returns a file URL with option key set to value unless
// the URL sets it already; other URLs are returned as they are.
func DefaultFileOption(rawURL, key, value string) string {
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != "file" || u.Query().Has(key) {
		return rawURL
	}
	q := u.Query()
	q.Set(key, value)
	u.RawQuery = q.Encode()
	return u.String()
}

// Sync makes every object put so far durable: a syncfs of the store's file
// system (one journal commit for all of them). Safe after Close.
func (f *File) Sync() error {
	d, err := os.Open(f.root)
	if err != nil {
		return fmt.Errorf("sync %s: %w", f, err)
	}
	defer d.Close()
	if err := unix.Syncfs(int(d.Fd())); err != nil {
		return fmt.Errorf("sync %s: syncfs: %w", f, err)
	}
	return nil
}

// openFDs bounds the object descriptors a file store keeps open for reads.
const openFDs = 1024

// NewFile opens (creating if needed) a file store rooted at dir.
func NewFile(dir string, opts FileOptions) (*File, error) {
	if err := os.MkdirAll(filepath.Join(dir, tmpPrefix), 0o755); err != nil {
		return nil, fmt.Errorf("file storage %s: %w", dir, err)
	}
	// Leftovers of writes interrupted by a crash are never visible; drop them.
	if ents, err := os.ReadDir(filepath.Join(dir, tmpPrefix)); err == nil {
		for _, e := range ents {
			_ = os.Remove(filepath.Join(dir, tmpPrefix, e.Name()))
		}
	}
	f := &File{root: dir, opts: opts, fds: newFDCache(openFDs)}
	size := opts.JournalSegment
	if size == 0 {
		size = DefaultJournalSegment
	}
	if size < minJournalSegment || size%jBlock != 0 {
		return nil, fmt.Errorf("file storage %s: journal segment size %d: want a multiple of 4 KiB of at least %d", dir, size, minJournalSegment)
	}
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	if opts.Fsync && !opts.NoJournal {
		j, err := openJournal(f, size, log, false)
		if err != nil {
			return nil, err
		}
		f.j = j
		return f, nil
	}
	// Without a journal of its own, a store still spills what one left
	// (a crash of a store that had one), or those objects would be missing.
	if _, err := os.Stat(filepath.Join(dir, journalDir)); err == nil {
		j, err := openJournal(f, size, log, true)
		if errors.Is(err, errJournalBusy) {
			return f, nil // its owner spills it
		}
		if err != nil {
			return nil, err
		}
		if err := j.close(); err != nil {
			return nil, err
		}
	}
	return f, nil
}

func (f *File) path(key string) string { return filepath.Join(f.root, filepath.FromSlash(key)) }

func (f *File) Put(ctx context.Context, key string, data []byte) error {
	if err := checkKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if f.j != nil && !f.deferred.Load() {
		if len(data) < directMin {
			if err := f.j.append(ctx, jPut, key, data); err != nil {
				return fmt.Errorf("put %s in %s: %w", key, f, err)
			}
			return nil
		}
		if err := f.j.awaitAbsent(ctx, key); err != nil {
			return fmt.Errorf("put %s in %s: %w", key, f, err)
		}
	}
	tmp := f.tempPath()
	err := f.put(tmp, f.path(key), data)
	f.fds.drop(key) // a descriptor of an older version
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("put %s in %s: %w", key, f, err)
	}
	return nil
}

func (f *File) tempPath() string {
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	return filepath.Join(f.root, tmpPrefix, hex.EncodeToString(rnd[:]))
}

// place puts data in key's file, or removes it (del), without making either
// durable: the journal's spiller syncs a batch of them at once. It reports
// whether it left the file system as it was (a removal of no file).
func (f *File) place(key string, data []byte, del bool) (same bool, err error) {
	defer f.fds.drop(key)
	if del {
		err := os.Remove(f.path(key))
		if errors.Is(err, fs.ErrNotExist) {
			return true, nil
		}
		return false, err
	}
	tmp := f.tempPath()
	fh, err := f.writeTemp(tmp, data)
	if err == nil {
		fh.Close()
		_, err = f.rename(tmp, f.path(key), 0)
	}
	if err != nil {
		_ = os.Remove(tmp)
	}
	return false, err
}

// put writes data to tmp and renames it to dst. Readers see dst appear
// whole: every byte is written before the rename.
//
// With Fsync, a new object is renamed into place first and made durable
// after (fsync of the file, then of its directory and of any directory
// created for it). On ext4 and its kin the first fsync then commits the
// creation, the data and the rename in one journal transaction, where
// syncing before the rename costs two; the later directory fsyncs find
// nothing left to commit. POSIX asks for exactly these fsyncs, so a returned
// Put is as durable as before. The object is visible but not yet durable
// between the rename and the fsync: harmless, because nothing refers to an
// object before its Put returned (a crash there leaves an unreferenced
// object, which GC removes), and a retried Put takes the replace path below.
// Replacing an existing object keeps the stricter order (durable, then
// renamed), so a crash leaves the old version or the new one.
func (f *File) put(tmp, dst string, data []byte) error {
	fh, err := f.writeTemp(tmp, data)
	if err != nil {
		return err
	}
	defer fh.Close()
	dir := filepath.Dir(dst)
	if !f.opts.Fsync || f.deferred.Load() {
		_, err := f.rename(tmp, dst, 0)
		return err
	}
	created, err := f.rename(tmp, dst, unix.RENAME_NOREPLACE)
	switch {
	case err == nil:
		if err := fh.Sync(); err != nil {
			return err
		}
		if err := syncDir(dir); err != nil {
			return fmt.Errorf("sync directory: %w", err)
		}
		// Each directory made for the object is an entry in its parent.
		for _, d := range created {
			if err := syncDir(filepath.Dir(d)); err != nil {
				return fmt.Errorf("sync directory: %w", err)
			}
		}
		return nil
	case errors.Is(err, fs.ErrExist), errors.Is(err, syscall.EINVAL):
		// Replacing an object, or a file system without RENAME_NOREPLACE.
		if err := fh.Sync(); err != nil {
			return err
		}
		if _, err := f.rename(tmp, dst, 0); err != nil {
			return err
		}
		if err := syncDir(dir); err != nil {
			return fmt.Errorf("sync directory: %w", err)
		}
		return nil
	default:
		return err
	}
}

// rename moves tmp to dst with renameat2 flags, creating dst's missing
// directories; it returns the directories it created (deepest last).
func (f *File) rename(tmp, dst string, flags uint) ([]string, error) {
	err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, dst, flags)
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	var created []string
	if err := f.mkdirs(filepath.Dir(dst), &created); err != nil {
		return nil, err
	}
	return created, unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, dst, flags)
}

// mkdirs creates dir and its missing parents below the root, noting each
// one it created (the caller makes their entries durable).
func (f *File) mkdirs(dir string, created *[]string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	parent := filepath.Dir(dir)
	if parent != dir && len(parent) >= len(f.root) {
		if err := f.mkdirs(parent, created); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil
		}
		return err
	}
	*created = append(*created, dir)
	return nil
}

// writeTemp creates tmp holding data, with O_DIRECT when data suits it (see
// FileOptions.Buffered), falling back to a buffered write where refused.
func (f *File) writeTemp(tmp string, data []byte) (*os.File, error) {
	const flags = os.O_WRONLY | os.O_CREATE | os.O_EXCL
	if f.direct(data) {
		fh, err := os.OpenFile(tmp, flags|syscall.O_DIRECT, 0o644)
		if err == nil {
			if _, err = fh.Write(data); err == nil {
				return fh, nil
			}
			fh.Close()
			_ = os.Remove(tmp)
		}
		if !errors.Is(err, syscall.EINVAL) {
			return nil, err
		}
		f.noDirect.Store(true) // not supported here: stop trying
	}
	fh, err := os.OpenFile(tmp, flags, 0o644)
	if err != nil {
		return nil, err
	}
	if _, err := fh.Write(data); err != nil {
		fh.Close()
		return nil, err
	}
	return fh, nil
}

// direct reports whether data may be written with O_DIRECT: big, whole
// 4 KiB sectors, from a 4 KiB-aligned buffer (block buffers are large
// allocations, which Go aligns to its 8 KiB pages).
func (f *File) direct(data []byte) bool {
	return !f.opts.Buffered && !f.noDirect.Load() && len(data) >= directMin && len(data)%4096 == 0 &&
		uintptr(unsafe.Pointer(unsafe.SliceData(data)))%4096 == 0
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func (f *File) Get(ctx context.Context, key string, off int64, p []byte) (int, error) {
	if err := checkKey(key); err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if f.j != nil {
		if e := f.j.pin(key); e != nil {
			defer f.j.unpin(e)
			if e.del {
				return 0, fmt.Errorf("get %s from %s: %w", key, f, ErrNotFound)
			}
			n, err := e.readAt(p, off)
			if err != nil {
				return n, fmt.Errorf("get %s from %s: %w", key, f, err)
			}
			return n, nil
		}
	}
	cf, err := f.fds.get(key, f.path(key))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return 0, fmt.Errorf("get %s from %s: %w", key, f, ErrNotFound)
		}
		return 0, fmt.Errorf("get %s from %s: %w", key, f, err)
	}
	defer f.fds.put(cf)
	n := 0
	for n < len(p) {
		m, err := unix.Pread(cf.fd, p[n:], off+int64(n))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, fmt.Errorf("get %s from %s at %d: %w", key, f, off, err)
		}
		if m == 0 {
			break // end of the object
		}
		n += m
	}
	return n, nil
}

func (f *File) Delete(ctx context.Context, key string) error {
	if err := checkKey(key); err != nil {
		return err
	}
	if e := f.journaled(key); e != nil {
		if e.del {
			return nil
		}
		// A tombstone, so that no replay of the journal brings it back. It
		// survives a crash of podfs at once, and a power loss once the next
		// Put (or spill) flushed the disk's cache: as durable as the unlink
		// below, which no fsync follows either.
		if err := f.j.append(ctx, jDelete, key, nil); err != nil {
			return fmt.Errorf("delete %s from %s: %w", key, f, err)
		}
		return nil
	}
	f.fds.drop(key)
	if err := os.Remove(f.path(key)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete %s from %s: %w", key, f, err)
	}
	return nil
}

func (f *File) Head(ctx context.Context, key string) (Object, error) {
	if err := checkKey(key); err != nil {
		return Object{}, err
	}
	if e := f.journaled(key); e != nil {
		if e.del {
			return Object{}, fmt.Errorf("head %s in %s: %w", key, f, ErrNotFound)
		}
		return e.object(), nil
	}
	st, err := os.Stat(f.path(key))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return Object{}, fmt.Errorf("head %s in %s: %w", key, f, ErrNotFound)
		}
		return Object{}, fmt.Errorf("head %s in %s: %w", key, f, err)
	}
	if st.IsDir() {
		return Object{}, fmt.Errorf("head %s in %s: a directory: %w", key, f, ErrNotFound)
	}
	return Object{Key: key, Size: st.Size(), ModTime: st.ModTime()}, nil
}

// List walks only the directories that can hold keys with prefix after marker.
func (f *File) List(ctx context.Context, prefix, marker string, limit int) ([]Object, error) {
	start := f.root
	if i := strings.LastIndex(prefix, "/"); i >= 0 {
		start = f.path(prefix[:i])
	}
	var out []Object
	// What the journal holds before the walk and after: an object that moves
	// to its file meanwhile, behind the walk, is in the first.
	var before []*jentry
	if f.j != nil {
		before = f.j.entries(prefix, marker)
	}
	err := filepath.WalkDir(start, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, _ := filepath.Rel(f.root, p)
		key := filepath.ToSlash(rel)
		if d.IsDir() {
			if p == start || p == f.root {
				return nil
			}
			if key == tmpPrefix || key == journalDir {
				return filepath.SkipDir
			}
			dk := key + "/"
			if !strings.HasPrefix(dk, prefix) && !strings.HasPrefix(prefix, dk) {
				return filepath.SkipDir
			}
			if dk <= marker && !strings.HasPrefix(marker, dk) {
				return filepath.SkipDir // every key below sorts before marker
			}
			return nil
		}
		if !strings.HasPrefix(key, prefix) || key <= marker {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil // removed meanwhile
		}
		out = append(out, Object{Key: key, Size: info.Size(), ModTime: info.ModTime()})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %q in %s: %w", prefix, f, err)
	}
	if f.j != nil {
		out = merge(out, append(before, f.j.entries(prefix, marker)...))
	}
	return sortLimit(out, limit), nil
}

func (f *File) String() string { return "file://" + f.root }

// Prefetch asks the kernel to read the object's bytes into its page cache
// in the background (posix_fadvise WILLNEED). Objects are separate files, so
// the kernel's own readahead, which follows one open file, stops at each
// object's end: without the hint a sequential reader stalls on every block.
func (f *File) Prefetch(key string, off, n int64) {
	if checkKey(key) != nil || f.journaled(key) != nil {
		return // a journaled object: no file yet
	}
	cf, err := f.fds.get(key, f.path(key))
	if err != nil {
		return
	}
	_ = unix.Fadvise(cf.fd, off, n, unix.FADV_WILLNEED)
	f.fds.put(cf)
}

// Local marks the store as local to this machine (see IsLocal).
func (f *File) Local() bool { return !f.opts.Remote }

// Close spills the journal (every object to its file, durably) and closes
// the descriptors.
func (f *File) Close() error {
	var err error
	if f.j != nil {
		err = f.j.close()
	}
	f.fds.close()
	return err
}

// journaled returns key's journal entry, or nil when its file holds it.
func (f *File) journaled(key string) *jentry {
	if f.j == nil {
		return nil
	}
	return f.j.lookup(key)
}
