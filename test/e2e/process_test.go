package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/calico-prep/calico-prep/test/testbed"
	"github.com/calico-prep/calico-prep/test/testkit"
)

// agentProc is one agent process running inside a node.
type agentProc struct {
	*testkit.Proc
	t       testing.TB
	node    *testbed.Node
	started time.Time // just before the fork
	logPath string
}

// startAgent starts the agent binary with args in the node's network namespace (nsenter
// --net, which execs it under the PID it started with) and the node's system bus, checks that
// it landed in the node's namespace, and stops it at cleanup, before the node goes.
func startAgent(t testing.TB, node *testbed.Node, args ...string) *agentProc {
	t.Helper()
	return startAgentEnv(t, node, nil, args...)
}

// startAgentEnv is startAgent with more environment variables (KEY=VALUE), as calico-node's
// env block gives them.
func startAgentEnv(t testing.TB, node *testbed.Node, env []string, args ...string) *agentProc {
	t.Helper()
	a, err := launchAgentEnv(t, node, env, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if a.Exited() {
			return
		}
		if err := a.Stop(10 * time.Second); err != nil {
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
	return launchAgentEnv(t, node, nil, args...)
}

func launchAgentEnv(t testing.TB, node *testbed.Node, env []string, args ...string) (*agentProc, error) {
	logf, err := os.CreateTemp(t.TempDir(), "agent-*.log")
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command("nsenter", append([]string{"--net=" + node.NetNS, "--", agentBin}, args...)...)
	cmd.Env = append([]string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "DBUS_SYSTEM_BUS_ADDRESS=" + node.BusAddress}, env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	a := &agentProc{t: t, node: node, logPath: logf.Name(), started: time.Now()}
	if a.Proc, err = testkit.Start(cmd); err != nil {
		return nil, fmt.Errorf("start agent: %w", err)
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
		err := syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", a.Pid), &got)
		if err == nil && got.Ino == want.Ino {
			return nil
		}
		if a.Exited() {
			return fmt.Errorf("agent exited at once (%v):\n%s", a.State(), a.logTail(20))
		}
		if time.Now().After(deadline) {
			_ = a.Kill()
			if err != nil {
				return fmt.Errorf("agent (pid %d): read its network namespace: %w: killed", a.Pid, err)
			}
			return fmt.Errorf("agent (pid %d) is in network namespace net:[%d], not the node's net:[%d]: killed", a.Pid, got.Ino, want.Ino)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (a *agentProc) log() string {
	b, err := os.ReadFile(a.logPath)
	if err != nil {
		return fmt.Sprintf("(read agent log: %v)", err)
	}
	return string(b)
}

func (a *agentProc) logTail(n int) string { return testkit.LastLines(a.log(), n) }

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
	testkit.Eventually(a.t, wait, func() string {
		if a.Exited() {
			a.t.Fatalf("agent exited (%s):\n%s", a.State(), a.logTail(20))
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
	status, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(a.Pid), "status"))
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
	rollup, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(a.Pid), "smaps_rollup"))
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
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(a.Pid), "stat"))
	if err != nil {
		return u, err
	}
	// pid (comm) state ppid … utime is field 14, stime 15; comm may hold spaces.
	rest := string(stat[strings.LastIndexByte(string(stat), ')')+1:])
	f := strings.Fields(rest)
	if len(f) < 13 {
		return u, fmt.Errorf("parse /proc/%d/stat: %q", a.Pid, stat)
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
	code, err := a.Wait(within)
	if err != nil {
		_ = a.Stop(5 * time.Second)
		t.Fatalf("%v:\n%s", err, a.logTail(20))
	}
	return code, a.log()
}
