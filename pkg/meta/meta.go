package meta

import (
	"context"
	"time"
)

// Ino is an inode number. The FUSE node id the kernel sees is the same number,
// so a restarted server keeps serving the kernel's ids.
type Ino uint64

// RootIno is the root directory of every volume.
const RootIno Ino = 1

// ChunkSize is the span of file offsets one chunk covers.
const ChunkSize = 64 << 20

// Attr is an inode's attributes, stored with every inode.
type Attr struct {
	Mode   uint32 // file type (syscall.S_IFMT bits) and permission bits, as in stat(2)
	Uid    uint32
	Gid    uint32
	Nlink  uint32
	Rdev   uint32
	Size   uint64 // file length; for symlinks the target's length; for directories 4096
	Atime  int64  // Unix nanoseconds
	Mtime  int64
	Ctime  int64
	Parent Ino // directories: the parent directory; others: the directory whose quotas they are charged to (0: made before quotas; quota.go)
}

// Entry is one directory entry, with the child's attributes when asked for (readdirplus).
type Entry struct {
	Name string
	Ino  Ino
	Attr Attr // filled for every entry; Mode always carries at least the type bits
}

// Slice is one piece of a chunk: the bytes [Off, Off+Len) of the object set
// named ID (Size bytes in all), placed at chunk offset Pos. ID 0 is a hole that
// reads as zeros. Later slices in a chunk's list cover earlier ones.
type Slice struct {
	ID   uint64
	Size uint32
	Off  uint32
	Len  uint32
	Pos  uint32
}

// SetAttr flags say which fields of the Attr passed to SetAttr apply.
const (
	SetMode uint32 = 1 << iota
	SetUid
	SetGid
	SetSize
	SetAtime
	SetMtime
	SetAtimeNow
	SetMtimeNow
	SetCtime
)

// Rename flags, as renameat2(2).
const (
	RenameNoReplace uint32 = 1 << 0
	RenameExchange  uint32 = 1 << 1
)

// Xattr flags, as setxattr(2).
const (
	XattrCreate  uint32 = 1
	XattrReplace uint32 = 2
)

// FormatVersion is the on-disk layout version this code writes and understands.
const FormatVersion = 1

// Format is a volume's settings, written once by Init.
type Format struct {
	Name      string
	UUID      string
	BlockSize int    // bytes per data block object (default 4 MiB)
	Storage   string // storage URL
	Capacity  uint64 // bytes; 0 = unlimited
	Inodes    uint64 // 0 = unlimited
	CreatedAt time.Time
	Version   int
}

// StatFS is what statfs(2) needs.
type StatFS struct {
	TotalSpace, AvailSpace  uint64
	UsedInodes, AvailInodes uint64
}

// Plock is a POSIX byte-range lock, [Start, End] inclusive as in struct flock.
type Plock struct {
	Type  uint32 // syscall.F_RDLCK, F_WRLCK or F_UNLCK
	Start uint64
	End   uint64
	Pid   uint32
}

// Session is one client's registration.
type Session struct {
	ID         uint64
	Hostname   string
	Pid        int
	MountPoint string
	Heartbeat  time.Time
}

// Meta is a volume's namespace. Every method is one transaction (retried on
// conflict). Errors a caller should pass to the kernel are syscall.Errno values,
// possibly wrapped; anything else means EIO.
type Meta interface {
	// Init formats the volume; it refuses (EEXIST) to overwrite a different volume.
	Init(ctx context.Context, f Format) error
	// Load reads the volume's settings; a volume never formatted gives ENOENT,
	// one of a newer FormatVersion an error saying so.
	Load(ctx context.Context) (*Format, error)

	// NewSession registers this client and starts its heartbeat; CloseSession
	// releases everything the session holds (locks, open-unlinked files).
	NewSession(ctx context.Context, mountPoint string) error
	CloseSession(ctx context.Context) error
	ListSessions(ctx context.Context) ([]Session, error)
	// CleanStaleSessions reclaims what sessions without a heartbeat for the
	// timeout held, and returns how many it reclaimed.
	CleanStaleSessions(ctx context.Context) (int, error)

	StatFS(ctx context.Context) (StatFS, error)
	// Fragmentation reports the bytes chunks reference and the pending
	// deletes (a scan of every chunk: for status, not the I/O path).
	Fragmentation(ctx context.Context) (Fragmentation, error)
	Lookup(ctx context.Context, parent Ino, name string) (Ino, Attr, error)
	GetAttr(ctx context.Context, ino Ino) (Attr, error)
	// SetAttr applies the fields of in named by set (SetSize truncates or extends).
	SetAttr(ctx context.Context, ino Ino, set uint32, in Attr) (Attr, error)

	// Mknod creates a node of any type except directories and symlinks (mode
	// carries the type); exclusive: EEXIST if the name exists.
	Mknod(ctx context.Context, parent Ino, name string, mode, rdev, uid, gid uint32) (Ino, Attr, error)
	// Create makes a regular file (mode's permission bits) and opens it, as
	// Mknod then Open but in one transaction; the file needs a Release.
	Create(ctx context.Context, parent Ino, name string, mode, uid, gid, flags uint32) (Ino, Attr, error)
	Mkdir(ctx context.Context, parent Ino, name string, mode, uid, gid uint32) (Ino, Attr, error)
	Symlink(ctx context.Context, parent Ino, name, target string, uid, gid uint32) (Ino, Attr, error)
	Readlink(ctx context.Context, ino Ino) (string, error)
	Link(ctx context.Context, ino, newParent Ino, newName string) (Attr, error)
	Unlink(ctx context.Context, parent Ino, name string) error
	Rmdir(ctx context.Context, parent Ino, name string) error
	Rename(ctx context.Context, oldParent Ino, oldName string, newParent Ino, newName string, flags uint32) error
	// Readdir returns up to limit entries whose names sort after cursor ("" = from
	// the start), in name order; "." and ".." are not included.
	Readdir(ctx context.Context, dir Ino, cursor string, limit int) ([]Entry, error)

	GetXattr(ctx context.Context, ino Ino, name string) ([]byte, error)
	SetXattr(ctx context.Context, ino Ino, name string, value []byte, flags uint32) error
	ListXattr(ctx context.Context, ino Ino) ([]string, error)
	RemoveXattr(ctx context.Context, ino Ino, name string) error

	// Open records that this session has ino open, so an unlink keeps it until
	// the matching Release; it returns fresh attributes (close-to-open).
	Open(ctx context.Context, ino Ino, flags uint32) (Attr, error)
	Release(ctx context.Context, ino Ino) error
	// ReleaseMany is Release of each of inos (one may repeat), writing the
	// markers of several files in one transaction.
	ReleaseMany(ctx context.Context, inos []Ino) error
	// LocalOpens reports that no other client can reach the volume (an
	// exclusive engine: bolt), so open markers stay in this client's memory
	// until an unlink of an open file needs one stored: Open and Release
	// then cost no transaction, and deferring releases gains nothing.
	LocalOpens() bool

	// ReadChunk returns chunk index's slice list, oldest first.
	ReadChunk(ctx context.Context, ino Ino, index uint32) ([]Slice, error)
	// WriteChunk appends s to chunk index and extends the file to cover it.
	WriteChunk(ctx context.Context, ino Ino, index uint32, s Slice, mtime time.Time) error
	// CompactChunk replaces the first len(old) slices of the chunk's list (which
	// must still be exactly old, else ErrChunkChanged) with repl (slices of
	// new ids, or none); the replaced slices become deletable.
	CompactChunk(ctx context.Context, ino Ino, index uint32, old, repl []Slice) error
	// NewSliceID hands out a slice id (batched internally).
	NewSliceID(ctx context.Context) (uint64, error)
	Fallocate(ctx context.Context, ino Ino, mode uint32, off, length uint64) error
	CopyFileRange(ctx context.Context, src Ino, srcOff uint64, dst Ino, dstOff, length uint64) (uint64, error)

	// ListSlices calls fn for every slice some file references (for GC and fsck).
	ListSlices(ctx context.Context, fn func(ino Ino, s Slice) error) error
	// PendingDeletes returns slices no file references any more; after deleting
	// their objects the data layer calls DoneDeleting with their ids.
	PendingDeletes(ctx context.Context, limit int) ([]Slice, error)
	DoneDeleting(ctx context.Context, ids []uint64) error

	Flock(ctx context.Context, ino Ino, owner uint64, typ uint32, block bool) error
	GetLk(ctx context.Context, ino Ino, owner uint64, lk *Plock) error
	SetLk(ctx context.Context, ino Ino, owner uint64, block bool, lk Plock) error

	// Sync returns once every change this client committed before the call
	// is durable. Engines that make each commit durable before answering
	// (tikv, etcd, bolt without SyncDelay) return at once. The file system
	// calls it for fsync, and before deleting objects that a lost commit
	// would leave referenced.
	Sync(ctx context.Context) error
	// Stats returns this client's counters (for metrics).
	Stats() Stats

	// SetQuota creates or changes the quota of directory dir (limits of 0
	// are unlimited); creating one counts the tree's usage. See quota.go
	// for what is charged and how limits are enforced (EDQUOT).
	SetQuota(ctx context.Context, dir Ino, maxBytes, maxInodes uint64) error
	// GetQuota returns dir's quota with its usage; ENOENT when it has none.
	GetQuota(ctx context.Context, dir Ino) (Quota, error)
	ListQuotas(ctx context.Context) (map[Ino]Quota, error)
	// DeleteQuota removes dir's quota; ENOENT when it has none.
	DeleteQuota(ctx context.Context, dir Ino) error
	// StatFSDir is StatFS as seen from dir: the nearest quota at or above
	// dir gives total/used (bytes and inodes), else the volume's figures.
	StatFSDir(ctx context.Context, dir Ino) (StatFS, error)
	// ReserveSpace reserves grow bytes of the quotas above file ino for
	// writes this client accepts before committing them (write(2)),
	// refusing (EDQUOT) what does not fit; the commits use the
	// reservation up, and the file's last Release here drops the rest.
	ReserveSpace(ctx context.Context, ino Ino, grow uint64) error

	// Check verifies the namespace's invariants and lists every problem found.
	Check(ctx context.Context, repair bool) (*CheckReport, error)

	Close(ctx context.Context) error
}

// CheckReport is what Check found.
type CheckReport struct {
	Problems []string // one line each, naming the inode or key
	Repaired int      // problems fixed (with repair)
}
