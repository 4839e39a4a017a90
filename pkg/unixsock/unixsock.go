// Package unixsock opens the unix sockets podfs's components serve on (CSI,
// probes, status) at fixed paths, where a previous process of the same
// component may have left its socket behind.
package unixsock

import (
	"context"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// Listen listens on the unix socket path, creating its directory with
// dirMode. A socket left at path by an earlier process is replaced; any
// other file there is an error, so a mistyped path never deletes data. A
// nonzero mode restricts the socket (say 0o600: whoever can connect to the
// CSI socket can have the node mount as root).
func Listen(path string, dirMode, mode fs.FileMode) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), dirMode); err != nil {
		return nil, fmt.Errorf("socket directory for %s: %w", path, err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("socket %s: the path exists and is not a socket: remove it or choose another path", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove the stale socket %s: %w", path, err)
		}
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if mode != 0 {
		if err := os.Chmod(path, mode); err != nil {
			l.Close()
			return nil, fmt.Errorf("restrict socket %s to %v: %w", path, mode, err)
		}
	}
	return l, nil
}

// HTTPClient is an HTTP client that sends every request to the unix socket
// at path, whatever the URL's host: the probes of a server from Listen.
func HTTPClient(path string, timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
}
