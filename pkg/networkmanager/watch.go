package networkmanager

import (
	"context"
	"fmt"

	"github.com/godbus/dbus/v5"

	"github.com/calico-prep/calico-prep/internal/systembus"
)

// EventKind says what happened.
type EventKind string

const (
	// EventStarted: NetworkManager took its bus name (a start or restart). It has re-read its
	// configuration and dropped every runtime Managed switch.
	EventStarted EventKind = "started"
	// EventStopped: NetworkManager left the bus.
	EventStopped EventKind = "stopped"
	// EventDeviceAdded: NetworkManager found a new device.
	EventDeviceAdded EventKind = "device-added"
	// EventDeviceManaged: a device left the unmanaged state, i.e. NetworkManager took it over.
	EventDeviceManaged EventKind = "device-managed"
)

// Event is one change that may undo what calico-prep applied.
type Event struct {
	Kind EventKind
	// Device is the interface name for device events; empty when NetworkManager could not
	// say (the device was gone before its name was read).
	Device string
}

// Watch subscribes to NetworkManager's bus name and to device additions and takeovers. The
// channel closes when ctx ends or the bus connection does; a slow reader delays events, it
// does not lose them (under a backlog their order may change).
func (c *Client) Watch(ctx context.Context) (<-chan Event, error) {
	rules := [][]dbus.MatchOption{
		{dbus.WithMatchSender("org.freedesktop.DBus"), dbus.WithMatchInterface("org.freedesktop.DBus"),
			dbus.WithMatchMember("NameOwnerChanged"), dbus.WithMatchArg(0, BusName)},
		// The sender is NetworkManager's well-known name: the bus matches whoever owns it now,
		// so no other client can trigger passes.
		{dbus.WithMatchSender(BusName), dbus.WithMatchInterface(managerIface), dbus.WithMatchMember("DeviceAdded"), dbus.WithMatchObjectPath(managerPath)},
		{dbus.WithMatchSender(BusName), dbus.WithMatchInterface(deviceIface), dbus.WithMatchMember("StateChanged"), dbus.WithMatchPathNamespace(devicesPath)},
	}
	signals, err := systembus.Signals(ctx, c.conn, rules)
	if err != nil {
		return nil, fmt.Errorf("subscribe to NetworkManager signals: %w", err)
	}
	out := make(chan Event, 16)
	go func() {
		defer close(out)
		for sig := range signals {
			ev, ok := c.event(ctx, sig)
			if !ok {
				continue
			}
			select {
			case out <- ev:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// event turns a signal into an Event; other signals on the connection are not for us.
func (c *Client) event(ctx context.Context, sig *dbus.Signal) (Event, bool) {
	switch sig.Name {
	case "org.freedesktop.DBus.NameOwnerChanged":
		var name, old, owner string
		if dbus.Store(sig.Body, &name, &old, &owner) != nil || name != BusName {
			return Event{}, false
		}
		if owner == "" {
			return Event{Kind: EventStopped}, true
		}
		return Event{Kind: EventStarted}, true
	case managerIface + ".DeviceAdded":
		var p dbus.ObjectPath
		if sig.Path != managerPath || dbus.Store(sig.Body, &p) != nil {
			return Event{}, false
		}
		name, _ := Device{c: c, path: p}.Interface(ctx)
		return Event{Kind: EventDeviceAdded, Device: name}, true
	case deviceIface + ".StateChanged":
		var newState, oldState, reason uint32
		if dbus.Store(sig.Body, &newState, &oldState, &reason) != nil {
			return Event{}, false
		}
		if DeviceState(oldState) != StateUnmanaged || DeviceState(newState) == StateUnmanaged {
			return Event{}, false
		}
		name, _ := Device{c: c, path: sig.Path}.Interface(ctx)
		return Event{Kind: EventDeviceManaged, Device: name}, true
	}
	return Event{}, false
}
