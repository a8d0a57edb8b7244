package testbed

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
)

// markMethod is the call Monitor.Take sends to find the end of what a client sent: the bus's
// own GetId, which the product's clients never call.
const markMethod = "org.freedesktop.DBus.GetId"

// Monitor records every method call one connection sends on the node's bus, as the bus itself
// sees them (org.freedesktop.DBus.Monitoring.BecomeMonitor): an account of a client's traffic
// that needs no counter in the client.
type Monitor struct {
	client *dbus.Conn
	mu     sync.Mutex
	calls  []string // "Interface.Member", in the order the client sent them
}

// MonitorCalls starts recording the method calls that client sends, until the test ends.
func (n *Node) MonitorCalls(t testing.TB, client *dbus.Conn) *Monitor {
	t.Helper()
	conn, err := dbus.Connect(n.BusAddress)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	rule := fmt.Sprintf("type='method_call',sender='%s'", client.Names()[0])
	if err := conn.BusObject().Call("org.freedesktop.DBus.Monitoring.BecomeMonitor", 0, []string{rule}, uint32(0)).Err; err != nil {
		t.Fatalf("become a bus monitor: %v", err)
	}
	msgs := make(chan *dbus.Message, 4096)
	conn.Eavesdrop(msgs)
	m := &Monitor{client: client}
	go func() {
		for msg := range msgs {
			if msg.Type != dbus.TypeMethodCall {
				continue // the bus's NameLost to the monitor itself
			}
			iface, _ := msg.Headers[dbus.FieldInterface].Value().(string)
			member, _ := msg.Headers[dbus.FieldMember].Value().(string)
			m.mu.Lock()
			m.calls = append(m.calls, iface+"."+member)
			m.mu.Unlock()
		}
	}()
	return m
}

// Take returns the calls the client sent since the monitor started or since the last Take,
// and forgets them. It first sends a call of its own on the client's connection and waits for
// the monitor to see it: the bus delivers one sender's messages in order, so every earlier
// call has been seen then.
func (m *Monitor) Take(t testing.TB, ctx context.Context) []string {
	t.Helper()
	if err := m.client.BusObject().CallWithContext(ctx, markMethod, 0).Err; err != nil {
		t.Fatalf("mark the monitor's record: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		m.mu.Lock()
		for i, c := range m.calls {
			if c == markMethod {
				out := m.calls[:i:i]
				m.calls = m.calls[i+1:]
				m.mu.Unlock()
				return out
			}
		}
		m.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatal("the bus monitor did not see the marker call")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
