// Package networkmanager keeps Calico's interfaces unmanaged by NetworkManager: it writes the
// unmanaged-devices drop-in, applies it live over D-Bus (Reload, then the runtime Managed
// switch for devices NetworkManager still holds), proves every Calico device unmanaged, and
// reports operator configuration that would make one managed again.
package networkmanager

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"

	"github.com/godbus/dbus/v5"

	"github.com/calico-prep/calico-prep/internal/systembus"
)

// D-Bus names of NetworkManager's API.
const (
	BusName         = "org.freedesktop.NetworkManager"
	managerPath     = "/org/freedesktop/NetworkManager"
	managerIface    = "org.freedesktop.NetworkManager"
	deviceIface     = "org.freedesktop.NetworkManager.Device"
	devicesPath     = "/org/freedesktop/NetworkManager/Devices"
	propertiesIface = "org.freedesktop.DBus.Properties"
)

// ReloadConf is Reload's flag for re-reading NetworkManager.conf and its conf.d directories.
const ReloadConf uint32 = 0x1

var (
	// ErrNotRunning means NetworkManager does not own its name on the bus.
	ErrNotRunning = errors.New("NetworkManager is not on the bus")
	// ErrNoDevice means NetworkManager knows no device of that name.
	ErrNoDevice = errors.New("no such NetworkManager device")
	// ErrStarting means NetworkManager owns its bus name but has not yet made the object asked
	// for: it is starting.
	ErrStarting = errors.New("NetworkManager is starting")
	// ErrDisconnected means the connection to the system bus is gone; dial again.
	ErrDisconnected = errors.New("disconnected from the system bus")
)

// DeviceState is NetworkManager's NMDeviceState.
type DeviceState uint32

// StateUnmanaged is the state of a device NetworkManager leaves alone.
const StateUnmanaged DeviceState = 10

var stateNames = map[DeviceState]string{
	0: "unknown", 10: "unmanaged", 20: "unavailable", 30: "disconnected", 40: "prepare",
	50: "config", 60: "need-auth", 70: "ip-config", 80: "ip-check", 90: "secondaries",
	100: "activated", 110: "deactivating", 120: "failed",
}

func (s DeviceState) String() string {
	if n, ok := stateNames[s]; ok {
		return fmt.Sprintf("%d (%s)", uint32(s), n)
	}
	return strconv.FormatUint(uint64(s), 10)
}

// Client talks to NetworkManager over its own connection to the system bus.
type Client struct {
	conn *dbus.Conn
}

// Dial opens a private connection to the system bus at address; "" means
// DBUS_SYSTEM_BUS_ADDRESS, else the standard socket.
func Dial(ctx context.Context, address string) (*Client, error) {
	conn, err := systembus.Dial(ctx, address)
	if errors.Is(err, systembus.ErrNoBus) {
		return nil, fmt.Errorf("%w: %w", ErrNotRunning, err)
	}
	if err != nil {
		return nil, err
	}
	return &Client{conn: conn}, nil
}

// Close closes the connection; Watch channels close with it.
func (c *Client) Close() error { return c.conn.Close() }

func (c *Client) call(ctx context.Context, path dbus.ObjectPath, method string, args ...any) *dbus.Call {
	// No auto-start: asking must never start a stopped NetworkManager.
	return c.conn.Object(BusName, path).CallWithContext(ctx, method, dbus.FlagNoAutoStart, args...)
}

// Running reports whether NetworkManager owns its name on the bus.
func (c *Client) Running(ctx context.Context) (bool, error) {
	var has bool
	err := c.conn.BusObject().CallWithContext(ctx, "org.freedesktop.DBus.NameHasOwner", dbus.FlagNoAutoStart, BusName).Store(&has)
	if err != nil {
		return false, wrap("ask the bus for "+BusName, err)
	}
	return has, nil
}

// Starting reports whether NetworkManager is still starting up: until it has tried to
// activate every connection it can at startup, its Startup property is true (and before it
// has made its manager object, there is none).
func (c *Client) Starting(ctx context.Context) (bool, error) {
	v, err := c.property(ctx, managerPath, managerIface, "Startup")
	var de dbus.Error
	if errors.As(err, &de) && !noObject(de) && (de.Name == "org.freedesktop.DBus.Error.UnknownInterface" || de.Name == "org.freedesktop.DBus.Error.InvalidArgs") {
		// The manager object is there without its interface, or that without Startup: it is
		// still being made.
		err = fmt.Errorf("%w: %w", ErrStarting, err)
	}
	if err != nil {
		err = wrap("read NetworkManager startup", err)
		return errors.Is(err, ErrStarting), err
	}
	b, ok := v.Value().(bool)
	if !ok {
		return false, fmt.Errorf("read NetworkManager startup: got %s, want a boolean", v.Signature())
	}
	return b, nil
}

// noObject reports whether the error says that the object is not there (yet). GDBus, which
// NetworkManager uses, answers a call to a path it has not exported with UnknownMethod and
// "Object does not exist at path …"; other bus libraries with UnknownObject.
func noObject(de dbus.Error) bool {
	if de.Name == "org.freedesktop.DBus.Error.UnknownObject" {
		return true
	}
	msg, _ := firstString(de.Body)
	return de.Name == "org.freedesktop.DBus.Error.UnknownMethod" && strings.HasPrefix(msg, "Object does not exist at path")
}

func firstString(body []any) (string, bool) {
	if len(body) == 0 {
		return "", false
	}
	s, ok := body[0].(string)
	return s, ok
}

// wrap turns the bus's "nobody owns that name" into ErrNotRunning, "no such object" into
// ErrStarting and a closed connection into ErrDisconnected; the message stays the bus's.
func wrap(verb string, err error) error {
	var de dbus.Error
	switch {
	case errors.As(err, &de) && (de.Name == "org.freedesktop.DBus.Error.ServiceUnknown" || de.Name == "org.freedesktop.DBus.Error.NameHasNoOwner"):
		return fmt.Errorf("%s: %w", verb, ErrNotRunning)
	case errors.As(err, &de) && noObject(de):
		return fmt.Errorf("%s: %w: %w", verb, ErrStarting, err)
	case errors.Is(err, dbus.ErrClosed) || errors.Is(err, io.EOF) || errors.As(err, new(*net.OpError)):
		// The connection closed, or a read or write on the bus socket failed: it is closing.
		return fmt.Errorf("%s: %w: %w", verb, ErrDisconnected, err)
	}
	return fmt.Errorf("%s: %w", verb, err)
}

func (c *Client) property(ctx context.Context, path dbus.ObjectPath, iface, name string) (dbus.Variant, error) {
	var v dbus.Variant
	err := c.call(ctx, path, propertiesIface+".Get", iface, name).Store(&v)
	return v, err
}

// Version is NetworkManager's version, e.g. "1.42.4".
func (c *Client) Version(ctx context.Context) (string, error) {
	v, err := c.property(ctx, managerPath, managerIface, "Version")
	if err != nil {
		return "", wrap("read NetworkManager version", err)
	}
	s, ok := v.Value().(string)
	if !ok {
		return "", fmt.Errorf("read NetworkManager version: got %s, want a string", v.Signature())
	}
	return s, nil
}

// Reload asks NetworkManager to reload; ReloadConf re-reads its configuration files.
func (c *Client) Reload(ctx context.Context, flags uint32) error {
	if err := c.call(ctx, managerPath, managerIface+".Reload", flags).Err; err != nil {
		return wrap(fmt.Sprintf("reload NetworkManager (flags %#x)", flags), err)
	}
	return nil
}

// GetDevices returns the realized devices.
func (c *Client) GetDevices(ctx context.Context) ([]Device, error) {
	return c.devices(ctx, "GetDevices")
}

// GetAllDevices returns all devices, including placeholders for software devices that do not
// exist yet.
func (c *Client) GetAllDevices(ctx context.Context) ([]Device, error) {
	return c.devices(ctx, "GetAllDevices")
}

func (c *Client) devices(ctx context.Context, method string) ([]Device, error) {
	var paths []dbus.ObjectPath
	if err := c.call(ctx, managerPath, managerIface+"."+method).Store(&paths); err != nil {
		return nil, wrap("list NetworkManager devices", err)
	}
	out := make([]Device, len(paths))
	for i, p := range paths {
		out[i] = Device{c: c, path: p}
	}
	return out, nil
}

// GetDeviceByIpIface returns the device whose IP interface is iface; ErrNoDevice when there
// is none.
func (c *Client) GetDeviceByIpIface(ctx context.Context, iface string) (Device, error) {
	var p dbus.ObjectPath
	err := c.call(ctx, managerPath, managerIface+".GetDeviceByIpIface", iface).Store(&p)
	var de dbus.Error
	if errors.As(err, &de) && de.Name == "org.freedesktop.NetworkManager.UnknownDevice" {
		return Device{}, fmt.Errorf("find NetworkManager device %q: %w", iface, ErrNoDevice)
	}
	if err != nil {
		return Device{}, wrap(fmt.Sprintf("find NetworkManager device %q", iface), err)
	}
	return Device{c: c, path: p}, nil
}

// Device is one NetworkManager device object.
type Device struct {
	c    *Client
	path dbus.ObjectPath
}

// Path is the device's object path, for logs.
func (d Device) Path() string { return string(d.path) }

// Interface is the device's interface name.
func (d Device) Interface(ctx context.Context) (string, error) {
	v, err := d.c.property(ctx, d.path, deviceIface, "Interface")
	if err != nil {
		return "", wrap(fmt.Sprintf("read interface of %s", d.path), err)
	}
	s, ok := v.Value().(string)
	if !ok {
		return "", fmt.Errorf("read interface of %s: got %s, want a string", d.path, v.Signature())
	}
	return s, nil
}

// State is the device's state; StateUnmanaged when NetworkManager leaves it alone.
func (d Device) State(ctx context.Context) (DeviceState, error) {
	v, err := d.c.property(ctx, d.path, deviceIface, "State")
	if err != nil {
		return 0, wrap(fmt.Sprintf("read state of %s", d.path), err)
	}
	u, ok := v.Value().(uint32)
	if !ok {
		return 0, fmt.Errorf("read state of %s: got %s, want a uint32", d.path, v.Signature())
	}
	return DeviceState(u), nil
}

// Managed reports whether NetworkManager manages the device.
func (d Device) Managed(ctx context.Context) (bool, error) {
	v, err := d.c.property(ctx, d.path, deviceIface, "Managed")
	if err != nil {
		return false, wrap(fmt.Sprintf("read managed of %s", d.path), err)
	}
	b, ok := v.Value().(bool)
	if !ok {
		return false, fmt.Errorf("read managed of %s: got %s, want a boolean", d.path, v.Signature())
	}
	return b, nil
}

// DeviceStatus is what the checks need of a device, read in one call.
type DeviceStatus struct {
	Interface string
	State     DeviceState
	Managed   bool
	// Real is false for placeholders of software devices that do not exist yet.
	Real bool
}

// Status reads Interface, State, Managed and Real with one GetAll.
func (d Device) Status(ctx context.Context) (DeviceStatus, error) {
	var props map[string]dbus.Variant
	if err := d.c.call(ctx, d.path, propertiesIface+".GetAll", deviceIface).Store(&props); err != nil {
		return DeviceStatus{}, wrap(fmt.Sprintf("read device %s", d.path), err)
	}
	var s DeviceStatus
	var ok [4]bool
	s.Interface, ok[0] = props["Interface"].Value().(string)
	var st uint32
	st, ok[1] = props["State"].Value().(uint32)
	s.State = DeviceState(st)
	s.Managed, ok[2] = props["Managed"].Value().(bool)
	s.Real, ok[3] = props["Real"].Value().(bool)
	for i, name := range []string{"Interface", "State", "Managed", "Real"} {
		if !ok[i] {
			return DeviceStatus{}, fmt.Errorf("read device %s: property %s missing or of type %s", d.path, name, props[name].Signature())
		}
	}
	return s, nil
}

// SetManaged switches management of the device at runtime, as "nmcli device set IFACE
// managed no" does; NetworkManager forgets it when it restarts. NetworkManager 1.58 and later
// have the SetManaged method; older ones take the Managed property.
func (d Device) SetManaged(ctx context.Context, managed bool) error {
	verb := fmt.Sprintf("set %s managed=%v", d.path, managed)
	if d.c.hasSetManaged(ctx) {
		var m uint32
		if managed {
			m = 1
		}
		err := d.c.call(ctx, d.path, deviceIface+".SetManaged", m, managedFlagsRuntime).Err
		var de dbus.Error
		if err == nil || !errors.As(err, &de) || de.Name != "org.freedesktop.DBus.Error.UnknownMethod" {
			if err != nil {
				return wrap(verb, err)
			}
			return nil
		}
	}
	err := d.c.call(ctx, d.path, propertiesIface+".Set", deviceIface, "Managed", dbus.MakeVariant(managed)).Err
	if err != nil {
		return wrap(verb, err)
	}
	return nil
}

// managedFlagsRuntime is NM_DEVICE_MANAGED_FLAGS_RUNTIME: SetManaged changes the runtime state
// only, as setting the Managed property does. NetworkManager refuses flags that select neither
// runtime nor permanent.
const managedFlagsRuntime uint32 = 0x1

// hasSetManaged reports whether the daemon is 1.58 or later. A version it cannot read counts
// as older: the Managed property still works there.
func (c *Client) hasSetManaged(ctx context.Context) bool {
	v, err := c.Version(ctx)
	if err != nil {
		return false
	}
	return versionAtLeast(v, 1, 58)
}

func versionAtLeast(v string, major, minor int) bool {
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return false
	}
	ma, err1 := strconv.Atoi(parts[0])
	mi, err2 := strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil {
		return false
	}
	return ma > major || ma == major && mi >= minor
}
