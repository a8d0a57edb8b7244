// Package testkit holds what every real-component test needs alike: child processes that die
// with the test binary, polling until a condition holds, and the tail of a log.
package testkit

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Proc is a child process started by Start.
type Proc struct {
	Name string
	Pid  int
	proc *os.Process
	done chan struct{}
	err  error // from Wait, valid once done is closed
}

// Start starts cmd in a process group of its own (a Ctrl-C at the terminal reaches only the
// test binary) with Pdeathsig SIGKILL, so the child dies with a test binary that crashes
// before its cleanup. Pdeathsig fires when the *thread* that forked the child ends, and Go ends
// threads whose goroutine exits while locked (namespace-switching test code does that on
// purpose): the child is forked and waited for on one locked OS thread, which stays until it
// is reaped.
func Start(cmd *exec.Cmd) (*Proc, error) {
	p := &Proc{Name: filepath.Base(cmd.Path), done: make(chan struct{})}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid, cmd.SysProcAttr.Pdeathsig = true, syscall.SIGKILL
	started := make(chan error)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- fmt.Errorf("start %s: %w", p.Name, err)
			return
		}
		p.proc, p.Pid = cmd.Process, cmd.Process.Pid
		started <- nil
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return p, nil
}

// Done is closed once the process has been reaped.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has been reaped.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err is how the process ended (nil: exit status 0); only once Done is closed.
func (p *Proc) Err() error { return p.err }

// State says how the process ended, or that it still runs.
func (p *Proc) State() string {
	switch {
	case !p.Exited():
		return fmt.Sprintf("%s still running as pid %d", p.Name, p.Pid)
	case p.err == nil:
		return fmt.Sprintf("%s exited: exit status 0", p.Name)
	}
	return fmt.Sprintf("%s exited: %v", p.Name, p.err)
}

// Signal sends sig unless the process has been reaped: os.Process signals through a pidfd, so
// a process that got the PID since is never hit.
func (p *Proc) Signal(sig syscall.Signal) error {
	if err := p.proc.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal %s (pid %d): %w", p.Name, p.Pid, err)
	}
	return nil
}

// Wait waits up to within for the process to exit and returns its exit code; an error when it
// still runs or a signal ended it.
func (p *Proc) Wait(within time.Duration) (int, error) {
	select {
	case <-p.done:
	case <-time.After(within):
		return -1, fmt.Errorf("%s (pid %d) still running after %s", p.Name, p.Pid, within)
	}
	var ee *exec.ExitError
	switch {
	case p.err == nil:
		return 0, nil
	case errors.As(p.err, &ee) && ee.ExitCode() >= 0:
		return ee.ExitCode(), nil
	}
	return -1, fmt.Errorf("%s (pid %d) ended: %w", p.Name, p.Pid, p.err)
}

// Stop sends SIGTERM and, when the process outlives grace, SIGKILL; it returns once the
// process has been reaped, with an error when SIGKILL was needed.
func (p *Proc) Stop(grace time.Duration) error {
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	if err := p.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	<-p.done
	return fmt.Errorf("%s (pid %d) killed: still running %s after SIGTERM", p.Name, p.Pid, grace)
}

// Kill ends the process with SIGKILL and waits until it has been reaped.
func (p *Proc) Kill() error {
	if err := p.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	<-p.done
	return nil
}

// Eventually polls cond every 50 ms until it returns "" or within has passed, then fails the
// test with cond's last complaint.
func Eventually(t testing.TB, within time.Duration, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		msg := cond()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", within, msg)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// LastLines returns the last n lines of s.
func LastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// Tail returns the last n lines of a log file, or why it cannot.
func Tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(read %s: %v)", path, err)
	}
	return LastLines(string(data), n)
}

// RootEnv is set to 1 by hack/test.sh, which runs the suite as root: there a test that needs
// root and finds none fails instead of skipping, so that no real-component test is silently lost.
const RootEnv = "CALICO_PREP_TEST_AS_ROOT"

// NeedsRoot skips t, saying why, when the test does not run as root; under RootEnv=1 it fails.
func NeedsRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv(RootEnv) == "1" {
		t.Fatalf("needs root (%s), and %s=1 says the suite runs as root", why, RootEnv)
	}
	t.Skipf("needs root: %s", why)
}

// Context is a context for a test's calls to real daemons: it ends after within, or when the
// test and its cleanups are over, so cleanups may still use it.
func Context(t testing.TB, within time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	t.Cleanup(cancel)
	return ctx
}
