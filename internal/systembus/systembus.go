// Package systembus opens private connections to the D-Bus system bus for the packages that
// talk to daemons on it (firewalld, NetworkManager, systemd-networkd): dialing and signal
// subscriptions.
package systembus

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"

	"github.com/godbus/dbus/v5"
)

// DefaultAddress is the system bus of a standard host.
const DefaultAddress = "unix:path=/run/dbus/system_bus_socket"

// ErrNoBus means nothing listens at the bus address: a host without a system bus.
var ErrNoBus = errors.New("no system bus")

// Dial opens a private connection (not godbus's shared singleton) to the bus at address; ""
// means $DBUS_SYSTEM_BUS_ADDRESS, else DefaultAddress. ctx bounds the dial and the handshake
// only, not the connection's life.
func Dial(ctx context.Context, address string) (*dbus.Conn, error) {
	if address == "" {
		address = os.Getenv("DBUS_SYSTEM_BUS_ADDRESS")
	}
	if address == "" {
		address = DefaultAddress
	}
	conn, err := dbus.Dial(address)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
		return nil, fmt.Errorf("dial system bus %q: %w: %w", address, ErrNoBus, err)
	}
	if err != nil {
		return nil, fmt.Errorf("dial system bus %q: %w", address, err)
	}
	done := make(chan error, 1)
	go func() {
		if err := conn.Auth(nil); err != nil {
			done <- err
			return
		}
		done <- conn.Hello()
	}()
	select {
	case err = <-done:
	case <-ctx.Done():
		// Closing the connection unblocks the handshake; wait for it so nothing outlives Dial.
		_ = conn.Close()
		err = errors.Join(ctx.Err(), <-done)
	}
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("connect to system bus %q: %w", address, err)
	}
	return conn, nil
}
