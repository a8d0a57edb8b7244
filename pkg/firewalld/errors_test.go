package firewalld

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/godbus/dbus/v5"
)

func TestMapError(t *testing.T) {
	fw := "org.fedoraproject.FirewallD1.Exception"
	tests := []struct {
		name     string
		err      error
		sentinel error
		code     string
		text     string
	}{
		{"already enabled", dbus.Error{Name: fw, Body: []any{"ALREADY_ENABLED: '179:tcp' already in 'public'"}},
			ErrAlreadyEnabled, "ALREADY_ENABLED", "firewalld addPort: ALREADY_ENABLED: '179:tcp' already in 'public'"},
		{"invalid zone as pointer", &dbus.Error{Name: fw, Body: []any{"INVALID_ZONE: nosuch"}},
			ErrInvalidZone, "INVALID_ZONE", "firewalld addPort: INVALID_ZONE: nosuch"},
		{"code without detail", dbus.Error{Name: fw, Body: []any{"NOT_ENABLED"}}, ErrNotEnabled, "NOT_ENABLED", "firewalld addPort: NOT_ENABLED"},
		{"zone conflict", dbus.Error{Name: fw, Body: []any{"ZONE_CONFLICT: tunl0"}}, ErrZoneConflict, "ZONE_CONFLICT", ""},
		{"invalid protocol", dbus.Error{Name: fw, Body: []any{"INVALID_PROTOCOL: foo"}}, ErrInvalidValue, "INVALID_PROTOCOL", ""},
		{"no owner", dbus.Error{Name: "org.freedesktop.DBus.Error.ServiceUnknown", Body: []any{"The name is not activatable"}},
			ErrNotRunning, "org.freedesktop.DBus.Error.ServiceUnknown", ""},
		{"polkit", dbus.Error{Name: "org.fedoraproject.FirewallD1.NotAuthorizedException", Body: []any{"Not Authorized"}},
			ErrNotAuthorized, "org.fedoraproject.FirewallD1.NotAuthorizedException", ""},
		{"closed connection", dbus.ErrClosed, ErrDisconnected, "org.freedesktop.DBus.Error.Disconnected", ""},
		{"connection read EOF", fmt.Errorf("read: %w", io.EOF), ErrDisconnected, "org.freedesktop.DBus.Error.Disconnected", ""},
		{"unknown code", dbus.Error{Name: fw, Body: []any{"COMMAND_FAILED: nft said no"}}, nil, "COMMAND_FAILED", ""},
	}
	all := []error{ErrNotRunning, ErrAlreadyEnabled, ErrNotEnabled, ErrInvalidZone, ErrInvalidPolicy, ErrZoneConflict,
		ErrNameConflict, ErrInvalidValue, ErrNotAuthorized, ErrDisconnected, ErrUnsupported}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := mapError("addPort", tt.err)
			var fe *Error
			if !errors.As(err, &fe) {
				t.Fatalf("mapError = %T %v, want *Error", err, err)
			}
			if fe.Code != tt.code {
				t.Errorf("Code = %q, want %q", fe.Code, tt.code)
			}
			if tt.text != "" && err.Error() != tt.text {
				t.Errorf("Error() = %q, want %q", err.Error(), tt.text)
			}
			for _, s := range all {
				if got, want := errors.Is(err, s), errors.Is(tt.sentinel, s); got != want {
					t.Errorf("errors.Is(err, %v) = %t, want %t", s, got, want)
				}
			}
		})
	}
}

func TestMapErrorPassesContextErrors(t *testing.T) {
	err := mapError("queryPort", fmt.Errorf("call: %w", errors.Join(errors.New("x"), io.ErrUnexpectedEOF)))
	var fe *Error
	if errors.As(err, &fe) {
		t.Errorf("a non-D-Bus error became %v", fe)
	}
}

// A write to a bus socket that is closing (the bus restarts) means the connection is gone.
func TestMapErrorSocketFailureIsDisconnected(t *testing.T) {
	err := mapError("getZoneOfInterface", &net.OpError{Op: "write", Net: "unix", Err: os.NewSyscallError("write", syscall.EPIPE)})
	if !errors.Is(err, ErrDisconnected) {
		t.Errorf("broken pipe on the bus socket = %v, want ErrDisconnected", err)
	}
}

func TestDialWithoutBus(t *testing.T) {
	ctx := context.Background()
	_, err := Dial(ctx, "unix:path="+filepath.Join(t.TempDir(), "no_bus_socket"))
	if !errors.Is(err, ErrNotRunning) {
		t.Errorf("Dial of a missing socket = %v, want ErrNotRunning", err)
	}
	if err == nil || !strings.Contains(err.Error(), "no_bus_socket") {
		t.Errorf("error %v does not name the address", err)
	}
}
