package testbed

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestGuardRefusesHostNetNS asks a node whose namespace is the host's to start each daemon:
// every start must fail with ErrHostNetNS before anything is started.
func TestGuardRefusesHostNetNS(t *testing.T) {
	ctx := testContext(t)
	// A second name for the host's namespace: the guard compares inodes, not paths.
	alias := filepath.Join(t.TempDir(), "hostnet")
	if err := os.WriteFile(alias, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("/proc/self/ns/net", alias, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(alias, unix.MNT_DETACH) })

	starts := []struct {
		name  string
		start func(*Node) error
	}{
		{"firewalld", func(n *Node) error { return n.StartFirewalld(ctx) }},
		{"NetworkManager", func(n *Node) error { return n.StartNetworkManager(ctx) }},
		{"dbus", func(n *Node) error { return n.startBus(ctx) }},
	}
	for _, netns := range []string{"/proc/self/ns/net", "/proc/thread-self/ns/net", alias} {
		for _, s := range starts {
			name, start := s.name, s.start
			t.Run(name+" in "+netns, func(t *testing.T) {
				dir := t.TempDir()
				n := &Node{Name: "guard", NetNS: netns, Dir: dir, LogDir: dir, BusAddress: "unix:path=" + dir + "/bus", daemons: map[string]*daemon{}}
				before := childrenOf(t, os.Getpid())
				err := start(n)
				if !errors.Is(err, ErrHostNetNS) {
					t.Fatalf("start = %v, want ErrHostNetNS", err)
				}
				if after := childrenOf(t, os.Getpid()); !slices.Equal(before, after) {
					t.Errorf("children changed from %v to %v", before, after)
				}
				if n.PID(name) != 0 {
					t.Errorf("%s has a PID", name)
				}
				if entries, _ := os.ReadDir(dir); len(entries) != 0 {
					t.Errorf("the refused start wrote %v", entries)
				}
			})
		}
	}
}

// TestLauncherRefusesHostNamespaces runs the launcher itself, without the Go-side check, in
// the host's mount namespace, the host's network namespace and a namespace that is not the
// node's: it must refuse before its first mount and never run the command. In the node's
// namespace it runs it.
func TestLauncherRefusesHostNamespaces(t *testing.T) {
	ctx := testContext(t)
	n := Up(t, Options{Name: "launcher"})
	hostNet, err := hostNamespaces("net")
	if err != nil {
		t.Fatal(err)
	}
	hostMnt, err := hostNamespaces("mnt")
	if err != nil {
		t.Fatal(err)
	}
	private := []string{"unshare", "--mount", "--propagation", "private", "--"}
	tests := []struct {
		name    string
		prefix  []string
		refused string
	}{
		{"host mount and network namespace", nil, "host mount namespace"},
		{"host network namespace", private, "host network namespace"},
		{"another namespace", append([]string{"nsenter", "--net=" + n.lanNS(), "--"}, private...), "not the node's"},
		{"node namespace", append([]string{"nsenter", "--net=" + n.NetNS, "--"}, private...), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tmp := t.TempDir()
			marker := filepath.Join(tmp, "ran")
			argv := append(tc.prefix, launcherArgv(n.Dir, n.netnsIno, hostNet, hostMnt, []string{"touch", marker})...)
			cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
			if tc.refused != "" {
				// Should the check ever break, a stand-in mount records the attempt
				// instead of covering the host's /run.
				stub := "#!/bin/sh\necho \"$@\" >> " + filepath.Join(tmp, "mounted") + "\nexit 1\n"
				if err := os.WriteFile(filepath.Join(tmp, "mount"), []byte(stub), 0o755); err != nil {
					t.Fatal(err)
				}
				cmd.Env = append(os.Environ(), "PATH="+tmp+":/usr/sbin:/usr/bin:/sbin:/bin")
			}
			out, err := cmd.CombinedOutput()
			_, statErr := os.Stat(marker)
			if tc.refused == "" {
				if err != nil || statErr != nil {
					t.Fatalf("launcher in the node's namespace: %v, %s; marker: %v", err, out, statErr)
				}
				return
			}
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != launcherRefused || !strings.Contains(string(out), tc.refused) {
				t.Errorf("launcher = %v, %s; want exit %d naming %q", err, out, launcherRefused, tc.refused)
			}
			if statErr == nil {
				t.Error("the launcher ran the command although it refused")
			}
			if tried, err := os.ReadFile(filepath.Join(tmp, "mounted")); err == nil {
				t.Errorf("the launcher tried to mount before refusing: %s", tried)
			}
		})
	}
}

// TestStartFailureCarriesLogTail starts a "daemon" that dies at once: the error must say so
// and quote its log rather than wait for a timeout.
func TestStartFailureCarriesLogTail(t *testing.T) {
	ctx := testContext(t)
	n := Up(t, Options{Name: "fails"})
	d, err := n.startDaemon("firewalld", "sh", "-c", "echo cannot load the zones >&2; exit 3")
	if err != nil {
		t.Fatal(err)
	}
	err = n.waitFor(ctx, d, "firewalld to run", func(context.Context) (bool, error) { return false, nil })
	if err == nil || !strings.Contains(err.Error(), "cannot load the zones") || !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("error = %v, want the exit status and the log tail", err)
	}
}
