// Package networkd keeps Calico's interfaces unmanaged by systemd-networkd: it writes a .network
// file that matches them first with [Link] Unmanaged=yes, applies it live over D-Bus (Reload,
// then a reconfigure of links networkd still holds), proves every Calico link unmanaged, reports
// operator .network files that would still match a Calico link first, and keeps networkd from
// removing routes and routing policy rules it did not create (ManageForeignRoutes=), which would
// delete Calico's BGP routes.
package networkd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/godbus/dbus/v5"

	"github.com/calico-prep/calico-prep/internal/systembus"
)

// D-Bus names of systemd-networkd's API (org.freedesktop.network1(5)).
const (
	BusName         = "org.freedesktop.network1"
	managerPath     = dbus.ObjectPath("/org/freedesktop/network1")
	managerIface    = "org.freedesktop.network1.Manager"
	linkIface       = "org.freedesktop.network1.Link"
	linkPathPrefix  = "/org/freedesktop/network1/link"
	propertiesIface = "org.freedesktop.DBus.Properties"
)

// StateUnmanaged is the AdministrativeState of a link networkd leaves alone.
const StateUnmanaged = "unmanaged"

var (
	// ErrNotRunning means systemd-networkd does not own its name on the bus.
	ErrNotRunning = errors.New("systemd-networkd is not on the bus")
	// ErrStarting means networkd owns its name but has not yet made the object asked for.
	ErrStarting = errors.New("systemd-networkd is starting")
	// ErrDisconnected means the connection to the system bus is gone; dial again.
	ErrDisconnected = errors.New("disconnected from the system bus")
	// ErrNoLink means networkd knows no link of that name.
	ErrNoLink = errors.New("no such networkd link")
)

// Client talks to systemd-networkd over its own connection to the system bus.
type Client struct {
	conn *dbus.Conn
}

// Dial opens a private connection to the system bus at address; "" means
// DBUS_SYSTEM_BUS_ADDRESS, else the standard socket.
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

// Close closes the connection; Watch channels close with it.
func (c *Client) Close() error { return c.conn.Close() }

func (c *Client) call(ctx context.Context, path dbus.ObjectPath, method string, args ...any) *dbus.Call {
	// No auto-start: asking must never start a stopped networkd.
	return c.conn.Object(BusName, path).CallWithContext(ctx, method, dbus.FlagNoAutoStart, args...)
}

// Running reports whether networkd owns its name on the bus.
func (c *Client) Running(ctx context.Context) (bool, error) {
	var has bool
	err := c.conn.BusObject().CallWithContext(ctx, "org.freedesktop.DBus.NameHasOwner", dbus.FlagNoAutoStart, BusName).Store(&has)
	if err != nil {
		return false, wrap("ask the bus for "+BusName, err)
	}
	return has, nil
}

// Owner is the unique bus name of the running networkd, "" when none: it changes with every
// start of networkd.
func (c *Client) Owner(ctx context.Context) (string, error) {
	var owner string
	err := c.conn.BusObject().CallWithContext(ctx, "org.freedesktop.DBus.GetNameOwner", dbus.FlagNoAutoStart, BusName).Store(&owner)
	var de dbus.Error
	if errors.As(err, &de) && de.Name == "org.freedesktop.DBus.Error.NameHasNoOwner" {
		return "", nil
	}
	if err != nil {
		return "", wrap("ask the bus for the owner of "+BusName, err)
	}
	return owner, nil
}

// wrap turns the bus's "nobody owns that name" into ErrNotRunning, "no such object" into
// ErrStarting and a closed or failing connection into ErrDisconnected; the message stays the
// bus's.
func wrap(verb string, err error) error {
	var de dbus.Error
	switch {
	case errors.As(err, &de) && (de.Name == "org.freedesktop.DBus.Error.ServiceUnknown" || de.Name == "org.freedesktop.DBus.Error.NameHasNoOwner"):
		return fmt.Errorf("%s: %w", verb, ErrNotRunning)
	case errors.As(err, &de) && de.Name == "org.freedesktop.DBus.Error.UnknownObject":
		return fmt.Errorf("%s: %w: %w", verb, ErrStarting, err)
	case errors.Is(err, dbus.ErrClosed) || errors.Is(err, io.EOF) || errors.As(err, new(*net.OpError)):
		// The connection closed, or a read or write on the bus socket failed: it is closing.
		return fmt.Errorf("%s: %w: %w", verb, ErrDisconnected, err)
	}
	return fmt.Errorf("%s: %w", verb, err)
}

// Reload makes networkd re-read its .network and .netdev files and apply them to the links whose
// match changed. networkd.conf is read only when networkd starts.
func (c *Client) Reload(ctx context.Context) error {
	if err := c.call(ctx, managerPath, managerIface+".Reload").Err; err != nil {
		return wrap("reload systemd-networkd", err)
	}
	return nil
}

// ReconfigureLink makes networkd match the link against its .network files again and apply the
// result.
func (c *Client) ReconfigureLink(ctx context.Context, index int32) error {
	if err := c.call(ctx, managerPath, managerIface+".ReconfigureLink", index).Err; err != nil {
		return wrap(fmt.Sprintf("reconfigure networkd link %d", index), err)
	}
	return nil
}

// Link is one link networkd knows.
type Link struct {
	Index int32
	Name  string
	path  dbus.ObjectPath
}

// ListLinks returns every link networkd knows, in its order.
func (c *Client) ListLinks(ctx context.Context) ([]Link, error) {
	var raw [][]any
	if err := c.call(ctx, managerPath, managerIface+".ListLinks").Store(&raw); err != nil {
		return nil, wrap("list networkd links", err)
	}
	out := make([]Link, 0, len(raw))
	for _, r := range raw {
		var l Link
		ok := len(r) == 3
		if ok {
			l.Index, ok = r[0].(int32)
		}
		if ok {
			l.Name, ok = r[1].(string)
		}
		if ok {
			l.path, ok = r[2].(dbus.ObjectPath)
		}
		if !ok {
			return nil, fmt.Errorf("list networkd links: entry %v is not (int32, string, object path)", r)
		}
		out = append(out, l)
	}
	return out, nil
}

// GetLinkByName returns the link of that name; ErrNoLink when networkd knows none.
func (c *Client) GetLinkByName(ctx context.Context, name string) (Link, error) {
	l := Link{Name: name}
	err := c.call(ctx, managerPath, managerIface+".GetLinkByName", name).Store(&l.Index, &l.path)
	var de dbus.Error
	if errors.As(err, &de) && de.Name == "org.freedesktop.network1.NoSuchLink" {
		return Link{}, fmt.Errorf("find networkd link %q: %w", name, ErrNoLink)
	}
	if err != nil {
		return Link{}, wrap(fmt.Sprintf("find networkd link %q", name), err)
	}
	return l, nil
}

// AdministrativeState is the link's setup state: "pending", "initialized", "configuring",
// "configured", "unmanaged", "failed" or "linger".
func (c *Client) AdministrativeState(ctx context.Context, l Link) (string, error) {
	var v dbus.Variant
	if err := c.call(ctx, l.path, propertiesIface+".Get", linkIface, "AdministrativeState").Store(&v); err != nil {
		return "", wrap(fmt.Sprintf("read administrative state of %q", l.Name), err)
	}
	s, ok := v.Value().(string)
	if !ok {
		return "", fmt.Errorf("read administrative state of %q: got %s, want a string", l.Name, v.Signature())
	}
	return s, nil
}
