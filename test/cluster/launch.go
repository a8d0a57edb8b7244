package cluster

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/calico-prep/calico-prep/test/testbed"
	"github.com/calico-prep/calico-prep/test/testkit"
)

// guardScript is the namespace check every launcher runs before its first mount and again right
// before exec: the process must be in the node's network namespace (net:[$want]), in neither of
// the host's network and mount namespaces, and, once the node's mount namespace exists, in that
// one ($wantmnt, empty before). /proc/self, not /proc/$$: in the node's PID namespace $$ is a PID
// of that namespace, and before the node's /proc is mounted /proc is the host's.
const guardScript = `refuse() {
	echo "cluster-launch: refusing to start $1: $2" >&2
	exit 97
}
check() {
	net=$(readlink /proc/self/ns/net)
	mnt=$(readlink /proc/self/ns/mnt)
	for i in $hostmnt; do
		[ "$mnt" != "mnt:[$i]" ] || refuse "$1" "it would share the host mount namespace $mnt"
	done
	for i in $hostnet; do
		[ "$net" != "net:[$i]" ] || refuse "$1" "it would run in the host network namespace $net"
	done
	[ "$net" = "net:[$want]" ] || refuse "$1" "it would run in network namespace $net, not the node's net:[$want]"
	[ -z "$wantmnt" ] || [ "$mnt" = "mnt:[$wantmnt]" ] || refuse "$1" "it would run in mount namespace $mnt, not the node's mnt:[$wantmnt]"
}
# joincg puts this shell (and so what it execs) into the cgroup $1 in every hierarchy.
joincg() {
	for h in $hierarchies; do
		mkdir -p "$h$1"
		echo $$ > "$h$1/cgroup.procs"
	done
}
`

// rootScript runs as PID 1 of the node's PID namespace: it makes the node's mount namespace
// (see the package doc) with the node's own /proc and execs the node's init, which keeps both.
// Arguments: dir want hostnet hostmnt hierarchies cgroup, then argv. The overlays come first
// (they make the bind targets exist without creating them on the host), /run and /tmp last (the
// node's directory is under /tmp, and /etc/resolv.conf may be a symlink into /run).
const rootScript = `set -eu
dir=$1 want=$2 hostnet=$3 hostmnt=$4 hierarchies=$5 cg=$6 wantmnt=
shift 6
` + guardScript + `
check "$1"
for d in %[1]s; do
	mkdir -p "$dir/overlay$d/upper" "$dir/overlay$d/work"
	mount -n -t overlay overlay -o "lowerdir=$d,upperdir=$dir/overlay$d/upper,workdir=$dir/overlay$d/work" "$d"
done
for p in %[2]s; do
	if [ -d "$dir$p" ]; then mkdir -p "$p"; else [ -e "$p" ] || touch "$p"; fi
	mount -n --bind "$dir$p" "$p"
done
mount -n -t proc -o nosuid,nodev,noexec proc /proc
mkdir -p "$dir/mnt/cgroup"
mount -n --rbind /sys/fs/cgroup "$dir/mnt/cgroup"
mount -n -t sysfs -o ro,nosuid,nodev,noexec sysfs /sys
mount -n --move "$dir/mnt/cgroup" /sys/fs/cgroup
mount -n --bind /proc/sys /proc/sys
mount -n -o remount,bind,ro /proc/sys
mount -n --bind /proc/sys/net /proc/sys/net
mount -n -o remount,bind,rw /proc/sys/net
for f in %[3]s; do
	mount -n --bind "$dir/sysctl/$f" "/proc/sys/$f"
	mount -n -o remount,bind,ro "/proc/sys/$f"
done
mount -n --bind "$dir/run" /run
mount -n --bind "$dir/tmp" /tmp
mount --make-rshared /
joincg "$cg"
check "$1"
exec "$@"
`

// enterScript runs a command in the node's mount and PID namespaces, entered by nsenter, which
// forks into the PID namespace and waits: the command gets SIGTERM when that nsenter ends, so
// stopping the nsenter stops the command. Arguments: want hostnet hostmnt wantmnt hierarchies
// cgroup, then argv.
const enterScript = `set -eu
want=$1 hostnet=$2 hostmnt=$3 wantmnt=$4 hierarchies=$5 cg=$6
shift 6
` + guardScript + `
joincg "$cg"
check "$1"
exec setpriv --pdeathsig TERM -- "$@"
`

// overlays are the host directories whose writes the node keeps in its own directory.
var overlays = []string{"/etc", "/var", "/opt"}

// privatePaths are bound from the node's directory: what kubelet, containerd, kube-proxy and the
// pods this repository deploys (calico-prep, Calico) write, and the test bed's daemons' paths.
// Directories unless a file of that name exists in the node's directory.
var privatePaths = []string{
	"/etc/firewalld", "/etc/NetworkManager", "/var/lib/NetworkManager", "/etc/resolv.conf", "/etc/hostname",
	"/etc/kubernetes", "/etc/containerd", "/etc/cni/net.d", "/opt/cni/bin",
	"/var/lib/kubelet", "/var/lib/containerd", "/var/lib/calico", "/var/lib/calico-prep", "/var/lib/cni",
	"/var/log/pods", "/var/log/containers", "/var/log/calico",
}

// kubeletSysctls are the machine-wide tunables the kubelet checks, with the values it wants
// (pkg/kubelet/cm: setupKernelTunables), under /proc/sys.
var kubeletSysctls = map[string]string{
	"vm/overcommit_memory":      "1",
	"vm/panic_on_oom":           "0",
	"kernel/panic":              "10",
	"kernel/panic_on_oops":      "1",
	"kernel/keys/root_maxkeys":  "1000000",
	"kernel/keys/root_maxbytes": "25000000",
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// env is the environment of everything a node runs.
func env(extraPath string) []string {
	path := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	if extraPath != "" {
		path = extraPath + ":" + path
	}
	return []string{"PATH=" + path, "LANG=C.UTF-8", "HOME=/root"}
}

// nodeLauncher starts the node's processes.
type nodeLauncher struct {
	tb          *testbed.Node
	dir         string // the node's own root, testbed.Node.Dir
	cgroup      string // the node's cgroup root, e.g. /calico-prep-node-ab12cd
	hierarchies []string
	logDir      string
	mntIno      uint64 // the node's mount namespace, once the holder runs
	// holder is the unshare that made the node's namespaces; initPID (a PID of the host) is
	// its child, PID 1 of the node's PID namespace, the node's init.
	holder  *testkit.Proc
	initPID int
}

func (l *nodeLauncher) hostInodes() (net, mnt string, err error) {
	hostNet, err := testbed.HostNamespaces("net")
	if err != nil {
		return "", "", err
	}
	hostMnt, err := testbed.HostNamespaces("mnt")
	if err != nil {
		return "", "", err
	}
	if hostNet[l.tb.NetNSInode()] {
		return "", "", fmt.Errorf("node %s: %w", l.tb.Name, testbed.ErrHostNetNS)
	}
	return joinInodes(hostNet), joinInodes(hostMnt), nil
}

func joinInodes(set map[uint64]bool) string {
	var s []string
	for ino := range set {
		s = append(s, strconv.FormatUint(ino, 10))
	}
	sort.Strings(s)
	return strings.Join(s, " ")
}

// startRoot makes the node's PID and mount namespaces and starts its init, which holds them:
// /proc/1 in the node is the node's init, as on a machine of its own, so a pod that enters the
// mount namespace of PID 1 through a hostPath /proc (Calico's ebpf-bootstrap does) enters the
// node's. When the holder ends, the kernel kills everything in the PID namespace.
func (l *nodeLauncher) startRoot(init string) error {
	hostNet, hostMnt, err := l.hostInodes()
	if err != nil {
		return err
	}
	script := fmt.Sprintf(rootScript, strings.Join(overlays, " "), strings.Join(privatePaths, " "),
		strings.Join(sortedKeys(kubeletSysctls), " "))
	argv := []string{"--net=" + l.tb.NetNS, "--", "unshare", "--mount", "--propagation", "private",
		"--pid", "--fork", "--kill-child", "--",
		"/bin/sh", "-c", script, "cluster-root", l.dir, strconv.FormatUint(l.tb.NetNSInode(), 10), hostNet, hostMnt,
		strings.Join(l.hierarchies, " "), l.cgroup + "/holder", init}
	p, err := l.start("holder", "nsenter", argv, "")
	if err != nil {
		return err
	}
	l.holder = p
	// The node's namespaces are ready once the script has exec'd the init.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if p.Exited() {
			return fmt.Errorf("node %s: mount namespace setup failed (%s):\n%s", l.tb.Name, p.State(), testkit.Tail(l.logPath("holder"), 20))
		}
		children, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", p.Pid, p.Pid))
		if f := strings.Fields(string(children)); len(f) == 1 {
			pid, _ := strconv.Atoi(f[0])
			comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
			if strings.TrimSpace(string(comm)) == filepath.Base(init) {
				ino, err := testbed.NamespaceInode(fmt.Sprintf("/proc/%d/ns/mnt", pid))
				if err != nil {
					return err
				}
				l.mntIno, l.initPID = ino, pid
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("node %s: mount namespace setup still running after 30s:\n%s", l.tb.Name, testkit.Tail(l.logPath("holder"), 20))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// run starts argv in the node's namespaces, in cgroup <root>/<name>, with its output in
// <logDir>/<name>.log.
func (l *nodeLauncher) run(name string, extraPath string, argv ...string) (*testkit.Proc, error) {
	if l.holder == nil || l.holder.Exited() {
		return nil, fmt.Errorf("start %s: node %s has no mount namespace", name, l.tb.Name)
	}
	hostNet, hostMnt, err := l.hostInodes()
	if err != nil {
		return nil, err
	}
	args := append([]string{"--target=" + strconv.Itoa(l.initPID), "--mount", "--net", "--pid", "--",
		"/bin/sh", "-c", enterScript, "cluster-enter", strconv.FormatUint(l.tb.NetNSInode(), 10), hostNet, hostMnt,
		strconv.FormatUint(l.mntIno, 10), strings.Join(l.hierarchies, " "), l.cgroup + "/" + name}, argv...)
	return l.start(name, "nsenter", args, extraPath)
}

func (l *nodeLauncher) logPath(name string) string { return filepath.Join(l.logDir, name+".log") }

func (l *nodeLauncher) start(name, bin string, args []string, extraPath string) (*testkit.Proc, error) {
	logf, err := os.OpenFile(l.logPath(name), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("start %s: open log: %w", name, err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, args...)
	cmd.Dir = "/"
	cmd.Env = env(extraPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	p, err := testkit.Start(cmd)
	if err != nil {
		return nil, fmt.Errorf("start %s on node %s: %w", name, l.tb.Name, err)
	}
	p.Name = name
	return p, nil
}
