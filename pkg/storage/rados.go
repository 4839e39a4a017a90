//go:build !norados && cgo

package storage

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/ceph/go-ceph/rados"

	"podfs.io/podfs/pkg/redact"
)

// Rados keeps each object as a RADOS object in one pool.
type Rados struct {
	name  string // for String: pool and monitors, never secrets
	conn  *rados.Conn
	ioctx *rados.IOContext
}

// radosParams are the query parameters of a rados:// URL.
var radosParams = []string{"conf", "mon_host", "user", "keyring", "keyfile", "key", "namespace", "connect_timeout", "op_timeout"}

// radosCreds says where the client's key comes from, for messages.
type radosCreds struct {
	user                   string // without "client."
	conf, keyring, keyfile string
	key                    bool // key= in the URL
}

func (c radosCreds) String() string {
	switch {
	case c.keyring != "":
		return "keyring " + c.keyring
	case c.keyfile != "":
		return "keyfile " + c.keyfile
	case c.key:
		return "the key= in the URL"
	case c.conf != "":
		return "the keyring " + c.conf + " names (or librados' default places)"
	}
	return "no keyring (add keyring=PATH)"
}

// openRados parses rados://POOL?conf=...|mon_host=...&user=... and connects.
func openRados(ctx context.Context, rawURL string, u *url.URL) (Store, error) {
	shown := redact.URL(rawURL)
	pool := u.Host
	if pool == "" {
		pool = strings.Trim(u.Path, "/")
	}
	if pool == "" || strings.Contains(pool, "/") {
		return nil, fmt.Errorf("storage URL %q: missing or bad pool name, want rados://POOL?...\n%s", shown, Forms)
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return nil, fmt.Errorf("storage URL %q: %v\n%s", shown, redact.Text(err.Error()), Forms)
	}
	cr := radosCreds{user: "admin"}
	connectTimeout, opTimeout := 30*time.Second, 30*time.Second
	var monHost, key, ns string
	for k, v := range q {
		if !slices.Contains(radosParams, k) {
			return nil, fmt.Errorf("storage URL %q: unknown option %q for rados storage (known: %s)\n%s", shown, k, strings.Join(radosParams, ", "), Forms)
		}
		if len(v) != 1 {
			return nil, fmt.Errorf("storage URL %q: option %s given %d times", shown, k, len(v))
		}
		val := v[0]
		var err error
		switch k {
		case "conf":
			cr.conf = val
		case "mon_host":
			monHost = val
		case "user":
			cr.user = strings.TrimPrefix(val, "client.")
		case "keyring":
			cr.keyring = val
		case "keyfile":
			cr.keyfile = val
		case "key":
			// A Ceph key is base64: its '+' is a plus, not a space.
			key, cr.key = rawParam(u.RawQuery, k), true
		case "namespace":
			ns = val
		case "connect_timeout":
			connectTimeout, err = time.ParseDuration(val)
		case "op_timeout":
			opTimeout, err = time.ParseDuration(val)
		}
		if err != nil {
			return nil, fmt.Errorf("storage URL %q: %s=%q: %v (want a duration like 30s)", shown, k, val, err)
		}
	}
	if cr.conf == "" && monHost == "" {
		return nil, fmt.Errorf("storage URL %q: name the cluster with conf=/etc/ceph/ceph.conf or mon_host=HOST:PORT\n%s", shown, Forms)
	}
	if n := btoi(cr.keyring != "") + btoi(cr.keyfile != "") + btoi(cr.key); n > 1 {
		return nil, fmt.Errorf("storage URL %q: give the key one way: keyring=, keyfile= or key=, not %d of them", shown, n)
	}
	if cr.user == "" {
		return nil, fmt.Errorf("storage URL %q: user= is empty (want a Ceph user such as podfs, for client.podfs)", shown)
	}
	// librados reports a missing file vaguely (or not at all, for a
	// keyring: it falls back to no auth), so check each here by name.
	for _, f := range []struct{ name, path string }{{"conf", cr.conf}, {"keyring", cr.keyring}, {"keyfile", cr.keyfile}} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			return nil, fmt.Errorf("rados: %s for client.%s: %w (is the Secret holding it mounted there?)", f.name, cr.user, err)
		}
	}
	conn, err := rados.NewConnWithUser(cr.user)
	if err != nil {
		return nil, fmt.Errorf("rados: new connection for client.%s: %w", cr.user, err)
	}
	fail := func(format string, args ...any) (Store, error) {
		conn.Shutdown()
		return nil, fmt.Errorf(format, args...)
	}
	if cr.conf != "" {
		if err := conn.ReadConfigFile(cr.conf); err != nil {
			return fail("rados: read config %s: %w", cr.conf, err)
		}
	}
	set := map[string]string{
		// librados waits forever by default; bound connection and every op so a
		// dead cluster becomes an error podfs can retry or report.
		"client_mount_timeout": fmt.Sprint(int(connectTimeout.Seconds() + 0.5)),
		"rados_mon_op_timeout": fmt.Sprint(int(opTimeout.Seconds() + 0.5)),
		"rados_osd_op_timeout": fmt.Sprint(int(opTimeout.Seconds() + 0.5)),
	}
	if monHost != "" {
		set["mon_host"] = monHost
	}
	if cr.keyring != "" {
		set["keyring"] = cr.keyring
	}
	if cr.keyfile != "" {
		set["keyfile"] = cr.keyfile
	}
	if key != "" {
		set["key"] = key
	}
	for k, v := range set {
		if err := conn.SetConfigOption(k, v); err != nil {
			if k == "key" {
				v = redact.Mask
			}
			return fail("rados: set %s=%s: %w", k, v, err)
		}
	}
	mons, _ := conn.GetConfigOption("mon_host")
	done := make(chan error, 1)
	go func() { done <- conn.Connect() }()
	cctx, cancel := context.WithTimeout(ctx, connectTimeout+5*time.Second)
	defer cancel()
	select {
	case err := <-done:
		if err != nil {
			return fail("%w", explainConnect(err, mons, cr))
		}
	case <-cctx.Done():
		// Connect is still running in librados; it ends with client_mount_timeout.
		go func() {
			if <-done == nil {
				conn.Shutdown()
			}
		}()
		return nil, fmt.Errorf("rados: connect to monitors %q as client.%s: no answer within %s", mons, cr.user, connectTimeout)
	}
	ioctx, err := conn.OpenIOContext(pool)
	if err != nil {
		return fail("rados: open pool %q on monitors %q as client.%s: %w (create it: ceph osd pool create %s)", pool, mons, cr.user, err, pool)
	}
	if ns != "" {
		ioctx.SetNamespace(ns)
	}
	return &Rados{name: "rados://" + pool + "?mon_host=" + mons + "&user=" + cr.user, conn: conn, ioctx: ioctx}, nil
}

// explainConnect names the credential a failed connection points at.
func explainConnect(err error, mons string, cr radosCreds) error {
	var re interface{ ErrorCode() int } // go-ceph's errors carry the negative errno
	if errors.As(err, &re) {
		switch -re.ErrorCode() {
		case int(syscall.EPERM), int(syscall.EACCES):
			return fmt.Errorf("rados: cephx auth failed for client.%s with %s at monitors %q: %w (does it hold client.%s's current key? ceph auth get client.%s shows it)",
				cr.user, cr, mons, err, cr.user, cr.user)
		case int(syscall.ENOENT), int(syscall.EOPNOTSUPP):
			// ENOENT: a keyring without the user's section; EOPNOTSUPP: no
			// key at all, so librados offered no auth the cluster takes.
			if cr.keyring == "" && cr.keyfile == "" && !cr.key {
				return fmt.Errorf("rados: the cluster at monitors %q wants cephx, and client.%s has no key (the URL names no keyring=, keyfile= or key=): %w (add keyring=PATH holding a [client.%s] section)",
					mons, cr.user, err, cr.user)
			}
			return fmt.Errorf("rados: no key for client.%s in %s at monitors %q: %w (the cluster wants cephx: give a keyring holding a [client.%s] section)",
				cr.user, cr, mons, err, cr.user)
		}
	}
	return fmt.Errorf("rados: connect to monitors %q as client.%s with %s: %w (is the cluster up and reachable?)", mons, cr.user, cr, err)
}

// rawParam is the value of the query parameter name, percent-decoded
// without turning '+' into a space.
func rawParam(rawQuery, name string) string {
	for _, p := range strings.Split(rawQuery, "&") {
		if k, v, _ := strings.Cut(p, "="); k == name {
			if d, err := url.PathUnescape(v); err == nil {
				return d
			}
			return v
		}
	}
	return ""
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (r *Rados) Put(ctx context.Context, key string, data []byte) error {
	if err := checkKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(data) == 0 {
		// WriteFull cannot write nothing (go-ceph indexes data[0]).
		err := r.ioctx.Create(key, rados.CreateIdempotent)
		if err == nil {
			err = r.ioctx.Truncate(key, 0)
		}
		if err != nil {
			return fmt.Errorf("put %s in %s: %w", key, r, err)
		}
		return nil
	}
	if err := r.ioctx.WriteFull(key, data); err != nil {
		return fmt.Errorf("put %s in %s: %w", key, r, err)
	}
	return nil
}

func (r *Rados) Get(ctx context.Context, key string, off int64, p []byte) (int, error) {
	if err := checkKey(key); err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if len(p) == 0 {
		return 0, nil
	}
	n, err := r.ioctx.Read(key, p, uint64(off))
	if err != nil {
		if errors.Is(err, rados.ErrNotFound) {
			return 0, fmt.Errorf("get %s from %s: %w", key, r, ErrNotFound)
		}
		return 0, fmt.Errorf("get %s from %s at %d: %w", key, r, off, err)
	}
	return n, nil
}

func (r *Rados) Delete(ctx context.Context, key string) error {
	if err := checkKey(key); err != nil {
		return err
	}
	if err := r.ioctx.Delete(key); err != nil && !errors.Is(err, rados.ErrNotFound) {
		return fmt.Errorf("delete %s from %s: %w", key, r, err)
	}
	return nil
}

func (r *Rados) Head(ctx context.Context, key string) (Object, error) {
	if err := checkKey(key); err != nil {
		return Object{}, err
	}
	st, err := r.ioctx.Stat(key)
	if err != nil {
		if errors.Is(err, rados.ErrNotFound) {
			return Object{}, fmt.Errorf("head %s in %s: %w", key, r, ErrNotFound)
		}
		return Object{}, fmt.Errorf("head %s in %s: %w", key, r, err)
	}
	return Object{Key: key, Size: int64(st.Size), ModTime: st.ModTime}, nil
}

// List walks the whole pool (RADOS lists in hash order, not key order) and
// sorts what matches; it serves GC and fsck, not the data path.
func (r *Rados) List(ctx context.Context, prefix, marker string, limit int) ([]Object, error) {
	it, err := r.ioctx.Iter()
	if err != nil {
		return nil, fmt.Errorf("list %q in %s: %w", prefix, r, err)
	}
	defer it.Close()
	var keys []string
	for it.Next() {
		k := it.Value()
		if strings.HasPrefix(k, prefix) && k > marker {
			keys = append(keys, k)
		}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list %q in %s: %w", prefix, r, err)
	}
	objs := make([]Object, len(keys))
	for i, k := range keys {
		objs[i] = Object{Key: k}
	}
	objs = sortLimit(objs, limit)
	for i := range objs {
		st, err := r.ioctx.Stat(objs[i].Key)
		if err == nil {
			objs[i].Size, objs[i].ModTime = int64(st.Size), st.ModTime
		}
	}
	return objs, nil
}

func (r *Rados) String() string { return r.name }

func (r *Rados) Close() error {
	r.ioctx.Destroy()
	r.conn.Shutdown()
	return nil
}
