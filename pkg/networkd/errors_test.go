package networkd

import (
	"errors"
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/godbus/dbus/v5"
)

// A networkd that is away or starting, or a bus connection that is going, settles: a restart
// that ends as it began must not flip the node's readiness.
func TestWrapSettles(t *testing.T) {
	for _, tt := range []struct {
		name string
		err  error
		want error
	}{
		{"name has no owner", dbus.Error{Name: "org.freedesktop.DBus.Error.NameHasNoOwner"}, ErrNotRunning},
		{"object not made yet", dbus.Error{Name: "org.freedesktop.DBus.Error.UnknownObject"}, ErrStarting},
		{"connection closed", dbus.ErrClosed, ErrDisconnected},
		{"bus socket broken", &net.OpError{Op: "write", Net: "unix", Err: os.NewSyscallError("write", syscall.EPIPE)}, ErrDisconnected},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := wrap("ask the bus for "+BusName, tt.err)
			if !errors.Is(err, tt.want) {
				t.Errorf("wrap(%v) = %v, want %v", tt.err, err, tt.want)
			}
			if res := errored(err); !res.Settling {
				t.Errorf("errored(%v) does not settle", err)
			}
		})
	}
	if res := errored(wrap("list networkd links", dbus.Error{Name: "org.freedesktop.DBus.Error.AccessDenied"})); res.Settling {
		t.Error("access denied settles; want a plain failure")
	}
}
