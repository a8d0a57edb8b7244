package networkd

import (
	"context"
	"fmt"

	"github.com/godbus/dbus/v5"

	"github.com/calico-prep/calico-prep/internal/systembus"
)

// EventKind says what happened.
type EventKind string

const (
	// EventStarted: networkd took its bus name (a start or restart): it matched every link
	// against its .network files again and read networkd.conf.
	EventStarted EventKind = "started"
	// EventStopped: networkd left the bus.
	EventStopped EventKind = "stopped"
	// EventLinkState: a link's AdministrativeState changed, e.g. a new link networkd has
	// just matched, or one it took over.
	EventLinkState EventKind = "link-state"
)

// Event is one change that may undo what calico-prep applied.
type Event struct {
	Kind EventKind
	// State is the new AdministrativeState for EventLinkState.
	State string
}

// Watch subscribes to networkd's bus name and to changes of its links' AdministrativeState. The
// channel closes when ctx ends or the bus connection does; a slow reader delays events, it
// does not lose them.
func (c *Client) Watch(ctx context.Context) (<-chan Event, error) {
	rules := [][]dbus.MatchOption{
		{dbus.WithMatchSender("org.freedesktop.DBus"), dbus.WithMatchInterface("org.freedesktop.DBus"),
			dbus.WithMatchMember("NameOwnerChanged"), dbus.WithMatchArg(0, BusName)},
		// The sender is networkd's well-known name: the bus matches whoever owns it now, so no
		// other client can trigger passes.
		{dbus.WithMatchSender(BusName), dbus.WithMatchInterface(propertiesIface), dbus.WithMatchMember("PropertiesChanged"),
			dbus.WithMatchPathNamespace(linkPathPrefix), dbus.WithMatchArg(0, linkIface)},
	}
	signals, err := systembus.Signals(ctx, c.conn, rules)
	if err != nil {
		return nil, fmt.Errorf("subscribe to systemd-networkd signals: %w", err)
	}
	out := make(chan Event, 16)
	go func() {
		defer close(out)
		for sig := range signals {
			ev, ok := event(sig)
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
func event(sig *dbus.Signal) (Event, bool) {
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
	case propertiesIface + ".PropertiesChanged":
		var iface string
		var changed map[string]dbus.Variant
		var invalidated []string
		if dbus.Store(sig.Body, &iface, &changed, &invalidated) != nil || iface != linkIface {
			return Event{}, false
		}
		if v, ok := changed["AdministrativeState"]; ok {
			s, _ := v.Value().(string)
			return Event{Kind: EventLinkState, State: s}, true
		}
		for _, p := range invalidated {
			if p == "AdministrativeState" {
				return Event{Kind: EventLinkState}, true
			}
		}
	}
	return Event{}, false
}
