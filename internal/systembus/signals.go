package systembus

import (
	"context"
	"fmt"
	"time"

	"github.com/godbus/dbus/v5"
)

// Signals adds one match rule per element of rules on conn and delivers the signals conn
// receives until ctx ends or conn closes; then it removes the rules and closes the channel.
// Every channel registered on a connection receives every signal the connection gets, so the
// caller still filters by name. When a rule cannot be added, the ones added are removed and
// the error is returned.
func Signals(ctx context.Context, conn *dbus.Conn, rules [][]dbus.MatchOption) (<-chan *dbus.Signal, error) {
	for i, r := range rules {
		if err := conn.AddMatchSignalContext(ctx, r...); err != nil {
			removeMatches(ctx, conn, rules[:i])
			return nil, fmt.Errorf("add match rule: %w", err)
		}
	}
	in := make(chan *dbus.Signal, 64)
	conn.Signal(in)
	out := make(chan *dbus.Signal, 64)
	go func() {
		defer close(out)
		defer removeMatches(ctx, conn, rules)
		defer conn.RemoveSignal(in)
		for {
			select {
			case <-ctx.Done():
				return
			case s, ok := <-in:
				if !ok {
					return // the connection closed
				}
				select {
				case out <- s:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, nil
}

// removeMatches unsubscribes. ctx is usually over by then, so the calls get a short deadline of
// their own. Failure is harmless: the rules go with the connection.
func removeMatches(ctx context.Context, conn *dbus.Conn, rules [][]dbus.MatchOption) {
	if !conn.Connected() {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	for _, r := range rules {
		_ = conn.RemoveMatchSignalContext(ctx, r...)
	}
}
