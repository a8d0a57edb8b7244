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
	"runtime"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/calico-prep/calico-prep/internal/netnstest"
)

// ErrHostNetNS is returned when a daemon would have started in the host's network namespace.
var ErrHostNetNS = errors.New("refusing to start a daemon outside the node's network namespace")

// makeNamespaces creates the node's namespace and the uplink's far side. Only namespaces
// recorded in owned are ever removed.
func (n *Node) makeNamespaces(context.Context) error {
	if _, err := os.Stat(netnsDir); errors.Is(err, fs.ErrNotExist) {
		err := os.Mkdir(netnsDir, 0o755)
		if err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("create %q: %w", netnsDir, err)
		}
		n.madeNetnsDir = err == nil
	}
	base := "cpt-" + n.Name + "-" + n.id
	for _, name := range []string{base, base + "-lan"} {
		path := filepath.Join(netnsDir, name)
		if err := netnstest.Pin(path); err != nil {
			return err
		}
		n.owned = append(n.owned, path)
	}
	n.NetNS = n.owned[0]
	ino, err := nsInode(n.NetNS)
	if err != nil {
		return err
	}
	host, err := hostNamespaces("net")
	if err != nil {
		return err
	}
	if host[ino] {
		return fmt.Errorf("new namespace %q: %w", n.NetNS, ErrHostNetNS)
	}
	n.netnsIno = ino
	return nil
}

func (n *Node) lanNS() string { return n.owned[1] }

// nsInode is the inode of a namespace file, which must be on nsfs.
func nsInode(path string) (uint64, error) {
	var sfs unix.Statfs_t
	if err := unix.Statfs(path, &sfs); err != nil {
		return 0, fmt.Errorf("statfs namespace %q: %w", path, err)
	}
	if sfs.Type != unix.NSFS_MAGIC {
		return 0, fmt.Errorf("namespace %q: not a namespace file (filesystem type %#x)", path, sfs.Type)
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("stat namespace %q: %w", path, err)
	}
	return st.Ino, nil
}

// hostNamespaces are the inodes of the namespaces of the given kind ("net", "mnt") that count
// as the host's: PID 1's (unreadable in some sandboxes, then left out), this process's, the
// calling thread's (it may be inside Do) and the parent's.
func hostNamespaces(kind string) (map[uint64]bool, error) {
	set := map[uint64]bool{}
	paths := []string{
		"/proc/self/ns/" + kind,
		"/proc/thread-self/ns/" + kind,
		"/proc/1/ns/" + kind,
		fmt.Sprintf("/proc/%d/ns/%s", os.Getppid(), kind),
	}
	for i, p := range paths {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			if i < 2 {
				return nil, fmt.Errorf("stat %q: %w", p, err)
			}
			continue
		}
		set[st.Ino] = true
	}
	return set, nil
}

// Do runs fn on a locked OS thread inside the node's network namespace: sockets fn opens
// belong to the node.
func (n *Node) Do(fn func() error) error { return InNetNS(n.NetNS, fn) }

// InNetNS runs fn on a locked OS thread inside the network namespace at path, e.g. a pod's.
func InNetNS(path string, fn func() error) error {
	target, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open namespace %q: %w", path, err)
	}
	defer target.Close()
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open own namespace: %w", err)
	}
	defer orig.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter namespace %q: %w", path, err)
	}
	defer func() {
		// A thread that cannot go back stays locked, so Go discards it with the goroutine.
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
	}()
	return fn()
}

// Exec runs a command inside the node's network namespace (nsenter --net; the mount namespace
// stays the caller's) with DBUS_SYSTEM_BUS_ADDRESS set to the node's bus, and returns its
// combined output.
func (n *Node) Exec(ctx context.Context, name string, args ...string) ([]byte, error) {
	return execNS(ctx, n.NetNS, []string{"DBUS_SYSTEM_BUS_ADDRESS=" + n.BusAddress}, nil, name, args...)
}

// ExecNS runs a command inside the network namespace at path, e.g. a pod's, and returns its
// combined output.
func ExecNS(ctx context.Context, path, name string, args ...string) ([]byte, error) {
	return execNS(ctx, path, nil, nil, name, args...)
}

func execNS(ctx context.Context, path string, env []string, stdin []byte, name string, args ...string) ([]byte, error) {
	argv := append([]string{"--net=" + path, "--", name}, args...)
	cmd := exec.CommandContext(ctx, "nsenter", argv...)
	cmd.Env = append(os.Environ(), env...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("run %q in %s: %w: %s", strings.Join(append([]string{name}, args...), " "), filepath.Base(path), err, bytes.TrimSpace(out))
	}
	return out, nil
}

// ipBatch runs iproute2 commands, one per line, in the namespace at path.
func ipBatch(ctx context.Context, path string, lines ...string) error {
	_, err := execNS(ctx, path, nil, []byte(strings.Join(lines, "\n")+"\n"), "ip", "-batch", "-")
	return err
}

// writeSysctl sets a sysctl, given as its path under /proc/sys (slashes, because link names
// hold dots), of the namespace at path; /proc/sys/net belongs to the namespace of the thread
// that opens it.
func writeSysctl(path, key, value string) error {
	return InNetNS(path, func() error {
		if err := os.WriteFile("/proc/sys/"+key, []byte(value), 0o644); err != nil {
			return fmt.Errorf("set sysctl %s=%s: %w", key, value, err)
		}
		return nil
	})
}
