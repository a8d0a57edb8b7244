package firewalld

import "github.com/godbus/dbus/v5"

// Conn is the client's connection, for tests that watch its calls on the bus
// (testbed.Node.MonitorCalls).
func (c *Client) Conn() *dbus.Conn { return c.conn }
