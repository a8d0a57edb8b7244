package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/calico-prep/calico-prep/test/testbed"
)

// agentProc is one agent process running inside a node.
type agentProc struct {
	t       testing.TB
	node    *testbed.Node
	pid     int
	proc    *os.Process
	started time.Time // just before the fork
	logPath string
	done    chan struct{}
	err     error // from Wait, valid once done is closed
}

// startAgent starts the agent binary with args in the node's network namespace (nsenter
// --net, which execs it under the PID it started with) and the node's system bus, checks that
// it landed in the node's namespace, and stops it at cleanup, before the node goes.
func startAgent(t testing.TB, node *testbed.Node, args ...string) *agentProc {
	t.Helper()
	a, err := launchAgent(t, node, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if a.exited() {
			return
		}
		if err := a.stop(10 * time.Second); err != nil {
			t.Errorf("stop agent: %v", err)
		}
		if t.Failed() {
			t.Logf("agent log (last lines):\n%s", a.logTail(40))
		}
	})
	if err := a.checkNamespace(); err != nil {
		t.Fatal(err)
	}
	return a
}

func launchAgent(t testing.TB, node *testbed.Node, args ...string) (*agentProc, error) {
	logf, err := os.CreateTemp(t.TempDir(), "agent-*.log")
	if err != nil {
		return nil, err
	}
	a := &agentProc{t: t, node: node, logPath: logf.Name(), done: make(chan struct{})}
	started := make(chan error)
	// The child is forked and waited for on one locked OS thread: Pdeathsig fires when the
	// thread that forked it ends, and tests switch threads into namespaces, which can make Go
	// retire threads.
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		cmd := exec.Command("nsenter", append([]string{"--net=" + node.NetNS, "--", agentBin}, args...)...)
		cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "DBUS_SYSTEM_BUS_ADDRESS=" + node.BusAddress}
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
		a.started = time.Now()
		if err := cmd.Start(); err != nil {
			logf.Close()
			started <- fmt.Errorf("start agent: %w", err)
			return
		}
		logf.Close()
		a.proc, a.pid = cmd.Process, cmd.Process.Pid
		started <- nil
		a.err = cmd.Wait()
		close(a.done)
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return a, nil
}

// checkNamespace waits until the process is in the node's network namespace (nsenter enters it
// before exec) and fails if it is anywhere else.
func (a *agentProc) checkNamespace() error {
	var want syscall.Stat_t
	if err := syscall.Stat(a.node.NetNS, &want); err != nil {
		return err
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		var got syscall.Stat_t
		err := syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", a.pid), &got)
		if err == nil && got.Ino == want.Ino {
			return nil
		}
		if a.exited() {
			return fmt.Errorf("agent exited at once (%v):\n%s", a.state(), a.logTail(20))
		}
		if time.Now().After(deadline) {
			_ = a.proc.Kill()
			if err != nil {
				return fmt.Errorf("agent (pid %d): read its network namespace: %w: killed", a.pid, err)
			}
			return fmt.Errorf("agent (pid %d) is in network namespace net:[%d], not the node's net:[%d]: killed", a.pid, got.Ino, want.Ino)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// state says how the agent ended, once it has.
func (a *agentProc) state() string {
	if a.err == nil {
		return "exit status 0"
	}
	return a.err.Error()
}

func (a *agentProc) exited() bool {
	select {
	case <-a.done:
		return true
	default:
		return false
	}
}

// signal sends sig to the agent unless it has been reaped (os.Process signals through a
// pidfd, so a reused PID is never hit).
func (a *agentProc) signal(sig syscall.Signal) error {
	if err := a.proc.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal agent (pid %d): %w", a.pid, err)
	}
	return nil
}

// waitExit waits up to within for the agent to exit and returns its exit code.
func (a *agentProc) waitExit(within time.Duration) (int, error) {
	select {
	case <-a.done:
	case <-time.After(within):
		return -1, fmt.Errorf("agent (pid %d) still running after %s", a.pid, within)
	}
	var ee *exec.ExitError
	switch {
	case a.err == nil:
		return 0, nil
	case errors.As(a.err, &ee) && ee.ExitCode() >= 0:
		return ee.ExitCode(), nil
	}
	return -1, fmt.Errorf("agent (pid %d) ended: %w", a.pid, a.err)
}

// stop ends the agent with SIGTERM, and SIGKILL when it outlives grace.
func (a *agentProc) stop(grace time.Duration) error {
	if err := a.signal(syscall.SIGTERM); err != nil {
		return err
	}
	if _, err := a.waitExit(grace); err == nil {
		return nil
	}
	if err := a.signal(syscall.SIGKILL); err != nil {
		return err
	}
	<-a.done
	return fmt.Errorf("agent (pid %d) killed: still running %s after SIGTERM", a.pid, grace)
}

func (a *agentProc) log() string {
	b, err := os.ReadFile(a.logPath)
	if err != nil {
		return fmt.Sprintf("(read agent log: %v)", err)
	}
	return string(b)
}

func (a *agentProc) logTail(n int) string {
	lines := strings.Split(strings.TrimRight(a.log(), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// get fetches a path of the agent's HTTP server, from inside the node.
func (a *agentProc) get(ctx context.Context, path string) (int, string, error) {
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return dialIn(ctx, a.node.NetNS, addr)
		},
	}}
	resp, err := client.Get("http://" + metricsAddr + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// waitHTTP waits until path answers with status code.
func (a *agentProc) waitHTTP(path string, code int) string {
	a.t.Helper()
	var body string
	eventually(a.t, wait, func() string {
		if a.exited() {
			a.t.Fatalf("agent exited (%s):\n%s", a.state(), a.logTail(20))
		}
		got, b, err := a.get(context.Background(), path)
		if err != nil {
			return fmt.Sprintf("GET %s: %v", path, err)
		}
		body = b
		if got != code {
			return fmt.Sprintf("GET %s: %d %q, want %d", path, got, strings.TrimSpace(b), code)
		}
		return ""
	})
	return body
}

// usage is what /proc says about the process: resident memory and CPU time so far.
type usage struct {
	rssKiB, hwmKiB int64
	// anonKiB is the resident memory that is the process' own (heap, stacks); the rest is
	// mapped files, almost all of it the binary.
	anonKiB int64
	cpu     time.Duration // user + system
	threads int
}

// clockTick is USER_HZ, the unit of utime and stime in /proc/PID/stat; 100 on every Linux
// architecture Go supports.
const clockTick = 10 * time.Millisecond

func (a *agentProc) usage() (usage, error) {
	var u usage
	status, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(a.pid), "status"))
	if err != nil {
		return u, err
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, _ := strconv.ParseInt(f[0], 10, 64)
		switch k {
		case "VmRSS":
			u.rssKiB = n
		case "VmHWM":
			u.hwmKiB = n
		case "Threads":
			u.threads = int(n)
		}
	}
	rollup, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(a.pid), "smaps_rollup"))
	if err != nil {
		return u, err
	}
	for line := range strings.SplitSeq(string(rollup), "\n") {
		if v, ok := strings.CutPrefix(line, "Anonymous:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				u.anonKiB, _ = strconv.ParseInt(f[0], 10, 64)
			}
		}
	}
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(a.pid), "stat"))
	if err != nil {
		return u, err
	}
	// pid (comm) state ppid … utime is field 14, stime 15; comm may hold spaces.
	rest := string(stat[strings.LastIndexByte(string(stat), ')')+1:])
	f := strings.Fields(rest)
	if len(f) < 13 {
		return u, fmt.Errorf("parse /proc/%d/stat: %q", a.pid, stat)
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	u.cpu = time.Duration(utime+stime) * clockTick
	return u, nil
}

// runAgent runs the agent to completion (for commands that must exit at once) and returns its
// exit code and output.
func runAgent(t testing.TB, node *testbed.Node, within time.Duration, args ...string) (int, string) {
	t.Helper()
	a, err := launchAgent(t, node, args...)
	if err != nil {
		t.Fatal(err)
	}
	code, err := a.waitExit(within)
	if err != nil {
		_ = a.stop(5 * time.Second)
		t.Fatalf("%v:\n%s", err, a.logTail(20))
	}
	return code, a.log()
}
