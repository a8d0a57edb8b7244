package firewalld

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/calico-prep/calico-prep/internal/systembus"
)

// EventKind says what happened to firewalld.
type EventKind string

const (
	// Reloaded: firewalld rebuilt its runtime configuration from the permanent one.
	Reloaded EventKind = "Reloaded"
	// Started: firewalld took its bus name (a start or restart) and has loaded its
	// configuration; its runtime configuration is the permanent one.
	Started EventKind = "Started"
	// Stopped: firewalld gave up its bus name (stopped or died).
	Stopped EventKind = "Stopped"
)

// Event is one thing that happened to firewalld and may have changed its rules.
type Event struct {
	Kind EventKind
	// Received is when the signal arrived, for measuring the time to re-apply.
	Received time.Time
}

// Watch delivers firewalld's Reloaded signal and the changes of owner of its bus name until ctx
// ends or the connection closes; then the channel is closed. While it runs, Changes counts
// every signal firewalld sends (a reload sends hundreds of config.* signals before Reloaded), so
// that what a pass read can serve the next one while firewalld has said nothing.
func (c *Client) Watch(ctx context.Context) (<-chan Event, error) {
	rules := [][]dbus.MatchOption{
		// sender is firewalld's well-known name: the bus matches whoever owns it now, so a
		// restarted firewalld is heard and no one else can fake a reload.
		{dbus.WithMatchSender(busName)},
		{dbus.WithMatchSender(busDaemonName), dbus.WithMatchObjectPath(busDaemonPath),
			dbus.WithMatchInterface(busDaemonName), dbus.WithMatchMember("NameOwnerChanged"),
			dbus.WithMatchArg(0, busName)},
	}
	sigs, err := systembus.Signals(ctx, c.conn, rules)
	if err != nil {
		return nil, fmt.Errorf("subscribe to firewalld signals: %w", mapError("AddMatch", err))
	}
	c.changes.Add(1)
	c.watching.Add(1)
	// One reader counts every signal at once and passes firewalld's events on in order; the
	// other waits for a starting firewalld without holding up the count.
	events := make(chan Event, 16)
	go func() {
		defer close(events)
		for s := range sigs {
			c.changes.Add(1)
			ev, ok := toEvent(s)
			if !ok {
				continue
			}
			ev.Received = time.Now()
			select {
			case events <- ev:
			default: // 16 events wait already, each to wake a pass: one more adds nothing
			}
		}
	}()
	out := make(chan Event, 16)
	go func() {
		defer close(out)
		defer c.watching.Add(-1)
		for ev := range events {
			if ev.Kind == Started && !c.waitRunning(ctx) {
				return
			}
			c.changes.Add(1)
			select {
			case out <- ev:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// waitRunning waits until a newly started firewalld has loaded its configuration: it takes its
// bus name before that, and a pass run too early would find half a firewall. It returns false
// only when ctx ends; after startTimeout it gives up waiting and lets the pass report.
func (c *Client) waitRunning(ctx context.Context) bool {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(startTimeout)
	for time.Now().Before(deadline) {
		info, err := c.Info(ctx)
		if err == nil && info.State != "INIT" || errors.Is(err, ErrNotRunning) || errors.Is(err, ErrDisconnected) {
			// Running or failed, gone again, or no bus: the pass finds out which.
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
	}
	return true
}

// startTimeout bounds the wait for a starting firewalld (2–3 s on a small machine).
const startTimeout = 30 * time.Second

// toEvent filters what the connection hears down to firewalld's own events; every channel of
// a connection receives every signal the connection gets.
func toEvent(s *dbus.Signal) (Event, bool) {
	switch s.Name {
	case ifaceMain + ".Reloaded":
		return Event{Kind: Reloaded}, true
	case busDaemonName + ".NameOwnerChanged":
		if len(s.Body) != 3 {
			return Event{}, false
		}
		name, ok1 := s.Body[0].(string)
		newOwner, ok2 := s.Body[2].(string)
		if !ok1 || !ok2 || name != busName {
			return Event{}, false
		}
		if newOwner == "" {
			return Event{Kind: Stopped}, true
		}
		return Event{Kind: Started}, true
	}
	return Event{}, false
}
