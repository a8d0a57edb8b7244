package firewalld

import (
	"context"

	"github.com/godbus/dbus/v5"
)

// Runtime configuration: what firewalld enforces now. It is rebuilt from the permanent
// configuration on every reload and restart. An empty zone means the default zone.

// DefaultZone returns the zone of interfaces and sources bound to no zone.
func (c *Client) DefaultZone(ctx context.Context) (string, error) {
	var z string
	err := c.call(ctx, objectPath, ifaceMain, "getDefaultZone", nil, &z)
	return z, err
}

// ZoneOfInterface returns the runtime zone the interface is bound to, or "" when it is bound to
// none (firewalld then treats it as part of the default zone).
func (c *Client) ZoneOfInterface(ctx context.Context, iface string) (string, error) {
	var z string
	err := c.call(ctx, objectPath, ifaceZone, "getZoneOfInterface", []any{iface}, &z)
	return z, err
}

// ZoneSettings returns the runtime settings of a zone; ErrInvalidZone when it does not exist.
func (c *Client) ZoneSettings(ctx context.Context, zone string) (ZoneSettings, error) {
	var m map[string]dbus.Variant
	if err := c.call(ctx, objectPath, ifaceZone, "getZoneSettings2", []any{zone}, &m); err != nil {
		return ZoneSettings{}, err
	}
	return decodeZoneSettings(m)
}

// AddPort opens port ("179" or "51820-51821") for proto in the runtime zone; ErrAlreadyEnabled
// when it is open already.
func (c *Client) AddPort(ctx context.Context, zone, port, proto string) error {
	return c.call(ctx, objectPath, ifaceZone, "addPort", []any{zone, port, proto, int32(0)}, new(string))
}

// QueryPort reports whether port/proto is open in the runtime zone.
func (c *Client) QueryPort(ctx context.Context, zone, port, proto string) (bool, error) {
	return c.query(ctx, objectPath, ifaceZone, "queryPort", zone, port, proto)
}

// RemovePort closes port/proto in the runtime zone; ErrNotEnabled when it was not open.
func (c *Client) RemovePort(ctx context.Context, zone, port, proto string) error {
	return c.call(ctx, objectPath, ifaceZone, "removePort", []any{zone, port, proto}, new(string))
}

// AddProtocol accepts an IP protocol ("ipencap") in the runtime zone.
func (c *Client) AddProtocol(ctx context.Context, zone, proto string) error {
	return c.call(ctx, objectPath, ifaceZone, "addProtocol", []any{zone, proto, int32(0)}, new(string))
}

// QueryProtocol reports whether an IP protocol is accepted in the runtime zone.
func (c *Client) QueryProtocol(ctx context.Context, zone, proto string) (bool, error) {
	return c.query(ctx, objectPath, ifaceZone, "queryProtocol", zone, proto)
}

// RemoveProtocol stops accepting an IP protocol in the runtime zone.
func (c *Client) RemoveProtocol(ctx context.Context, zone, proto string) error {
	return c.call(ctx, objectPath, ifaceZone, "removeProtocol", []any{zone, proto}, new(string))
}

// AddInterface binds an interface name (a trailing "+" is a wildcard) to the runtime zone;
// ErrZoneConflict when it is bound to another zone.
func (c *Client) AddInterface(ctx context.Context, zone, iface string) error {
	return c.call(ctx, objectPath, ifaceZone, "addInterface", []any{zone, iface}, new(string))
}

// PolicySettings returns the runtime settings of a policy; ErrInvalidPolicy when it does not exist.
func (c *Client) PolicySettings(ctx context.Context, policy string) (PolicySettings, error) {
	var m map[string]dbus.Variant
	if err := c.call(ctx, objectPath, ifacePolicy, "getPolicySettings", []any{policy}, &m); err != nil {
		return PolicySettings{}, err
	}
	return decodePolicySettings(m)
}

func (c *Client) query(ctx context.Context, path dbus.ObjectPath, iface, method string, args ...any) (bool, error) {
	var ok bool
	err := c.call(ctx, path, iface, method, args, &ok)
	return ok, err
}
