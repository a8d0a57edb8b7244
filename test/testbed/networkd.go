package testbed

import (
	"context"
	"fmt"
	"syscall"

	"github.com/godbus/dbus/v5"
)

const (
	networkdBusName = "org.freedesktop.network1"
	// networkdBinary is Debian's systemd-networkd (package systemd).
	networkdBinary = "/lib/systemd/systemd-networkd"
)

// StartNetworkd starts Debian's systemd-networkd with the node's private /etc/systemd and /run
// and waits until it serves its bus name. It manages the node's links as the .network files
// under NetworkdConfDir say; with none, it leaves every link unmanaged.
func (n *Node) StartNetworkd(ctx context.Context) error {
	level := "info"
	if n.opts.Debug {
		level = "debug"
	}
	env := []string{
		"SYSTEMD_LOG_TARGET=console", "SYSTEMD_LOG_LEVEL=" + level,
		// networkd drops to the systemd-network user, which cannot pass through Dir (0700); the
		// same socket through its private /run can.
		"DBUS_SYSTEM_BUS_ADDRESS=unix:path=/run/dbus/system_bus_socket",
	}
	d, err := n.startDaemonWith("networkd", launchExtra{env: env}, networkdBinary)
	if err != nil {
		return err
	}
	return n.waitFor(ctx, d, "systemd-networkd to serve its bus name", func(ctx context.Context) (bool, error) {
		return n.hasOwner(ctx, networkdBusName)
	})
}

// StopNetworkd stops systemd-networkd with SIGTERM and waits until it has exited and left the bus.
// Links keep the configuration it gave them, as on a host.
func (n *Node) StopNetworkd(ctx context.Context) error {
	return n.stopNamed(ctx, "networkd", syscall.SIGTERM)
}

// NetworkdLinkState is the AdministrativeState networkd reports for a link, read over the bus.
func (n *Node) NetworkdLinkState(ctx context.Context, link string) (string, error) {
	conn, err := n.conn()
	if err != nil {
		return "", err
	}
	var index int32
	var path dbus.ObjectPath
	if err := conn.Object(networkdBusName, "/org/freedesktop/network1").CallWithContext(ctx, networkdBusName+".Manager.GetLinkByName", 0, link).Store(&index, &path); err != nil {
		return "", fmt.Errorf("find networkd link %q: %w", link, err)
	}
	v, err := n.property(ctx, networkdBusName, path, networkdBusName+".Link", "AdministrativeState")
	if err != nil {
		return "", err
	}
	s, ok := v.Value().(string)
	if !ok {
		return "", fmt.Errorf("link %q: AdministrativeState is %s, not a string", link, v.Signature())
	}
	return s, nil
}
