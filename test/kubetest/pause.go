package kubetest

import (
	"syscall"
	"testing"
)

// PauseAPIServer stops the apiserver with SIGSTOP, a hang: connections stay open and requests
// wait without an answer until ResumeAPIServer.
func (c *Cluster) PauseAPIServer(t testing.TB) { c.signalAPIServer(t, syscall.SIGSTOP) }

// ResumeAPIServer continues an apiserver that PauseAPIServer stopped.
func (c *Cluster) ResumeAPIServer(t testing.TB) { c.signalAPIServer(t, syscall.SIGCONT) }

func (c *Cluster) signalAPIServer(t testing.TB, sig syscall.Signal) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.apiserver == nil {
		t.Fatalf("signal kube-apiserver with %s: not running", sig)
	}
	if err := c.apiserver.Signal(sig); err != nil {
		t.Fatal(err)
	}
}
