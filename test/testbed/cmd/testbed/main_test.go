package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain lets the tests run the command as a child process: the test binary re-executed
// with TESTBED_CLI=1 is the command.
func TestMain(m *testing.M) {
	if os.Getenv("TESTBED_CLI") == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

func TestBadInput(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no subcommand", nil, "usage: testbed up"},
		{"unknown subcommand", []string{"down"}, "usage: testbed up"},
		{"bad address", []string{"up", "--uplink-addr", "bogus"}, `invalid value "bogus" for flag -uplink-addr`},
		{"bad name", []string{"up", "--name", "Demo"}, `invalid Options.Name "Demo"`},
		{"extra argument", []string{"up", "now"}, `unexpected argument "now"`},
		{"state in a missing directory", []string{"up", "--state", "/nonexistent/dir/state.json"}, `invalid --state "/nonexistent/dir/state.json"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(tc.args, &stdout, &stderr); code != 2 {
				t.Errorf("exit %d, want 2", code)
			}
			msg := stderr.String()
			if strings.Count(msg, "\n") != 1 || !strings.Contains(msg, tc.want) {
				t.Errorf("stderr %q, want one line with %q", msg, tc.want)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout %q, want nothing", stdout.String())
			}
		})
	}
}

func TestUpUntilSignal(t *testing.T) {
	state := filepath.Join(t.TempDir(), "node.json")
	cmd := exec.Command(os.Args[0], "up", "--name", "cli", "--firewalld", "--calico", "--state", state)
	cmd.Env = append(os.Environ(), "TESTBED_CLI=1")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		<-done
	})

	var raw []byte
	for deadline := time.Now().Add(time.Minute); ; {
		var err error
		if raw, err = os.ReadFile(state); err == nil {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("command ended before it was up: %v\n%s", err, stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no state file after a minute:\n%s", stderr.String())
		}
	}
	var node struct {
		Name, NetNS, BusAddress, Dir string
		TunlIsStandIn                bool
		Pods                         []struct{ Veth string }
		PIDs                         map[string]int
	}
	if err := json.Unmarshal(raw, &node); err != nil {
		t.Fatalf("state file: %v\n%s", err, raw)
	}
	if node.Name != "cli" || !strings.HasPrefix(node.NetNS, "/run/netns/cpt-cli-") || !strings.HasPrefix(node.BusAddress, "unix:path="+node.Dir+"/") ||
		len(node.Pods) != 1 || node.PIDs["firewalld"] == 0 || node.PIDs["dbus"] == 0 {
		t.Errorf("state file lacks fields:\n%s", raw)
	}
	for _, p := range []string{node.NetNS, node.Dir, filepath.Join("/proc", strconv.Itoa(node.PIDs["firewalld"]))} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("while up: %v", err)
		}
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		done <- err // for the cleanup
		if err != nil {
			t.Fatalf("command ended with %v:\n%s", err, stderr.String())
		}
	case <-time.After(time.Minute):
		t.Fatal("command still running a minute after SIGTERM")
	}
	if !bytes.Equal(bytes.TrimSpace(stdout.Bytes()), bytes.TrimSpace(raw)) {
		t.Errorf("stdout differs from the state file:\n%s", stdout.String())
	}
	for _, p := range []string{node.NetNS, node.Dir, state, filepath.Join("/proc", strconv.Itoa(node.PIDs["firewalld"]))} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after teardown: %v", p, err)
		}
	}
}
