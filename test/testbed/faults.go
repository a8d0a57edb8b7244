package testbed

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/calico-prep/calico-prep/internal/netnstest"
)

// Faults for soak tests: daemons crashing and the bus restarting, as on a host where systemd
// starts them again.

// KillNetworkManager kills NetworkManager with SIGKILL, a crash, and waits until it has left the
// bus.
func (n *Node) KillNetworkManager(ctx context.Context) error {
	return n.stopNamed(ctx, "NetworkManager", syscall.SIGKILL)
}

// RestartBus restarts the node's dbus-daemon. firewalld and NetworkManager lose the bus with it
// and exit (both quit when their bus connection closes), as on a host; RestartBus then starts
// the daemons that were running again, as systemd would, and returns when they serve.
func (n *Node) RestartBus(ctx context.Context) error {
	n.mu.Lock()
	bus := n.bus
	n.bus = nil
	var running []string
	for _, name := range []string{"firewalld", "NetworkManager"} {
		if d := n.daemons[name]; d != nil && !d.Exited() {
			running = append(running, name)
		}
	}
	d := n.daemons["dbus"]
	n.mu.Unlock()
	if bus != nil {
		bus.Close()
	}
	if d != nil {
		if err := n.stop(ctx, d, syscall.SIGTERM, stopGrace); err != nil {
			return fmt.Errorf("restart the bus: %w", err)
		}
	}
	// The daemons notice the bus go; any that is still around after a while is ended.
	for _, name := range running {
		n.mu.Lock()
		dd := n.daemons[name]
		n.mu.Unlock()
		select {
		case <-dd.Done():
		case <-time.After(5 * time.Second):
			if err := n.stop(ctx, dd, syscall.SIGKILL, stopGrace); err != nil {
				return fmt.Errorf("restart the bus: %s outlived it: %w", name, err)
			}
		case <-ctx.Done():
			return fmt.Errorf("restart the bus: wait for %s to exit: %w", name, ctx.Err())
		}
	}
	if err := n.startBus(ctx); err != nil {
		return fmt.Errorf("restart the bus: %w", err)
	}
	var errs []error
	for _, name := range running {
		switch name {
		case "firewalld":
			errs = append(errs, n.StartFirewalld(ctx))
		case "NetworkManager":
			errs = append(errs, n.StartNetworkManager(ctx))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("restart the bus: %w", err)
	}
	return nil
}

// AddWorkloadVeth adds a cali veth and brings it up, as Calico's CNI plugin does for a pod,
// without a pod behind it: its peer goes to one namespace the node keeps for all such peers.
// Far cheaper than AddCaliVeth, for pod churn; DeleteLink removes it again.
func (n *Node) AddWorkloadVeth(ctx context.Context, name string) error {
	if err := checkLinkName(name); err != nil {
		return fmt.Errorf("invalid veth name %q: %w", name, err)
	}
	peers, err := n.peerNS()
	if err != nil {
		return fmt.Errorf("add veth %q: %w", name, err)
	}
	if err := ipBatch(ctx, n.NetNS,
		fmt.Sprintf("link add %s type veth peer name %s netns %s", name, name, filepath.Base(peers)),
		fmt.Sprintf("link set %s up", name),
	); err != nil {
		return fmt.Errorf("add veth %q: %w", name, err)
	}
	if err := ipBatch(ctx, peers, fmt.Sprintf("link set %s up", name)); err != nil {
		return fmt.Errorf("add veth %q: %w", name, err)
	}
	return nil
}

// DeleteLink deletes a link of the node (a veth's peer goes with it).
func (n *Node) DeleteLink(ctx context.Context, name string) error {
	if err := ipBatch(ctx, n.NetNS, "link del "+name); err != nil {
		return fmt.Errorf("delete link %q: %w", name, err)
	}
	return nil
}

// peerNS is the namespace for AddWorkloadVeth's peers, made on first use; Down removes it.
func (n *Node) peerNS() (string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.downed {
		return "", fmt.Errorf("node %s is down", n.Name)
	}
	path := filepath.Join(netnsDir, fmt.Sprintf("cpt-%s-%s-peers", n.Name, n.id))
	if slices.Contains(n.owned, path) {
		return path, nil
	}
	if err := netnstest.Pin(path); err != nil {
		return "", err
	}
	n.owned = append(n.owned, path)
	return path, nil
}
