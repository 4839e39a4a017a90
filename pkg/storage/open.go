package storage

import (
	"context"
	"fmt"
	"net/url"
	"path"
	"strings"

	"podfs.io/podfs/pkg/redact"
)

// Forms lists the storage URLs Open accepts, for error messages and help.
const Forms = `accepted storage URLs:
  file:///var/lib/podfs/data[?fsync=true|false][&direct=true|false][&journal=true|false][&remote=true|false]
                                                           local directory (default; fsync=true, direct=true:
                                                           objects of 1 MiB and more bypass the page cache;
                                                           journal=true: with fsync, smaller objects are made
                                                           durable in a journal under .podfs-journal and moved
                                                           to their files later; off unless the URL says
                                                           journal=true for mounts of etcd/TiKV volumes and
                                                           of bolt volumes with a --sync-delay; remote=true:
                                                           a network file system, cached like an object store)
  rados://POOL?conf=/etc/ceph/ceph.conf&user=admin         Ceph RADOS with a ceph.conf
  rados://POOL?mon_host=127.0.0.1:6789&user=podfs&keyring=/etc/podfs/ceph/keyring
                                                           Ceph RADOS without a ceph.conf
      (the user's key: keyring=PATH, or keyfile=PATH (a file holding the bare key), or
       key=SECRET (discouraged: the URL is stored in the volume's metadata);
       optional: connect_timeout=30s, op_timeout=30s, namespace=NS)
  mem://[NAME]                                             memory, for tests only`

// Open connects to the object store named by rawURL.
// Errors show the URL redacted (pkg/redact).
func Open(ctx context.Context, rawURL string) (Store, error) {
	shown := redact.URL(rawURL)
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("parse storage URL %q: %v\n%s", shown, redact.Text(err.Error()), Forms)
	}
	switch u.Scheme {
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return nil, fmt.Errorf("storage URL %q: file URLs name a local path, file:///dir (three slashes), not host %q\n%s", shown, u.Host, Forms)
		}
		if u.Path == "" || !path.IsAbs(u.Path) {
			return nil, fmt.Errorf("storage URL %q: missing absolute directory, want file:///dir\n%s", shown, Forms)
		}
		// The small-object journal is on by default (see journal.go); pkg/fs
		// TestCrashAndRecover kills a mount during a write storm with it on
		// and off. Mounts of shared volumes, and of the embedded engine with
		// a sync delay, ask for journal=false unless the URL says (see
		// SharedURL, and pkg/fs New).
		opts := FileOptions{Fsync: true}
		for k, v := range u.Query() {
			switch k {
			case "fsync":
				on, err := urlBool(shown, k, v[0])
				if err != nil {
					return nil, err
				}
				opts.Fsync = on
			case "direct":
				on, err := urlBool(shown, k, v[0])
				if err != nil {
					return nil, err
				}
				opts.Buffered = !on
			case "journal":
				on, err := urlBool(shown, k, v[0])
				if err != nil {
					return nil, err
				}
				opts.NoJournal = !on
			case "remote":
				on, err := urlBool(rawURL, k, v[0])
				if err != nil {
					return nil, err
				}
				opts.Remote = on
			default:
				return nil, fmt.Errorf("storage URL %q: unknown option %q for file storage (known: fsync, direct, journal, remote)\n%s", shown, k, Forms)
			}
		}
		return NewFile(u.Path, opts)
	case "rados":
		return openRados(ctx, rawURL, u)
	case "mem":
		return NewMem(u.Host + u.Path), nil
	case "":
		return nil, fmt.Errorf("storage URL %q has no scheme\n%s", shown, Forms)
	default:
		return nil, fmt.Errorf("storage URL %q: unknown scheme %q\n%s", shown, u.Scheme, Forms)
	}
}

// SharedURL returns the storage URL for a store that several mounts use at
// once (metadata in etcd or TiKV): for a file URL that does not say
// otherwise, journal=false, since a journal would hide each mount's new
// objects from the others until it spilled them. Other URLs are returned
// as they are.
func SharedURL(rawURL string) string {
	return DefaultFileOption(rawURL, "journal", "false")
}

// checkKey rejects keys that are not clean relative slash-separated paths, so
// no backend can be led outside its directory or pool prefix.
func checkKey(key string) error {
	if key == "" {
		return fmt.Errorf("empty object key")
	}
	if strings.HasPrefix(key, "/") || strings.HasSuffix(key, "/") {
		return fmt.Errorf("object key %q: must not start or end with '/'", key)
	}
	for _, part := range strings.Split(key, "/") {
		if part == "" || part == "." || part == ".." || strings.HasPrefix(part, tmpPrefix) || strings.HasPrefix(part, journalDir) {
			return fmt.Errorf("object key %q: empty, '.', '..' or reserved %q or %q component", key, tmpPrefix, journalDir)
		}
	}
	return nil
}

// urlBool reads a boolean URL option; a bare key ("?fsync") means true.
func urlBool(rawURL, key, v string) (bool, error) {
	switch strings.ToLower(v) {
	case "true", "1", "yes", "":
		return true, nil
	case "false", "0", "no":
		return false, nil
	}
	return false, fmt.Errorf("storage URL %q: %s=%q, want true or false", rawURL, key, v)
}
