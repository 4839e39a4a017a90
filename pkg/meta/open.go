package meta

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"podfs.io/podfs/pkg/meta/kv"
	"podfs.io/podfs/pkg/redact"
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
const URLForms = "bolt:///path/to/meta.db, " +
	"etcd://[USER[:PASSWORD]@]host:port[,host:port...]/<volume>[?cacert=PATH&cert=PATH&key=PATH&passwordFile=PATH] (etcds:// for TLS with the system's CAs), " +
	"tikv://pd:port[,pd:port...]/<volume>[?ca=PATH&cert=PATH&key=PATH]"

// Known query parameters per scheme, for parsing and messages.
var (
	etcdParams = []string{"cacert", "cert", "key", "passwordFile"}
	tikvParams = []string{"ca", "cert", "key"}
)

var volumeRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// ParsedURL is a metadata URL taken apart.
type ParsedURL struct {
	Scheme string   // bolt, etcd or tikv (etcds:// is etcd with TLS set)
	Path   string   // bolt: the database file
	Hosts  []string // etcd, tikv: host:port each
	Volume string   // etcd, tikv: the volume name (keys live under it)
	// etcd: the user to authenticate as, and its password (from the URL's
	// userinfo, or the contents of PasswordFile, the way a mounted Secret
	// hands it over).
	User, Password, PasswordFile string
	// TLS is set for etcds://, and for etcd:// and tikv:// URLs naming a
	// CA, client certificate or key; nil is plain TCP.
	TLS *kv.TLSFiles
}

// ParseURL checks a metadata URL; every error lists the accepted forms and
// shows the URL with its secrets redacted.
func ParseURL(u string) (*ParsedURL, error) {
	bad := func(why string) error {
		return fmt.Errorf("metadata URL %q: %s; accepted forms: %s", redact.URL(u), why, URLForms)
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
	case "etcd", "etcds", "tikv":
	default:
		return nil, bad(fmt.Sprintf("unknown scheme %q", scheme))
	}
	p := &ParsedURL{Scheme: scheme}
	if scheme == "etcds" {
		p.Scheme, p.TLS = "etcd", &kv.TLSFiles{}
	}
	rest, rawQuery, _ := strings.Cut(rest, "?")
	hosts, vol, ok := strings.Cut(rest, "/")
	if at := strings.LastIndexByte(hosts, '@'); at >= 0 {
		if p.Scheme != "etcd" {
			return nil, bad("tikv takes no user or password (TiKV authenticates clients by their certificate: ca=, cert=, key=)")
		}
		user, pass, hasPass := strings.Cut(hosts[:at], ":")
		var err error
		if p.User, err = url.PathUnescape(user); err != nil || p.User == "" {
			return nil, bad("the user before '@' is empty or badly percent-encoded")
		}
		if hasPass {
			if p.Password, err = url.PathUnescape(pass); err != nil || p.Password == "" {
				return nil, bad("the password after 'user:' is empty or badly percent-encoded (percent-encode '@', '/', '?', ':' and '%', or use passwordFile=)")
			}
		}
		hosts = hosts[at+1:]
	}
	if !ok || vol == "" {
		return nil, bad("missing /<volume> after the host list")
	}
	if !volumeRE.MatchString(vol) {
		return nil, bad(fmt.Sprintf("volume %q must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit", vol))
	}
	p.Volume = vol
	for _, h := range strings.Split(hosts, ",") {
		host, port, ok := strings.Cut(h, ":")
		if !ok || host == "" || port == "" || strings.Trim(port, "0123456789") != "" {
			return nil, bad(fmt.Sprintf("host %q must be host:port", h))
		}
		p.Hosts = append(p.Hosts, h)
	}
	if err := p.parseQuery(rawQuery); err != nil {
		return nil, bad(err.Error())
	}
	return p, nil
}

// parseQuery reads the credential parameters: every one names a file (an
// absolute path, as a mounted Secret gives), and each may appear once.
func (p *ParsedURL) parseQuery(raw string) error {
	known := etcdParams
	if p.Scheme == "tikv" {
		known = tikvParams
	}
	q, err := url.ParseQuery(raw)
	if err != nil {
		return fmt.Errorf("bad query: %v", err)
	}
	files := p.TLS
	if files == nil {
		files = &kv.TLSFiles{}
	}
	for k, v := range q {
		if !slices.Contains(known, k) {
			return fmt.Errorf("unknown parameter %q for %s (known: %s)", k, p.Scheme, strings.Join(known, ", "))
		}
		if len(v) != 1 {
			return fmt.Errorf("parameter %s given %d times", k, len(v))
		}
		if !filepath.IsAbs(v[0]) {
			return fmt.Errorf("%s=%q must be an absolute file path (credentials reach podfs as files, e.g. from a mounted Secret)", k, redactParam(k, v[0]))
		}
		switch k {
		case "cacert", "ca":
			files.CA = v[0]
		case "cert":
			files.Cert = v[0]
		case "key":
			files.Key = v[0]
		case "passwordFile":
			p.PasswordFile = v[0]
		}
	}
	if (files.Cert == "") != (files.Key == "") {
		return fmt.Errorf("a client certificate needs both cert= and key=")
	}
	if *files != (kv.TLSFiles{}) {
		p.TLS = files
	}
	if p.Scheme == "tikv" && p.TLS != nil && p.TLS.CA == "" {
		return fmt.Errorf("TLS to TiKV needs ca= (client-go turns TLS on only with a CA)")
	}
	if p.PasswordFile != "" {
		if p.User == "" {
			return fmt.Errorf("passwordFile= needs a user: etcd://USER@host:port/volume?passwordFile=PATH")
		}
		if p.Password != "" {
			return fmt.Errorf("give the password once: in passwordFile= or after 'user:', not both")
		}
	}
	if p.User != "" && p.Password == "" && p.PasswordFile == "" {
		return fmt.Errorf("user %q has no password: add passwordFile=PATH", p.User)
	}
	return nil
}

// redactParam hides a secret parameter's value in a message.
func redactParam(k, v string) string {
	if redact.IsSecretParam(k) {
		return redact.Mask
	}
	return v
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
