package firewalld

import (
	"errors"
	"io"
	"net"
	"strings"

	"github.com/godbus/dbus/v5"
)

// Sentinel errors for the firewalld error codes calico-prep acts on; test with errors.Is.
var (
	// ErrNotRunning means firewalld does not own its name on the bus (or there is no bus).
	ErrNotRunning = errors.New("firewalld is not running")
	// ErrAlreadyEnabled is firewalld's ALREADY_ENABLED: the setting is there already.
	ErrAlreadyEnabled = errors.New("already enabled")
	// ErrNotEnabled is firewalld's NOT_ENABLED: the setting to remove is not there.
	ErrNotEnabled = errors.New("not enabled")
	// ErrInvalidZone is firewalld's INVALID_ZONE: no zone of that name.
	ErrInvalidZone = errors.New("no such zone")
	// ErrInvalidPolicy is firewalld's INVALID_POLICY: no policy of that name.
	ErrInvalidPolicy = errors.New("no such policy")
	// ErrZoneConflict is firewalld's ZONE_CONFLICT: the interface or source is in another zone.
	ErrZoneConflict = errors.New("interface or source is bound to another zone")
	// ErrNameConflict is firewalld's NAME_CONFLICT: a zone or policy of that name exists.
	ErrNameConflict = errors.New("name exists")
	// ErrInvalidValue covers firewalld's INVALID_PORT, INVALID_PROTOCOL, INVALID_INTERFACE,
	// INVALID_ADDR, INVALID_RULE, INVALID_TARGET and INVALID_NAME.
	ErrInvalidValue = errors.New("invalid value")
	// ErrNotAuthorized means polkit refused the call (calico-prep runs as root, which it should not).
	ErrNotAuthorized = errors.New("not authorized")
	// ErrDisconnected means the connection to the bus is gone; dial again.
	ErrDisconnected = errors.New("disconnected from the system bus")
	// ErrStarting means firewalld owns its bus name but has not yet made the object asked for:
	// it is starting (or a reload renamed the object a moment ago).
	ErrStarting = errors.New("firewalld is starting")
	// ErrUnsupported means the running firewalld is too old for what was asked (policies need 0.9).
	ErrUnsupported = errors.New("not supported by this firewalld")
)

// Error is an error firewalld (or the bus, on its behalf) returned from a method call.
type Error struct {
	// Method is the D-Bus method, e.g. "addPort".
	Method string
	// Code is firewalld's error code, e.g. "INVALID_ZONE", or the D-Bus error name when the
	// bus answered instead of firewalld.
	Code string
	// Detail is the rest of firewalld's message, e.g. the zone name.
	Detail string
}

func (e *Error) Error() string {
	if e.Detail == "" {
		return "firewalld " + e.Method + ": " + e.Code
	}
	return "firewalld " + e.Method + ": " + e.Code + ": " + e.Detail
}

// Unwrap returns the sentinel for the code, so errors.Is(err, ErrInvalidZone) works.
func (e *Error) Unwrap() error { return sentinel(e.Code) }

func sentinel(code string) error {
	switch code {
	case "ALREADY_ENABLED", "ZONE_ALREADY_SET", "ALREADY_SET":
		return ErrAlreadyEnabled
	case "NOT_ENABLED":
		return ErrNotEnabled
	case "INVALID_ZONE":
		return ErrInvalidZone
	case "INVALID_POLICY":
		return ErrInvalidPolicy
	case "ZONE_CONFLICT":
		return ErrZoneConflict
	case "NAME_CONFLICT":
		return ErrNameConflict
	case "INVALID_PORT", "INVALID_PROTOCOL", "INVALID_INTERFACE", "INVALID_ADDR", "INVALID_RULE",
		"INVALID_TARGET", "INVALID_NAME", "INVALID_VALUE", "INVALID_FAMILY", "MISSING_PORT", "MISSING_PROTOCOL":
		return ErrInvalidValue
	case "NOT_AUTHORIZED", "ACCESS_DENIED", "org.fedoraproject.FirewallD1.NotAuthorizedException",
		"org.freedesktop.DBus.Error.AccessDenied":
		return ErrNotAuthorized
	case "org.freedesktop.DBus.Error.ServiceUnknown", "org.freedesktop.DBus.Error.NameHasNoOwner":
		return ErrNotRunning
	case "org.freedesktop.DBus.Error.Disconnected":
		return ErrDisconnected
	case "org.freedesktop.DBus.Error.UnknownObject":
		return ErrStarting
	}
	return nil
}

// mapError turns a godbus error into an *Error so that no godbus type leaves the package.
// firewalld raises one exception name for everything and puts "CODE: detail" in the message.
func mapError(method string, err error) error {
	var de dbus.Error
	var dp *dbus.Error
	switch {
	case errors.As(err, &dp):
		de = *dp
	case errors.As(err, &de):
	default:
		// Transport errors: the connection closed, the context ended.
		var op *net.OpError // a read or write on the bus socket failed: it is closing
		if errors.Is(err, dbus.ErrClosed) || errors.Is(err, io.EOF) || errors.As(err, &op) {
			return &Error{Method: method, Code: "org.freedesktop.DBus.Error.Disconnected", Detail: err.Error()}
		}
		return err
	}
	msg := ""
	if len(de.Body) > 0 {
		msg, _ = de.Body[0].(string)
	}
	if de.Name != "org.fedoraproject.FirewallD1.Exception" {
		return &Error{Method: method, Code: de.Name, Detail: msg}
	}
	code, detail, _ := strings.Cut(msg, ":")
	return &Error{Method: method, Code: strings.TrimSpace(code), Detail: strings.TrimSpace(detail)}
}
