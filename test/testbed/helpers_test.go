package testbed

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/calico-prep/calico-prep/test/testkit"
)

func testContext(t *testing.T) context.Context { return testkit.Context(t, 2*time.Minute) }

func dialBus(t *testing.T, n *Node) *dbus.Conn {
	t.Helper()
	conn, err := dbus.Connect(n.BusAddress)
	if err != nil {
		t.Fatalf("connect to node bus %s: %v", n.BusAddress, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func firewalld(conn *dbus.Conn) dbus.BusObject {
	return conn.Object(firewalldBusName, firewalldPath)
}

func mustExec(t *testing.T, ctx context.Context, n *Node, name string, args ...string) string {
	t.Helper()
	out, err := n.Exec(ctx, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// childrenOf lists the live processes whose parent is pid, as "pid comm".
func childrenOf(t *testing.T, pid int) []string {
	t.Helper()
	ps, err := processes()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range ps {
		if p.ppid == pid {
			out = append(out, fmt.Sprintf("%d %s", p.pid, p.comm))
		}
	}
	return out
}

// hostState is what a node must leave as it found it. Namespaces and mounts of other test
// processes (other packages' nodes, iproute2's /run/netns mount) come and go concurrently,
// so those two lists keep only entries that name this test's node.
type hostState struct {
	netns    []string
	mounts   []string
	children []string
	ruleset  string
	// legacy is the host's iptables-legacy tables, which firewalld's iptables backend would
	// write with an iptables set to the legacy alternative.
	legacy   string
	files    []string
	hostname string
}

func snapshotHost(t *testing.T, ctx context.Context, nodeName string) hostState {
	t.Helper()
	var s hostState
	out, err := exec.CommandContext(ctx, "ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "cpt-"+nodeName+"-") {
			s.netns = append(s.netns, l)
		}
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(mi), "\n") {
		f := strings.Fields(l)
		if len(f) < 5 {
			continue
		}
		if mp := f[4]; (mp == netnsDir || strings.HasPrefix(mp, netnsDir+"/")) && !strings.Contains(mp, "cpt-"+nodeName+"-") {
			continue
		}
		s.mounts = append(s.mounts, l)
	}
	s.children = childrenOf(t, os.Getpid())
	rs, err := exec.CommandContext(ctx, "nft", "list", "ruleset").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list ruleset (host, read-only): %v: %s", err, rs)
	}
	s.ruleset = string(rs)
	for _, save := range []string{"iptables-legacy-save", "ip6tables-legacy-save"} {
		if _, err := exec.LookPath(save); err != nil {
			continue
		}
		out, err := exec.CommandContext(ctx, save).CombinedOutput()
		if err != nil {
			t.Fatalf("%s (host, read-only): %v: %s", save, err, out)
		}
		s.legacy += stripSaveComments(string(out))
	}
	// What the daemons would write if they escaped their private mounts.
	for _, root := range []string{
		"/etc/firewalld", "/etc/NetworkManager", "/var/lib/NetworkManager", "/etc/resolv.conf",
		"/etc/hostname", "/var/log/firewalld", "/run/dbus", "/run/NetworkManager", "/run/firewalld",
		"/run/mount", "/run/udev", "/usr/lib/python3/dist-packages/firewall",
		"/usr/lib/firewalld", "/usr/sbin/firewalld", "/usr/sbin/NetworkManager", "/usr/libexec",
		"/etc/systemd/network", "/etc/systemd/networkd.conf", "/etc/systemd/networkd.conf.d",
		"/run/systemd/netif", "/run/systemd/network",
		// What Calico writes on a node (test/cluster's TestRealCalico runs it on cluster nodes).
		"/var/lib/calico", "/run/calico", "/run/xtables.lock", "/run/nodeagent", "/opt/cni",
		"/etc/cni", "/var/log/calico", "/var/lib/cni",
	} {
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				s.files = append(s.files, p+" "+err.Error())
				return nil
			}
			fi, err := d.Info()
			if err != nil {
				return nil
			}
			s.files = append(s.files, fmt.Sprintf("%s %v %d %s", p, fi.Mode(), fi.Size(), fi.ModTime().Format(time.RFC3339Nano)))
			return nil
		})
	}
	tmp, err := os.ReadDir(os.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range tmp {
		if strings.HasPrefix(e.Name(), "calico-prep-testbed-"+nodeName+"-") {
			s.files = append(s.files, filepath.Join(os.TempDir(), e.Name()))
		}
	}
	s.hostname, _ = os.Hostname()
	return s
}

func (s hostState) diff(after hostState) string {
	var b strings.Builder
	list := func(what string, before, after []string) {
		for _, l := range after {
			if !slices.Contains(before, l) {
				fmt.Fprintf(&b, "%s added: %s\n", what, l)
			}
		}
		for _, l := range before {
			if !slices.Contains(after, l) {
				fmt.Fprintf(&b, "%s removed: %s\n", what, l)
			}
		}
	}
	list("netns", s.netns, after.netns)
	list("mount", s.mounts, after.mounts)
	list("child process", s.children, after.children)
	list("file", s.files, after.files)
	if s.legacy != after.legacy {
		fmt.Fprintf(&b, "host iptables-legacy tables changed:\nbefore:\n%s\nafter:\n%s\n", s.legacy, after.legacy)
	}
	if s.ruleset != after.ruleset {
		fmt.Fprintf(&b, "host nftables ruleset changed:\nbefore:\n%s\nafter:\n%s\n", s.ruleset, after.ruleset)
	}
	if s.hostname != after.hostname {
		fmt.Fprintf(&b, "hostname changed from %q to %q\n", s.hostname, after.hostname)
	}
	return b.String()
}

// stripSaveComments drops the "# Generated by … on DATE" lines of iptables-save output.
func stripSaveComments(out string) string {
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		if !strings.HasPrefix(l, "#") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}
