//go:build !linux

package webhook

import (
	"errors"
	"syscall"
)

// reusePortControl: sharing a port between replicas is implemented for
// Linux only.
func reusePortControl(_, _ string, _ syscall.RawConn) error {
	return errors.New("--reuse-port is supported on Linux only")
}
