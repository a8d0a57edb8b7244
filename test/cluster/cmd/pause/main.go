// Command pause is the test cluster's sandbox ("pause") image and the cleanup DaemonSet's "done"
// container: it holds a pod's namespaces open, doing nothing until SIGTERM or SIGINT, and reaps
// the children a shared PID namespace hands it as its init. The real one is registry.k8s.io/pause,
// which cannot be pulled here.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sig {
		if s != syscall.SIGCHLD {
			return
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
