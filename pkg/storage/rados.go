//go:build !norados && cgo

package storage

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/ceph/go-ceph/rados"
)

// Rados keeps each object as a RADOS object in one pool.
type Rados struct {
	name  string // for String: pool and monitors, never secrets
	conn  *rados.Conn
	ioctx *rados.IOContext
}

// openRados parses rados://POOL?conf=...|mon_host=...&user=... and connects.
func openRados(ctx context.Context, rawURL string, u *url.URL) (Store, error) {
	pool := u.Host
	if pool == "" {
		pool = strings.Trim(u.Path, "/")
	}
	if pool == "" || strings.Contains(pool, "/") {
		return nil, fmt.Errorf("storage URL %q: missing or bad pool name, want rados://POOL?...\n%s", rawURL, Forms)
	}
	q := u.Query()
	user := "admin"
	connectTimeout, opTimeout := 30*time.Second, 30*time.Second
	var conf, monHost, keyring, key, ns string
	for k, v := range q {
		val := v[0]
		var err error
		switch k {
		case "conf":
			conf = val
		case "mon_host":
			monHost = val
		case "user":
			user = strings.TrimPrefix(val, "client.")
		case "keyring":
			keyring = val
		case "key":
			key = val
		case "namespace":
			ns = val
		case "connect_timeout":
			connectTimeout, err = time.ParseDuration(val)
		case "op_timeout":
			opTimeout, err = time.ParseDuration(val)
		default:
			return nil, fmt.Errorf("storage URL %q: unknown option %q for rados storage\n%s", redact(u), k, Forms)
		}
		if err != nil {
			return nil, fmt.Errorf("storage URL %q: %s=%q: %v (want a duration like 30s)", redact(u), k, val, err)
		}
	}
	if conf == "" && monHost == "" {
		return nil, fmt.Errorf("storage URL %q: name the cluster with conf=/etc/ceph/ceph.conf or mon_host=HOST:PORT\n%s", redact(u), Forms)
	}
	conn, err := rados.NewConnWithUser(user)
	if err != nil {
		return nil, fmt.Errorf("rados: new connection for client.%s: %w", user, err)
	}
	fail := func(format string, args ...any) (Store, error) {
		conn.Shutdown()
		return nil, fmt.Errorf(format, args...)
	}
	if conf != "" {
		if err := conn.ReadConfigFile(conf); err != nil {
			return fail("rados: read config %s: %w", conf, err)
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
	if keyring != "" {
		set["keyring"] = keyring
	}
	if key != "" {
		set["key"] = key
	}
	for k, v := range set {
		if err := conn.SetConfigOption(k, v); err != nil {
			return fail("rados: set %s: %w", k, err)
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
			return fail("rados: connect to monitors %q as client.%s: %w (is the cluster up and reachable, and auth right?)", mons, user, err)
		}
	case <-cctx.Done():
		// Connect is still running in librados; it ends with client_mount_timeout.
		go func() {
			if <-done == nil {
				conn.Shutdown()
			}
		}()
		return nil, fmt.Errorf("rados: connect to monitors %q as client.%s: no answer within %s", mons, user, connectTimeout)
	}
	ioctx, err := conn.OpenIOContext(pool)
	if err != nil {
		return fail("rados: open pool %q on monitors %q: %w (create it: ceph osd pool create %s)", pool, mons, err, pool)
	}
	if ns != "" {
		ioctx.SetNamespace(ns)
	}
	return &Rados{name: "rados://" + pool + "?mon_host=" + mons, conn: conn, ioctx: ioctx}, nil
}

// redact drops secrets from a URL for error messages.
func redact(u *url.URL) string {
	c := *u
	q := c.Query()
	if q.Has("key") {
		q.Set("key", "REDACTED")
	}
	c.RawQuery = q.Encode()
	return c.String()
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
