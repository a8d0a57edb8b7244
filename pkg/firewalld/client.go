// Package firewalld makes firewalld and Calico work together on one node: it opens exactly the
// ports and protocols Calico needs in the node's zone, gives Calico's interfaces a zone and
// policy of their own so that pod traffic may be forwarded, keeps both applied through reloads
// and restarts, and removes exactly what it added. It talks to firewalld over D-Bus only.
package firewalld

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/godbus/dbus/v5"

	"github.com/calico-prep/calico-prep/internal/systembus"
)

// D-Bus names of firewalld (https://firewalld.org/documentation/man-pages/firewalld.dbus.html).
const (
	busName         = "org.fedoraproject.FirewallD1"
	objectPath      = dbus.ObjectPath("/org/fedoraproject/FirewallD1")
	configPath      = dbus.ObjectPath("/org/fedoraproject/FirewallD1/config")
	ifaceMain       = "org.fedoraproject.FirewallD1"
	ifaceZone       = "org.fedoraproject.FirewallD1.zone"
	ifacePolicy     = "org.fedoraproject.FirewallD1.policy"
	ifaceConfig     = "org.fedoraproject.FirewallD1.config"
	ifaceConfigZone = "org.fedoraproject.FirewallD1.config.zone"
	ifaceConfigPol  = "org.fedoraproject.FirewallD1.config.policy"
	ifaceProperties = "org.freedesktop.DBus.Properties"
	busDaemonName   = "org.freedesktop.DBus"
	busDaemonPath   = dbus.ObjectPath("/org/freedesktop/DBus")
)

// Client is a connection to the system bus for talking to firewalld. It is safe for concurrent
// use. Its methods map one to one onto firewalld's D-Bus methods; none of them starts firewalld
// through bus activation, so a node where firewalld is installed but stopped stays that way.
type Client struct {
	conn *dbus.Conn
	// changes counts firewalld's signals while watches run (watching of them).
	changes, watching atomic.Int64
}

// Dial opens a private connection to the system bus at address; "" means
// $DBUS_SYSTEM_BUS_ADDRESS, else the default socket. ctx bounds the dial and authentication
// only, not the connection's life. A node without a system bus has no firewalld either: the
// error then also matches ErrNotRunning.
func Dial(ctx context.Context, address string) (*Client, error) {
	conn, err := systembus.Dial(ctx, address)
	if errors.Is(err, systembus.ErrNoBus) {
		return nil, fmt.Errorf("%w: %w", ErrNotRunning, err)
	}
	if err != nil {
		return nil, err
	}
	return &Client{conn: conn}, nil
}

// Close closes the connection; channels returned by Watch are closed with it.
func (c *Client) Close() error { return c.conn.Close() }

// Changes returns a number that moves whenever firewalld may have changed anything: each of its
// signals (firewalld signals every change to its runtime and permanent configuration), a new
// owner of its bus name, each event of a watch. It is 0 while no Watch runs: then nothing read
// from firewalld may be assumed unchanged.
func (c *Client) Changes() uint64 {
	if c.watching.Load() == 0 {
		return 0
	}
	return uint64(c.changes.Load())
}

// call invokes one method on firewalld and stores the reply into out.
func (c *Client) call(ctx context.Context, path dbus.ObjectPath, iface, method string, args []any, out ...any) error {
	return c.callDest(ctx, busName, path, iface, method, args, out...)
}

func (c *Client) callDest(ctx context.Context, dest string, path dbus.ObjectPath, iface, method string, args []any, out ...any) error {
	// NoAutoStart: asking a stopped firewalld a question must not start it.
	call := c.conn.Object(dest, path).CallWithContext(ctx, iface+"."+method, dbus.FlagNoAutoStart, args...)
	if call.Err != nil {
		return mapError(method, call.Err)
	}
	if len(out) == 0 {
		return nil
	}
	if err := call.Store(out...); err != nil {
		return fmt.Errorf("decode reply of firewalld %s: %w", method, err)
	}
	return nil
}

// Running reports whether firewalld owns its name on the bus. It asks the bus, not firewalld,
// so it answers quickly even while firewalld is busy.
func (c *Client) Running(ctx context.Context) (bool, error) {
	var has bool
	if err := c.callDest(ctx, busDaemonName, busDaemonPath, busDaemonName, "NameHasOwner", []any{busName}, &has); err != nil {
		return false, err
	}
	return has, nil
}

// Info is what firewalld says about itself.
type Info struct {
	// Version is firewalld's version, e.g. "1.3.3".
	Version string
	// State is "INIT", "RUNNING" or "FAILED" (the permanent configuration did not load).
	State string
}

// Info reads firewalld's version and state properties in one call.
func (c *Client) Info(ctx context.Context) (Info, error) {
	var props map[string]dbus.Variant
	if err := c.call(ctx, objectPath, ifaceProperties, "GetAll", []any{ifaceMain}, &props); err != nil {
		return Info{}, err
	}
	var info Info
	var err1, err2 error
	info.Version, err1 = variantString(props, "version")
	info.State, err2 = variantString(props, "state")
	if err := errors.Join(err1, err2); err != nil {
		return Info{}, fmt.Errorf("decode firewalld properties: %w", err)
	}
	return info, nil
}

// Reload makes firewalld rebuild its runtime configuration from the permanent one, dropping
// runtime-only changes; it returns after firewalld has emitted Reloaded.
func (c *Client) Reload(ctx context.Context) error {
	return c.call(ctx, objectPath, ifaceMain, "reload", nil)
}
