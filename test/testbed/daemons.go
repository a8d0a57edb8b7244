package testbed

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/godbus/dbus/v5"
)

const (
	firewalldBusName = "org.fedoraproject.FirewallD1"
	firewalldPath    = "/org/fedoraproject/FirewallD1"
	nmBusName        = "org.freedesktop.NetworkManager"
	nmPath           = "/org/freedesktop/NetworkManager"
	nmDeviceIface    = "org.freedesktop.NetworkManager.Device"

	// nmStateUnknown and nmStateUnmanaged are NMDeviceState values.
	nmStateUnknown   = 0
	nmStateUnmanaged = 10

	stopGrace = 20 * time.Second
	pollEvery = 20 * time.Millisecond
)

// busNameOf is the name a daemon owns once it serves.
func busNameOf(daemon string) string {
	switch daemon {
	case "firewalld":
		return firewalldBusName
	case "NetworkManager":
		return nmBusName
	case "networkd":
		return networkdBusName
	}
	return ""
}

func (n *Node) startBus(ctx context.Context) error {
	d, err := n.startDaemon("dbus", "dbus-daemon",
		"--config-file="+filepath.Join(n.Dir, "etc", "dbus-1", "system.conf"),
		"--nofork", "--nopidfile", "--nosyslog")
	if err != nil {
		return err
	}
	var conn *dbus.Conn
	err = n.waitFor(ctx, d, "the bus to accept connections", func(context.Context) (bool, error) {
		// No dbus.WithContext: godbus closes the connection when that context ends.
		c, err := dbus.Connect(n.BusAddress)
		if err != nil {
			return false, nil
		}
		conn = c
		return true, nil
	})
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.bus = conn
	n.mu.Unlock()
	return nil
}

func (n *Node) startDaemons(ctx context.Context) error {
	if n.opts.Firewalld {
		if err := n.StartFirewalld(ctx); err != nil {
			return err
		}
	}
	if n.opts.Networkd {
		if err := n.StartNetworkd(ctx); err != nil {
			return err
		}
	}
	if !n.opts.NetworkManager {
		return nil
	}
	if err := n.StartNetworkManager(ctx); err != nil {
		return err
	}
	links := []string{n.Uplink}
	if n.opts.Calico {
		links = append(links, CaliVeth)
	}
	return n.waitManaged(ctx, links)
}

// StartFirewalld starts firewalld with the node's private configuration and waits until it
// reports state RUNNING on the bus.
func (n *Node) StartFirewalld(ctx context.Context) error {
	if _, _, err := n.checkNetNS("firewalld"); err != nil {
		return err
	}
	extra, logArgs, err := n.firewalldExtra()
	if err != nil {
		return fmt.Errorf("start firewalld: %w", err)
	}
	argv := append([]string{"firewalld", "--nofork", "--nopid"}, logArgs...)
	if n.opts.Debug {
		argv = append(argv, "--debug=2")
	}
	d, err := n.startDaemonWith("firewalld", extra, argv...)
	if err != nil {
		return err
	}
	return n.waitFor(ctx, d, "firewalld to run", func(ctx context.Context) (bool, error) {
		if ok, err := n.hasOwner(ctx, firewalldBusName); err != nil || !ok {
			return false, err
		}
		v, err := n.property(ctx, firewalldBusName, firewalldPath, firewalldBusName, "state")
		if err != nil {
			return false, nil // serving the name before the object
		}
		s, _ := v.Value().(string)
		return s == "RUNNING", nil
	})
}

// StopFirewalld stops firewalld with SIGTERM (it removes its nftables table, as on a host) and
// waits until it has exited and left the bus. Its permanent configuration stays in
// FirewalldDir for the next StartFirewalld.
func (n *Node) StopFirewalld(ctx context.Context) error {
	return n.stopNamed(ctx, "firewalld", syscall.SIGTERM)
}

// KillFirewalld kills firewalld with SIGKILL, a crash: its nftables table stays behind.
func (n *Node) KillFirewalld(ctx context.Context) error {
	return n.stopNamed(ctx, "firewalld", syscall.SIGKILL)
}

// StartNetworkManager starts NetworkManager with the node's private configuration and waits
// until it has finished starting up.
func (n *Node) StartNetworkManager(ctx context.Context) error {
	// --debug is what makes NetworkManager log to stderr, that is to its log file.
	argv := []string{"NetworkManager", "--no-daemon", "--debug", "--log-level=INFO"}
	if n.opts.Debug {
		argv[3] = "--log-level=DEBUG"
	}
	if _, _, err := n.checkNetNS("NetworkManager"); err != nil {
		return err
	}
	extra, err := n.networkManagerExtra()
	if err != nil {
		return fmt.Errorf("start NetworkManager: %w", err)
	}
	d, err := n.startDaemonWith("NetworkManager", extra, argv...)
	if err != nil {
		return err
	}
	return n.waitFor(ctx, d, "NetworkManager to start up", func(ctx context.Context) (bool, error) {
		if ok, err := n.hasOwner(ctx, nmBusName); err != nil || !ok {
			return false, err
		}
		v, err := n.property(ctx, nmBusName, nmPath, nmBusName, "Startup")
		if err != nil {
			return false, nil
		}
		starting, ok := v.Value().(bool)
		return ok && !starting, nil
	})
}

// StopNetworkManager stops NetworkManager with SIGTERM and waits until it has exited and left
// the bus.
func (n *Node) StopNetworkManager(ctx context.Context) error {
	return n.stopNamed(ctx, "NetworkManager", syscall.SIGTERM)
}

// WaitBusName waits until name has an owner on the node's bus.
func (n *Node) WaitBusName(ctx context.Context, name string) error {
	for {
		ok, err := n.hasOwner(ctx, name)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for bus name %q: %w", name, ctx.Err())
		case <-time.After(pollEvery):
		}
	}
}

// PID returns the PID of a running daemon ("dbus", "firewalld", "NetworkManager"), or 0.
func (n *Node) PID(name string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if d := n.daemons[name]; d != nil && !d.Exited() {
		return d.Pid
	}
	return 0
}

func (n *Node) startDaemon(name string, argv ...string) (*daemon, error) {
	return n.startDaemonWith(name, launchExtra{}, argv...)
}

func (n *Node) startDaemonWith(name string, extra launchExtra, argv ...string) (*daemon, error) {
	n.mu.Lock()
	downed, running := n.downed, n.daemons[name]
	n.mu.Unlock()
	if downed {
		return nil, fmt.Errorf("start %s: node %s is down", name, n.Name)
	}
	if running != nil && !running.Exited() {
		return nil, fmt.Errorf("start %s: already running as pid %d", name, running.Pid)
	}
	d, err := n.launch(name, extra, argv...)
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	n.daemons[name] = d
	n.mu.Unlock()
	return d, nil
}

func (n *Node) stopNamed(ctx context.Context, name string, sig syscall.Signal) error {
	n.mu.Lock()
	d := n.daemons[name]
	n.mu.Unlock()
	if d == nil || d.Exited() {
		return nil
	}
	if err := n.stop(ctx, d, sig, stopGrace); err != nil {
		return err
	}
	// The bus drops the name when it sees the socket close; callers may rely on it.
	if bn := busNameOf(name); bn != "" {
		for {
			ok, err := n.hasOwner(ctx, bn)
			if err != nil || !ok {
				return err
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("wait for %s to leave the bus: %w", name, ctx.Err())
			case <-time.After(pollEvery):
			}
		}
	}
	return nil
}

// waitFor polls cond until it holds, the daemon ends or ctx is done.
func (n *Node) waitFor(ctx context.Context, d *daemon, what string, cond func(context.Context) (bool, error)) error {
	for {
		if d.Exited() {
			return fmt.Errorf("wait for %s: %w", what, n.exitError(d))
		}
		ok, err := cond(ctx)
		if err != nil {
			return fmt.Errorf("wait for %s: %w", what, err)
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w; tail of %s:\n%s", what, ctx.Err(), n.logPath(d.Name), n.LogTail(d.Name, 20))
		case <-d.Done():
		case <-time.After(pollEvery):
		}
	}
}

// waitManaged waits until NetworkManager manages every link (device state neither unknown
// nor unmanaged).
func (n *Node) waitManaged(ctx context.Context, links []string) error {
	for {
		var pending []string
		for _, l := range links {
			st, err := n.deviceState(ctx, l)
			if err != nil || st == nmStateUnknown || st == nmStateUnmanaged {
				pending = append(pending, fmt.Sprintf("%s (state %d, %v)", l, st, err))
			}
		}
		if len(pending) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for NetworkManager to manage %s: %w; tail of NetworkManager.log:\n%s",
				strings.Join(pending, ", "), ctx.Err(), n.LogTail("NetworkManager", 20))
		case <-time.After(pollEvery):
		}
	}
}

// deviceState is NetworkManager's State of a link.
func (n *Node) deviceState(ctx context.Context, link string) (uint32, error) {
	conn, err := n.conn()
	if err != nil {
		return 0, err
	}
	var dev dbus.ObjectPath
	if err := conn.Object(nmBusName, nmPath).CallWithContext(ctx, nmBusName+".GetDeviceByIpIface", 0, link).Store(&dev); err != nil {
		return 0, fmt.Errorf("find NetworkManager device %q: %w", link, err)
	}
	v, err := n.property(ctx, nmBusName, dev, nmDeviceIface, "State")
	if err != nil {
		return 0, err
	}
	st, ok := v.Value().(uint32)
	if !ok {
		return 0, fmt.Errorf("device %q: State is %s, not a uint32", link, v.Signature())
	}
	return st, nil
}

func (n *Node) conn() (*dbus.Conn, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.bus == nil {
		return nil, fmt.Errorf("node %s has no bus connection", n.Name)
	}
	return n.bus, nil
}

func (n *Node) hasOwner(ctx context.Context, name string) (bool, error) {
	conn, err := n.conn()
	if err != nil {
		return false, err
	}
	var ok bool
	if err := conn.BusObject().CallWithContext(ctx, "org.freedesktop.DBus.NameHasOwner", 0, name).Store(&ok); err != nil {
		return false, fmt.Errorf("ask the bus for %q: %w", name, err)
	}
	return ok, nil
}

func (n *Node) property(ctx context.Context, dest string, path dbus.ObjectPath, iface, prop string) (dbus.Variant, error) {
	conn, err := n.conn()
	if err != nil {
		return dbus.Variant{}, err
	}
	var v dbus.Variant
	err = conn.Object(dest, path).CallWithContext(ctx, "org.freedesktop.DBus.Properties.Get", 0, iface, prop).Store(&v)
	if err != nil {
		return dbus.Variant{}, fmt.Errorf("get %s.%s of %s: %w", iface, prop, path, err)
	}
	return v, nil
}

// Down stops the daemons (NetworkManager, firewalld, the bus), ends helpers they left in the
// node, removes the node's namespaces and Dir. It is safe to call more than once.
func (n *Node) Down(ctx context.Context) error {
	n.mu.Lock()
	if n.downed {
		n.mu.Unlock()
		return nil
	}
	n.downed = true
	daemons := map[string]*daemon{}
	for k, v := range n.daemons {
		daemons[k] = v
	}
	bus := n.bus
	n.bus = nil
	n.mu.Unlock()

	var errs []error
	inos := map[uint64]bool{}
	for _, p := range n.owned {
		if ino, err := nsInode(p); err == nil {
			inos[ino] = true
		}
	}
	// Helpers a daemon spawned are reparented when it exits: note them while it lives.
	var roots []int
	for _, d := range daemons {
		if !d.Exited() {
			roots = append(roots, d.Pid)
		}
	}
	var helpers []procEntry
	if len(roots) > 0 {
		ps, err := processes()
		errs = append(errs, err)
		helpers = descendants(ps, roots)
	}
	for _, name := range []string{"NetworkManager", "networkd", "firewalld", "dbus"} {
		if name == "dbus" && bus != nil {
			bus.Close()
		}
		if d := daemons[name]; d != nil {
			errs = append(errs, n.stop(ctx, d, syscall.SIGTERM, stopGrace))
		}
	}
	errs = append(errs, n.endHelpers(helpers, inos))
	for i := len(n.owned) - 1; i >= 0; i-- {
		errs = append(errs, removeNetNS(n.owned[i]))
	}
	if n.madeNetnsDir {
		os.Remove(netnsDir) // fails, as it should, while other namespaces are in it
	}
	if n.Dir != "" {
		errs = append(errs, os.RemoveAll(n.Dir))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("tear down node %s: %w", n.Name, err)
	}
	return nil
}

// endHelpers kills the daemons' descendants that are still in the node's namespaces, then
// reports any other process found there: the test bed did not start those, so it leaves them.
func (n *Node) endHelpers(helpers []procEntry, inos map[uint64]bool) error {
	if len(inos) == 0 {
		return nil
	}
	for _, h := range helpers {
		if ino, err := pidNetNS(h.pid); err == nil && inos[ino] {
			syscall.Kill(h.pid, syscall.SIGKILL)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		ps, err := processes()
		if err != nil {
			return err
		}
		var left []string
		for _, p := range ps {
			if p.pid == os.Getpid() {
				continue // threads inside Do
			}
			if ino, err := pidNetNS(p.pid); err == nil && inos[ino] {
				left = append(left, fmt.Sprintf("%d (%s)", p.pid, p.comm))
			}
		}
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes the test bed did not start are still in the node's namespaces: %s", strings.Join(left, ", "))
		}
		time.Sleep(pollEvery)
	}
}
