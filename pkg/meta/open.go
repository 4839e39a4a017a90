package meta

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"time"

	"podfs.io/podfs/pkg/meta/kv"
)

// Options tune a client. Zero values take the defaults noted.
type Options struct {
	Logger *slog.Logger // default slog.Default()
	// Heartbeat is how often the session's liveness is written (default 12 s).
	Heartbeat time.Duration
	// SessionTimeout is how long without a heartbeat before other clients
	// may reclaim a session (default 60 s; at least 3 heartbeats).
	SessionTimeout time.Duration
	// ConnectTimeout bounds connecting to etcd or TiKV's PD (default 10 s).
	ConnectTimeout time.Duration
	// LockTimeout bounds the wait for the bolt file lock a second process
	// holds (default 2 s), so a second mount fails quickly with a clear error.
	LockTimeout time.Duration
	// NoSync skips fsync in the bolt engine (tests, CPU benchmarks).
	NoSync bool
	// SyncDelay is how long the bolt engine may hold a committed change in
	// the page cache before making it durable (default DefaultSyncDelay;
	// negative: every change is durable before its call returns). A crash
	// of the process loses nothing either way; a crash of the machine may
	// lose the changes of the last SyncDelay that no Sync (fsync) covered,
	// as a local file system loses what was not fsync'd.
	SyncDelay time.Duration
	// DataBarrier, with SyncDelay, makes the data that committed changes
	// refer to durable (a store that defers its syncs); the bolt engine
	// runs it before writing those changes to its log, so the log never
	// refers to data a power loss could take. Nil: the data is durable
	// when stored.
	DataBarrier func() error
	// DirMtimeSkip is how recent a directory's stored mtime and ctime may be
	// for a create, unlink, rename or link in it to leave them as they are
	// (default 100 ms; negative: always update them). Such an operation then
	// does not rewrite the directory's attributes unless its link count
	// changes, so creates in one directory do not all rewrite one key. A
	// directory's times may lag its last change by up to this much, as with
	// JuiceFS's --skip-dir-mtime. On TiKV, where only written keys conflict,
	// a create that skips the write no longer conflicts with a concurrent
	// rmdir of its directory from another client; Check reports the orphaned
	// entry such a race could leave.
	DirMtimeSkip time.Duration
}

func (o *Options) defaults() {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = 12 * time.Second
	}
	if o.SessionTimeout <= 0 {
		o.SessionTimeout = 60 * time.Second
	}
	if o.SessionTimeout < 3*o.Heartbeat {
		o.SessionTimeout = 3 * o.Heartbeat
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 10 * time.Second
	}
	if o.LockTimeout <= 0 {
		o.LockTimeout = 2 * time.Second
	}
	if o.DirMtimeSkip == 0 {
		o.DirMtimeSkip = 100 * time.Millisecond
	}
	if o.SyncDelay == 0 {
		o.SyncDelay = DefaultSyncDelay
	}
}

// DefaultSyncDelay is Options.SyncDelay's default: short enough that a power
// loss costs little, long enough that a burst of creates shares each flush.
const DefaultSyncDelay = 20 * time.Millisecond

// URLForms lists the metadata URLs Open accepts, for error messages.
const URLForms = "bolt:///path/to/meta.db, etcd://host:port[,host:port...]/<volume>, tikv://pd:port[,pd:port...]/<volume>"

var volumeRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// ParsedURL is a metadata URL taken apart.
type ParsedURL struct {
	Scheme string   // bolt, etcd or tikv
	Path   string   // bolt: the database file
	Hosts  []string // etcd, tikv: host:port each
	Volume string   // etcd, tikv: the volume name (keys live under it)
}

// ParseURL checks a metadata URL; every error lists the accepted forms.
func ParseURL(u string) (*ParsedURL, error) {
	bad := func(why string) error {
		return fmt.Errorf("metadata URL %q: %s; accepted forms: %s", u, why, URLForms)
	}
	scheme, rest, ok := strings.Cut(u, "://")
	if !ok {
		return nil, bad("no scheme")
	}
	switch scheme {
	case "bolt":
		// Everything after bolt:// is the path, '?' and '#' included: a
		// file name may hold them.
		if !strings.HasPrefix(rest, "/") || len(rest) < 2 || strings.HasSuffix(rest, "/") {
			return nil, bad("bolt needs an absolute file path after bolt:// (three slashes in all)")
		}
		return &ParsedURL{Scheme: scheme, Path: rest}, nil
	case "etcd", "tikv":
		hosts, vol, ok := strings.Cut(rest, "/")
		if !ok || vol == "" {
			return nil, bad("missing /<volume> after the host list")
		}
		if !volumeRE.MatchString(vol) {
			return nil, bad(fmt.Sprintf("volume %q must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit", vol))
		}
		p := &ParsedURL{Scheme: scheme, Volume: vol}
		for _, h := range strings.Split(hosts, ",") {
			host, port, ok := strings.Cut(h, ":")
			if !ok || host == "" || port == "" || strings.Trim(port, "0123456789") != "" {
				return nil, bad(fmt.Sprintf("host %q must be host:port", h))
			}
			p.Hosts = append(p.Hosts, h)
		}
		return p, nil
	default:
		return nil, bad(fmt.Sprintf("unknown scheme %q", scheme))
	}
}

// keyPrefix is where a networked engine keeps one volume's keys. The NUL
// ends the name, so no volume's keys sit inside another's range.
func keyPrefix(volume string) []byte { return []byte("podfs\x00" + volume + "\x00") }

// Open connects to the metadata engine the URL names. The volume need not be
// formatted yet (see Init and Load).
func Open(ctx context.Context, url string, opt Options) (Meta, error) {
	opt.defaults()
	p, err := ParseURL(url)
	if err != nil {
		return nil, err
	}
	var e kv.Engine
	switch p.Scheme {
	case "bolt":
		e, err = kv.OpenBolt(p.Path, kv.BoltOptions{NoSync: opt.NoSync, LockTimeout: opt.LockTimeout, Logger: opt.Logger,
			SyncDelay: max(opt.SyncDelay, 0), Barrier: opt.DataBarrier})
	case "etcd":
		e, err = openEtcd(ctx, p, opt)
	case "tikv":
		e, err = openTiKV(ctx, p, opt)
	}
	if err != nil {
		return nil, err
	}
	return NewClient(e, opt), nil
}
