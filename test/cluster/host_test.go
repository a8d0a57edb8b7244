package cluster

import (
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// hostState is what the cluster must leave as it found it on the host. Other tests' namespaces
// come and go concurrently, so mounts under /run/netns are left out.
type hostState struct {
	files    []string
	mounts   []string
	rules    map[string]string
	sysctls  map[string]string
	cgroups  []string
	children []string
	// links are the host's links with the names Calico gives its own.
	links []string
}

// hostPaths are what a kubelet, containerd, kube-proxy or the deployed pods would write on a
// host where they escaped their node's mounts (every hostPath of deploy/base, deploy/cleanup and
// Calico's manifest the kubelet may create or a container may write, /var/run being /run; a
// bpffs mounted at /sys/fs/bpf shows in the mounts), and the test bed's daemons' paths.
var hostPaths = []string{
	"/var/lib/kubelet", "/var/lib/containerd", "/run/containerd", "/var/log/pods", "/var/log/containers",
	"/opt/cni", "/etc/cni", "/var/lib/calico", "/run/calico", "/run/xtables.lock", "/var/lib/calico-prep",
	"/var/lib/cni", "/var/log/calico", "/run/nodeagent", "/etc/kubernetes", "/etc/containerd", "/opt/containerd",
	"/opt/nri", "/etc/nri", "/run/nri", "/run/dbus", "/etc/NetworkManager", "/etc/firewalld",
	"/var/lib/NetworkManager", "/run/NetworkManager", "/run/firewalld", "/etc/resolv.conf", "/etc/hostname",
	"/etc/systemd/network", "/etc/systemd/networkd.conf.d", "/run/systemd/network",
}

// globalSysctls are kernel settings of the whole machine (or of the host's network namespace)
// that a kubelet or kube-proxy would write.
var globalSysctls = []string{
	"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes", "net/netfilter/nf_conntrack_max",
	"net/ipv4/ip_forward", "net/ipv4/conf/all/route_localnet", "net/bridge/bridge-nf-call-iptables",
}

func snapshotHost(t *testing.T) hostState {
	t.Helper()
	s := hostState{rules: map[string]string{}, sysctls: map[string]string{}}
	for _, root := range hostPaths {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
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
		if err != nil {
			t.Fatal(err)
		}
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(mi), "\n") {
		if f := strings.Fields(l); len(f) > 4 && !strings.HasPrefix(f[4], "/run/netns") {
			s.mounts = append(s.mounts, strings.Join(f[3:], " ")) // without the mount IDs
		}
	}
	for _, cmd := range [][]string{{"nft", "list", "ruleset"}, {"iptables-save"}, {"ip6tables-save"}, {"iptables-legacy-save"}} {
		out, err := exec.Command(cmd[0], cmd[1:]...).CombinedOutput() // also at Cleanup, when t.Context is done
		if err != nil {
			if _, lookErr := exec.LookPath(cmd[0]); lookErr != nil {
				continue
			}
			t.Fatalf("%s (host, read-only): %v: %s", strings.Join(cmd, " "), err, out)
		}
		s.rules[cmd[0]] = dropComments(string(out))
	}
	for _, k := range globalSysctls {
		v, err := os.ReadFile("/proc/sys/" + k)
		if err != nil {
			v = []byte(err.Error())
		}
		s.sysctls[k] = strings.TrimSpace(string(v))
	}
	hierarchies, err := cgroupHierarchies()
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hierarchies {
		entries, _ := os.ReadDir(h)
		for _, e := range entries {
			// Cluster nodes' cgroup roots, and what a kubelet outside its cgroupRoot would make.
			if strings.HasPrefix(e.Name(), "calico-prep-") || strings.HasPrefix(e.Name(), "kubepods") {
				s.cgroups = append(s.cgroups, filepath.Join(h, e.Name()))
			}
		}
	}
	ifaces, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range ifaces {
		for _, p := range []string{"cali", "tunl", "vxlan.calico", "vxlan-v6.calico", "wireguard.cali", "wg-v6.cali", "bpfin.cali", "bpfout.cali"} {
			if strings.HasPrefix(i.Name, p) {
				s.links = append(s.links, i.Name)
			}
		}
	}
	ps, _ := os.ReadDir("/proc")
	for _, p := range ps {
		stat, err := os.ReadFile(filepath.Join("/proc", p.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid …
		if f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:])); len(f) > 1 && f[1] == fmt.Sprint(os.Getpid()) {
			s.children = append(s.children, p.Name()+" "+string(stat[strings.IndexByte(string(stat), '(')+1:strings.LastIndexByte(string(stat), ')')]))
		}
	}
	return s
}

// dropComments removes the timestamp comments of iptables-save.
func dropComments(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// others leaves out the cgroup roots of clusters other than the one whose nodes have roots
// (other tests' clusters on the same machine come and go).
func (s hostState) others(roots []string) hostState {
	s.cgroups = slices.DeleteFunc(slices.Clone(s.cgroups), func(cg string) bool {
		name := filepath.Base(cg)
		return strings.HasPrefix(name, "calico-prep-") && !slices.Contains(roots, "/"+name)
	})
	return s
}

// diff says what changed; children are compared only when withChildren (the cluster's own
// processes run while it is up).
func (s hostState) diff(after hostState, withChildren bool) string {
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
	list("file", s.files, after.files)
	list("mount", s.mounts, after.mounts)
	list("cgroup", s.cgroups, after.cgroups)
	list("link", s.links, after.links)
	if withChildren {
		list("child process", s.children, after.children)
	}
	for k, v := range s.rules {
		if after.rules[k] != v {
			fmt.Fprintf(&b, "host %s changed:\nbefore:\n%s\nafter:\n%s\n", k, v, after.rules[k])
		}
	}
	for k, v := range s.sysctls {
		if after.sysctls[k] != v {
			fmt.Fprintf(&b, "sysctl %s changed from %q to %q\n", k, v, after.sysctls[k])
		}
	}
	return b.String()
}
