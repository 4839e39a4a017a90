package meta

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"podfs.io/podfs/pkg/meta/kv"
)

// ErrChunkChanged is returned (wrapped) by CompactChunk when the chunk's
// slice list no longer starts with the slices the caller compacted; the
// caller drops its compacted slice (and its objects) and may try again later.
var ErrChunkChanged = errors.New("chunk slice list changed during compaction")

// idBatch is how many inode or slice ids one counter transaction reserves.
const idBatch = 1024

// usageShards spreads the used-space and inode counters over several keys so
// concurrent transactions rarely write the same one, and no one key gathers
// a long history of versions (the TiKV mock reads slower the more a key was
// rewritten). StatFS sums whatever shards exist, so the count may change.
const usageShards = 1024

// Client implements Meta over a kv.Engine. It caches nothing a different
// client could change: every read goes to the store.
type Client struct {
	e     kv.Engine
	opt   Options
	log   *slog.Logger
	stats clientStats

	idMu                sync.Mutex
	inoNext, inoEnd     uint64
	sliceNext, sliceEnd uint64

	fmtMu  sync.Mutex
	format *Format // cached volume settings (immutable but for quotas)
	// statCache is the last StatFS, used for quota checks at most a second
	// old: quotas are enforced approximately, not per transaction.
	statCache   StatFS
	statCacheAt time.Time

	sessMu  sync.Mutex
	sid     uint64
	hbStop  chan struct{}
	hbDone  chan struct{}
	opensMu sync.Mutex
	opens   map[Ino]*openFile

	// stripes serialize this client's transactions on one inode (usually a
	// parent directory): on engines with optimistic concurrency, goroutines
	// of one client would otherwise mostly conflict with each other.
	stripes [256]sync.Mutex
	serial  bool // the engine never conflicts: no stripes needed
	// serializable: a transaction's reads conflict (kv.Serializable), so
	// creates need not confirm their directory afterwards (finishCreate).
	serializable bool
	// localOpens: the engine is exclusive (kv.Exclusive), so open markers
	// stay in memory until an unlink of an open file stores one.
	localOpens bool
	// slots are this client's usage slots (usage.go), one row per stripe.
	slots usageSlots
	// confirms batches creates' reads of their directory (confirm.go).
	confirms dirConfirms
	// quotas caches the volume's directory quotas (quota_cache.go).
	quotas quotaCache
	// groups gathers concurrent creates into shared transactions
	// (creategroup.go).
	groups createGroups

	reap     chan Ino
	stop     chan struct{}
	bg       sync.WaitGroup
	closeOne sync.Once
}

type openFile struct {
	mu   sync.Mutex // held across the transaction of a 0<->1 transition
	n    int        // open handles in this client
	refs int        // goroutines holding this struct (guards map removal)
	// live mirrors n for readers that may not take mu: an unlink's
	// transaction on an exclusive engine (see LocalOpens).
	live atomic.Int32
	// stored: on an exclusive engine, an unlink wrote this client's open
	// marker, which the last Release must drop (with the inode).
	stored bool
}

// add changes the open count by k (mu held).
func (of *openFile) add(k int) {
	of.n += k
	of.live.Store(int32(of.n))
}

// NewClient builds a client over an open engine (Open does this from a URL;
// tests use it to run the same code over any engine).
func NewClient(e kv.Engine, opt Options) *Client {
	opt.defaults()
	c := &Client{e: e, opt: opt, log: opt.Logger.With("meta", e.Name()), opens: make(map[Ino]*openFile), reap: make(chan Ino, 4096), stop: make(chan struct{})}
	_, c.serial = e.(kv.Serial)
	_, c.serializable = e.(kv.Serializable)
	_, c.localOpens = e.(kv.Exclusive)
	c.slots.owner = rand.Uint64()
	c.bg.Add(2)
	go c.reaper()
	go c.usageFolder()
	return c
}

// Engine is the client's key-value engine.
func (c *Client) Engine() kv.Engine { return c.e }

// LocalOpens implements Meta.
func (c *Client) LocalOpens() bool { return c.localOpens }

func (c *Client) txn(ctx context.Context, fn func(kv.Tx) error) error {
	// Transactions charge quotas from the cache (quota_cache.go): keep it
	// fresh (a time check, and a scan every quotaRefresh).
	if err := c.loadQuotas(ctx); err != nil {
		return err
	}
	for misses := 0; ; misses++ {
		start := time.Now()
		attempts, err := kv.TxnAttempts(ctx, c.e, fn)
		c.stats.txnDone(start, attempts)
		// A transaction charging quotas met a directory whose quotas the
		// cache lacks (quota_cache.go): load them and run it again.
		var miss *chainMiss
		if !errors.As(err, &miss) || misses >= 16 {
			return err
		}
		if _, err := c.quotaChain(ctx, miss.dir); err != nil {
			return err
		}
	}
}

// txnOn is txn holding this client's stripes of inos for the duration.
func (c *Client) txnOn(ctx context.Context, inos []Ino, fn func(kv.Tx) error) error {
	return c.txnOnThen(ctx, inos, fn, nil)
}

// txnOnThen is txnOn that also runs then (when not nil) with the outcome
// before releasing the stripes: what follows a commit of this stripe, such as
// a usage slot's known content (usage.go), is settled before the next
// transaction on it begins.
func (c *Client) txnOnThen(ctx context.Context, inos []Ino, fn func(kv.Tx) error, then func(error)) error {
	if c.serial {
		err := c.txn(ctx, fn)
		if then != nil {
			then(err)
		}
		return err
	}
	var idx []int
	for _, ino := range inos {
		idx = append(idx, int(uint64(ino)%uint64(len(c.stripes))))
	}
	slices.Sort(idx)
	idx = slices.Compact(idx)
	for _, i := range idx {
		c.stripes[i].Lock()
	}
	defer func() {
		for _, i := range idx {
			c.stripes[i].Unlock()
		}
	}()
	err := c.txn(ctx, fn)
	if then != nil {
		then(err)
	}
	return err
}

func (c *Client) view(ctx context.Context, fn func(kv.Tx) error) error {
	c.stats.views.Add(1)
	return c.e.View(ctx, fn)
}

func now() int64 { return time.Now().UnixNano() }

// Init implements Meta.
func (c *Client) Init(ctx context.Context, f Format) error {
	if f.Name == "" {
		return fmt.Errorf("format: the volume needs a name: %w", syscall.EINVAL)
	}
	if f.BlockSize == 0 {
		f.BlockSize = 4 << 20
	}
	if f.BlockSize < 4096 || f.BlockSize > ChunkSize || f.BlockSize&(f.BlockSize-1) != 0 {
		return fmt.Errorf("format: block size %d must be a power of two between 4 KiB and 64 MiB: %w", f.BlockSize, syscall.EINVAL)
	}
	givenUUID := f.UUID != ""
	if !givenUUID {
		f.UUID = newUUID()
	}
	if f.CreatedAt.IsZero() {
		f.CreatedAt = time.Now().UTC()
	}
	f.Version = FormatVersion
	err := c.txn(ctx, func(tx kv.Tx) error {
		old, err := tx.Get(keyFormat)
		if err != nil {
			return err
		}
		if old != nil {
			var cur Format
			if err := json.Unmarshal(old, &cur); err != nil {
				return fmt.Errorf("format: existing settings unreadable: %w", err)
			}
			if cur.Name != f.Name || givenUUID && cur.UUID != f.UUID {
				return fmt.Errorf("format: %s already holds volume %q (uuid %s); refusing to format it as %q — use another URL or volume name: %w",
					c.e.Name(), cur.Name, cur.UUID, f.Name, syscall.EEXIST)
			}
			if cur.Storage != f.Storage {
				return fmt.Errorf("format: volume %q stores data at %q, not %q; the storage URL cannot change: %w", cur.Name, cur.Storage, f.Storage, syscall.EEXIST)
			}
			// Reformatting the same volume only updates its quotas.
			cur.Capacity, cur.Inodes = f.Capacity, f.Inodes
			b, _ := json.Marshal(&cur)
			tx.Set(keyFormat, b)
			return nil
		}
		b, err := json.Marshal(&f)
		if err != nil {
			return err
		}
		tx.Set(keyFormat, b)
		t := now()
		root := Attr{Mode: syscall.S_IFDIR | 0o777, Nlink: 2, Size: 4096, Atime: t, Mtime: t, Ctime: t, Parent: RootIno}
		tx.Set(attrKey(RootIno), encodeAttr(&root))
		tx.Set(keyNextInode, be64(nil, uint64(RootIno)+1))
		tx.Set(keyNextSlice, be64(nil, 1))
		return nil
	})
	if err != nil {
		return err
	}
	c.fmtMu.Lock()
	c.format = nil
	c.fmtMu.Unlock()
	return nil
}

func newUUID() string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], rand.Uint64())
	binary.BigEndian.PutUint64(b[8:], rand.Uint64())
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// Load implements Meta.
func (c *Client) Load(ctx context.Context) (*Format, error) {
	var f Format
	err := c.view(ctx, func(tx kv.Tx) error {
		b, err := tx.Get(keyFormat)
		if err != nil {
			return err
		}
		if b == nil {
			return fmt.Errorf("load: %s holds no formatted volume (run podfs format): %w", c.e.Name(), syscall.ENOENT)
		}
		return json.Unmarshal(b, &f)
	})
	if err != nil {
		return nil, err
	}
	if f.Version > FormatVersion {
		return nil, fmt.Errorf("load: volume %q has format version %d, this podfs understands up to %d: upgrade podfs", f.Name, f.Version, FormatVersion)
	}
	c.fmtMu.Lock()
	c.format = &f
	c.statCacheAt = time.Time{}
	c.fmtMu.Unlock()
	return &f, nil
}

// quotas returns the cached volume settings, loading them once.
func (c *Client) settings(ctx context.Context) (*Format, error) {
	c.fmtMu.Lock()
	f := c.format
	c.fmtMu.Unlock()
	if f != nil {
		return f, nil
	}
	return c.Load(ctx)
}

// counterAlloc reserves n ids from the counter at key in its own transaction.
func (c *Client) counterAlloc(ctx context.Context, key []byte, n uint64) (uint64, error) {
	var first uint64
	err := c.txn(ctx, func(tx kv.Tx) error {
		b, err := tx.Get(key)
		if err != nil {
			return err
		}
		first = u64(b)
		if first == 0 {
			return fmt.Errorf("counter %q missing: is the volume formatted? %w", key, syscall.EIO)
		}
		tx.Set(key, be64(nil, first+n))
		return nil
	})
	return first, err
}

func (c *Client) newIno(ctx context.Context) (Ino, error) {
	c.idMu.Lock()
	defer c.idMu.Unlock()
	if c.inoNext == c.inoEnd {
		first, err := c.counterAlloc(ctx, keyNextInode, idBatch)
		if err != nil {
			return 0, fmt.Errorf("allocate inode numbers: %w", err)
		}
		c.inoNext, c.inoEnd = first, first+idBatch
	}
	c.inoNext++
	return Ino(c.inoNext - 1), nil
}

// NewSliceID implements Meta.
func (c *Client) NewSliceID(ctx context.Context) (uint64, error) {
	c.idMu.Lock()
	defer c.idMu.Unlock()
	if c.sliceNext == c.sliceEnd {
		first, err := c.counterAlloc(ctx, keyNextSlice, idBatch)
		if err != nil {
			return 0, fmt.Errorf("allocate slice ids: %w", err)
		}
		c.sliceNext, c.sliceEnd = first, first+idBatch
	}
	c.sliceNext++
	return c.sliceNext - 1, nil
}

// addUsage adds to the used space and inode counters inside tx, on a random
// shard so concurrent transactions seldom collide.
func addUsage(tx kv.Tx, space, inodes int64) error {
	return addUsageAt(tx, randomUsageKey(), space, inodes)
}

// randomUsageKey picks the shard a transaction updates (callers that
// prefetch it pick it first).
func randomUsageKey() []byte { return usageKey(uint16(rand.N(usageShards))) }

// prefetch reads keys in one round trip; the engines keep what it read for
// the transaction's later Gets.
func prefetch(tx kv.Tx, keys ...[]byte) error {
	_, err := tx.BatchGet(keys)
	return err
}

func addUsageAt(tx kv.Tx, k []byte, space, inodes int64) error {
	if space == 0 && inodes == 0 {
		return nil
	}
	b, err := tx.Get(k)
	if err != nil {
		return err
	}
	s, i := decodeUsage(b)
	tx.Set(k, encodeUsage(s+space, i+inodes))
	return nil
}

func decodeUsage(b []byte) (space, inodes int64) {
	if len(b) != 16 {
		return 0, 0
	}
	return int64(binary.BigEndian.Uint64(b)), int64(binary.BigEndian.Uint64(b[8:]))
}

func encodeUsage(space, inodes int64) []byte {
	return be64(be64(make([]byte, 0, 16), uint64(space)), uint64(inodes))
}

// usage sums the counter shards.
func usage(tx kv.Tx) (space, inodes int64, err error) {
	err = tx.Scan([]byte{pUsage}, []byte{pUsage + 1}, 0, func(_, v []byte) bool {
		s, i := decodeUsage(v)
		space += s
		inodes += i
		return true
	})
	return
}

// align4k is the space a file of size bytes is charged.
func align4k(size uint64) int64 { return int64((size + 4095) &^ 4095) }

// StatFS implements Meta.
func (c *Client) StatFS(ctx context.Context) (StatFS, error) {
	f, err := c.settings(ctx)
	if err != nil {
		return StatFS{}, err
	}
	var space, inodes int64
	if err := c.view(ctx, func(tx kv.Tx) error {
		space, inodes, err = usage(tx)
		return err
	}); err != nil {
		return StatFS{}, fmt.Errorf("statfs: %w", err)
	}
	space, inodes = max(space, 0), max(inodes, 0)
	var st StatFS
	st.TotalSpace = f.Capacity
	if st.TotalSpace == 0 {
		st.TotalSpace = 1 << 50 // 1 PiB: "unlimited" that df can still print
		for st.TotalSpace < 2*uint64(space) {
			st.TotalSpace *= 2
		}
	}
	if uint64(space) < st.TotalSpace {
		st.AvailSpace = st.TotalSpace - uint64(space)
	}
	st.UsedInodes = uint64(inodes) + 1 // the root
	if f.Inodes > 0 {
		if f.Inodes > st.UsedInodes {
			st.AvailInodes = f.Inodes - st.UsedInodes
		}
	} else {
		st.AvailInodes = 1 << 32
	}
	return st, nil
}

// cachedStatFS is StatFS at most a second old, for quota checks.
func (c *Client) cachedStatFS(ctx context.Context) (StatFS, error) {
	c.fmtMu.Lock()
	st, at := c.statCache, c.statCacheAt
	c.fmtMu.Unlock()
	if time.Since(at) < time.Second {
		return st, nil
	}
	st, err := c.StatFS(ctx)
	if err != nil {
		return st, err
	}
	c.fmtMu.Lock()
	c.statCache, c.statCacheAt = st, time.Now()
	c.fmtMu.Unlock()
	return st, nil
}

// Close implements Meta.
func (c *Client) Close(ctx context.Context) error {
	var err error
	c.closeOne.Do(func() {
		err = c.CloseSession(ctx)
		close(c.stop)
		c.bg.Wait()
		// Leave no usage slots behind (a crashed client's stay, counted).
		if ferr := c.foldUsage(ctx, true); ferr != nil {
			c.log.Warn("fold usage slots at close", "err", ferr)
		}
		if cerr := c.e.Close(); err == nil {
			err = cerr
		}
	})
	return err
}
