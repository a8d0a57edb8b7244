package testbed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/calico-prep/calico-prep/test/testkit"
)

// launcherRefused is the launcher's exit status when its namespace check fails.
const launcherRefused = 97

// launchScript runs as sh -c inside the node's network namespace and a fresh private mount
// namespace. Its arguments: Dir, the node's netns inode, the host's netns inodes and mount
// namespace inodes (space-separated), then the daemon's argv. It checks the namespaces before
// the first mount (a bind mount in the host's mount namespace would cover the host's /run),
// covers the daemon's paths with Dir's (and, for a daemon built from upstream, Debian's files
// with the build's, from $TESTBED_BINDS), mounts the namespace's own sysfs read-only, checks
// again and execs the daemon under its own PID.
const launchScript = `set -eu
dir=$1 want=$2 hostnet=$3 hostmnt=$4
shift 4
refuse() {
	echo "testbed-launch: refusing to start $1: $2" >&2
	exit 97
}
check() {
	net=$(readlink /proc/$$/ns/net)
	mnt=$(readlink /proc/$$/ns/mnt)
	for i in $hostmnt; do
		[ "$mnt" != "mnt:[$i]" ] || refuse "$1" "it would share the host mount namespace $mnt"
	done
	for i in $hostnet; do
		[ "$net" != "net:[$i]" ] || refuse "$1" "it would run in the host network namespace $net"
	done
	[ "$net" = "net:[$want]" ] || refuse "$1" "it would run in network namespace $net, not the node's net:[$want]"
}
check "$1"
for p in %s; do
	mount -n --bind "$dir$p" "$p"
done
# A daemon built from upstream (hack/build-upstream.sh) covers Debian's files: SOURCE=TARGET pairs.
for b in ${TESTBED_BINDS:-}; do
	mount -n --bind "${b%%%%=*}" "${b#*=}"
done
mount -n -t sysfs -o ro,nosuid,nodev,noexec sysfs /sys
check "$1"
exec "$@"
`

// daemon is a process the node started, under the name it is known by ("firewalld").
type daemon = testkit.Proc

// launchExtra is what a daemon needs beyond the node's private directories.
type launchExtra struct {
	// env is added to the daemon's environment.
	env []string
	// binds are host paths the launcher covers, target → source, in the daemon's mount
	// namespace only.
	binds map[string]string
}

// checkNetNS refuses to start name unless the node's network namespace is its own and not
// the host's, and returns that namespace's inode and the host's namespaces. Start functions
// call it before they build or write anything.
func (n *Node) checkNetNS(name string) (uint64, map[uint64]bool, error) {
	if n.NetNS == "" || n.Dir == "" {
		return 0, nil, fmt.Errorf("start %s: node has no namespace or directory", name)
	}
	ino, err := nsInode(n.NetNS)
	if err != nil {
		return 0, nil, fmt.Errorf("start %s: %w", name, err)
	}
	hostNet, err := hostNamespaces("net")
	if err != nil {
		return 0, nil, fmt.Errorf("start %s: %w", name, err)
	}
	if hostNet[ino] {
		return 0, nil, fmt.Errorf("start %s in %q (net:[%d]): %w", name, n.NetNS, ino, ErrHostNetNS)
	}
	if n.netnsIno != 0 && ino != n.netnsIno {
		return 0, nil, fmt.Errorf("start %s in %q (net:[%d]): the node's namespace is net:[%d]: %w", name, n.NetNS, ino, n.netnsIno, ErrHostNetNS)
	}
	return ino, hostNet, nil
}

// launch starts argv inside the node: a network namespace that is not the host's (checked
// here and again by the launcher right before exec) and a private mount namespace.
func (n *Node) launch(name string, extra launchExtra, argv ...string) (*daemon, error) {
	ino, hostNet, err := n.checkNetNS(name)
	if err != nil {
		return nil, err
	}
	hostMnt, err := hostNamespaces("mnt")
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	for _, p := range privateMounts() {
		// The launcher can only cover paths that exist; creating them would change the host.
		if _, err := os.Lstat(p); err != nil {
			return nil, fmt.Errorf("start %s: the host has no %q to cover with a private copy: %w", name, p, err)
		}
	}
	var binds []string
	for target, source := range extra.binds {
		for _, p := range []string{target, source} {
			if _, err := os.Stat(p); err != nil {
				return nil, fmt.Errorf("start %s: cannot cover %q with %q: %w", name, target, source, err)
			}
			if strings.ContainsAny(p, " \t\n=") {
				return nil, fmt.Errorf("start %s: path %q holds a blank or '='", name, p)
			}
		}
		binds = append(binds, source+"="+target)
	}
	sort.Strings(binds)
	logf, err := os.OpenFile(n.logPath(name), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("start %s: open log: %w", name, err)
	}
	defer logf.Close()
	fmt.Fprintf(logf, "--- testbed: %s starting %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(argv, " "))

	args := append([]string{"--net=" + n.NetNS, "--", "unshare", "--mount", "--uts", "--propagation", "private", "--"},
		launcherArgv(n.Dir, ino, hostNet, hostMnt, argv)...)
	cmd := exec.Command("nsenter", args...)
	cmd.Dir = "/"
	// A clean environment: nothing of the caller's session leaks into the daemons, and
	// Python must not write bytecode caches into the host's /usr.
	cmd.Env = []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"LANG=C.UTF-8",
		"PYTHONDONTWRITEBYTECODE=1",
		"DBUS_SYSTEM_BUS_ADDRESS=" + n.BusAddress,
		"TESTBED_BINDS=" + strings.Join(binds, " "),
	}
	cmd.Env = append(cmd.Env, extra.env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// In a process group of its own, a terminal's Ctrl-C reaches the CLI, which tears down in
	// order; the daemon dies with a test binary that crashes before its cleanup.
	d, err := testkit.Start(cmd)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	d.Name = name
	return d, nil
}

// launcherArgv is the launcher's command line: sh running launchScript for argv.
func launcherArgv(dir string, want uint64, hostNet, hostMnt map[uint64]bool, argv []string) []string {
	script := fmt.Sprintf(launchScript, strings.Join(privateMounts(), " "))
	return append([]string{"/bin/sh", "-c", script, "testbed-launch",
		dir, strconv.FormatUint(want, 10), joinInodes(hostNet), joinInodes(hostMnt)}, argv...)
}

func joinInodes(set map[uint64]bool) string {
	var s []string
	for ino := range set {
		s = append(s, strconv.FormatUint(ino, 10))
	}
	sort.Strings(s)
	return strings.Join(s, " ")
}

// exitError describes how a daemon ended, with the tail of its log.
func (n *Node) exitError(d *daemon) error {
	var ee *exec.ExitError
	if errors.As(d.Err(), &ee) && ee.ExitCode() == launcherRefused {
		return fmt.Errorf("%s: %w:\n%s", d.Name, ErrHostNetNS, n.LogTail(d.Name, 20))
	}
	status := "exited"
	if d.Err() != nil {
		status = d.Err().Error()
	}
	return fmt.Errorf("%s (pid %d) ended early (%s); tail of %s:\n%s", d.Name, d.Pid, status, n.logPath(d.Name), n.LogTail(d.Name, 20))
}

// signal sends sig to a daemon after checking that the process is still unreaped (so its PID
// is its own) and lives in the node's network namespace. A process that has not yet entered
// the namespace is given a moment: nsenter either enters or exits.
func (n *Node) signal(d *daemon, sig syscall.Signal) error {
	deadline := time.Now().Add(2 * time.Second)
	for {
		if d.Exited() {
			return nil
		}
		ino, err := pidNetNS(d.Pid)
		if err == nil && ino == n.netnsIno {
			break
		}
		if time.Now().After(deadline) {
			if err != nil {
				return fmt.Errorf("not signalling %s (pid %d): cannot read its network namespace: %w", d.Name, d.Pid, err)
			}
			return fmt.Errorf("not signalling %s (pid %d): it is in net:[%d], not the node's network namespace net:[%d]", d.Name, d.Pid, ino, n.netnsIno)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return d.Signal(sig)
}

// stop ends a daemon with sig, escalating to SIGKILL when it outlives grace or ctx, and
// waits until it has been reaped.
func (n *Node) stop(ctx context.Context, d *daemon, sig syscall.Signal, grace time.Duration) error {
	if err := n.signal(d, sig); err != nil {
		return err
	}
	timer := time.NewTimer(grace)
	defer timer.Stop()
	var late error
	select {
	case <-d.Done():
		return nil
	case <-timer.C:
		late = fmt.Errorf("stop %s (pid %d): still running %s after %s", d.Name, d.Pid, grace, sig)
	case <-ctx.Done():
		late = fmt.Errorf("stop %s (pid %d): %w", d.Name, d.Pid, ctx.Err())
	}
	if err := n.signal(d, syscall.SIGKILL); err != nil {
		return errors.Join(late, err)
	}
	select {
	case <-d.Done():
		return late
	case <-time.After(10 * time.Second):
		return errors.Join(late, fmt.Errorf("stop %s (pid %d): not reaped after SIGKILL", d.Name, d.Pid))
	}
}

func pidNetNS(pid int) (uint64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// procEntry is one process of /proc.
type procEntry struct {
	pid, ppid int
	comm      string
}

func processes() ([]procEntry, error) {
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	var ps []procEntry
	for _, e := range dirs {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid …; comm may hold spaces and parentheses.
		lp, rp := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
		if lp < 0 || rp < lp {
			continue
		}
		f := strings.Fields(string(b[rp+1:]))
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		ps = append(ps, procEntry{pid: pid, ppid: ppid, comm: string(b[lp+1 : rp])})
	}
	return ps, nil
}

// descendants are the live descendants of the given PIDs.
func descendants(ps []procEntry, roots []int) []procEntry {
	children := map[int][]procEntry{}
	for _, p := range ps {
		children[p.ppid] = append(children[p.ppid], p)
	}
	var out []procEntry
	queue := append([]int(nil), roots...)
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		for _, c := range children[pid] {
			out = append(out, c)
			queue = append(queue, c.pid)
		}
	}
	return out
}

func (n *Node) logPath(name string) string { return filepath.Join(n.LogDir, name+".log") }

// LogTail returns the last lines of a daemon's log ("dbus", "firewalld", "NetworkManager"),
// or "" when there is none.
func (n *Node) LogTail(name string, lines int) string {
	if n.LogDir == "" {
		return ""
	}
	b, err := os.ReadFile(n.logPath(name))
	if errors.Is(err, fs.ErrNotExist) || len(b) == 0 {
		return ""
	}
	if err != nil {
		return fmt.Sprintf("(read log: %v)", err)
	}
	return testkit.LastLines(string(b), lines)
}
