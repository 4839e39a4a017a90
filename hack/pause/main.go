// Command pause is the process of every pod sandbox in the e2e cluster (the
// image containerd's sandbox_image names): it holds the pod's namespaces,
// reaps orphans when it is the pod's PID 1, and exits on SIGTERM or SIGINT.
// Built static (CGO_ENABLED=0) so the image needs nothing else.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		// Reap every child that has exited; one SIGCHLD may stand for several.
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
