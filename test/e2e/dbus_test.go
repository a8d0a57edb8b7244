package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/calico-prep/calico-prep/test/testbed"
)

// The tests look at firewalld and NetworkManager with their own D-Bus calls rather than the
// agent's clients: an observer that shares the code under test shares its mistakes.
const (
	fwName       = "org.fedoraproject.FirewallD1"
	fwPath       = "/org/fedoraproject/FirewallD1"
	fwConfigPath = "/org/fedoraproject/FirewallD1/config"
	nmName       = "org.freedesktop.NetworkManager"
	nmPath       = "/org/freedesktop/NetworkManager"
	// nmUnmanaged is NMDeviceState UNMANAGED.
	nmUnmanaged = 10
)

// port is a firewalld port rule the agent must keep, by the flags agentArgs gives: BGP and
// VXLAN.
type port struct{ num, proto string }

func (p port) String() string { return p.num + "/" + p.proto }

var calicoPorts = []port{{"179", "tcp"}, {"4789", "udp"}}

// bus is a connection to a node's private system bus.
type bus struct {
	conn *dbus.Conn
}

func dialBus(t testing.TB, n *testbed.Node) bus {
	t.Helper()
	conn, err := dbus.Connect(n.BusAddress)
	if err != nil {
		t.Fatalf("connect to the node's bus: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return bus{conn: conn}
}

func (b bus) call(ctx context.Context, dest string, path dbus.ObjectPath, method string, args []any, out ...any) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	call := b.conn.Object(dest, path).CallWithContext(ctx, method, 0, args...)
	if call.Err != nil {
		return fmt.Errorf("%s on %s: %w", method, path, call.Err)
	}
	return call.Store(out...)
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// defaultZone is the zone the agent puts Calico's ports in: the uplink has no zone of its own.
func (b bus) defaultZone(t testing.TB) string {
	var z string
	must(t, b.call(context.Background(), fwName, fwPath, fwName+".getDefaultZone", nil, &z))
	return z
}

func (b bus) runtimePort(zone string, p port) (bool, error) {
	var ok bool
	err := b.call(context.Background(), fwName, fwPath, fwName+".zone.queryPort", []any{zone, p.num, p.proto}, &ok)
	return ok, err
}

func (b bus) permanentZone(zone string) (dbus.ObjectPath, error) {
	var path dbus.ObjectPath
	err := b.call(context.Background(), fwName, fwConfigPath, fwName+".config.getZoneByName", []any{zone}, &path)
	return path, err
}

func (b bus) permanentPort(zone string, p port) (bool, error) {
	path, err := b.permanentZone(zone)
	if err != nil {
		return false, err
	}
	var ok bool
	err = b.call(context.Background(), fwName, path, fwName+".config.zone.queryPort", []any{p.num, p.proto}, &ok)
	return ok, err
}

// removePermanentPort removes a port from the zone's permanent configuration, as an operator
// editing firewalld would; the runtime keeps it until the next reload.
func (b bus) removePermanentPort(t testing.TB, zone string, p port) {
	t.Helper()
	path, err := b.permanentZone(zone)
	must(t, err)
	must(t, b.call(context.Background(), fwName, path, fwName+".config.zone.removePort", []any{p.num, p.proto}))
}

func (b bus) reloadFirewalld(t testing.TB) {
	t.Helper()
	must(t, b.call(context.Background(), fwName, fwPath, fwName+".reload", nil))
}

// permanentZones are the names of the zones in firewalld's permanent configuration.
func (b bus) permanentZones(t testing.TB) []string {
	var names []string
	must(t, b.call(context.Background(), fwName, fwConfigPath, fwName+".config.getZoneNames", nil, &names))
	return names
}

// missingPorts lists the Calico ports zone lacks, at runtime or permanently; "" when none.
func (b bus) missingPorts(zone string) string {
	var missing []string
	for _, p := range calicoPorts {
		rt, err := b.runtimePort(zone, p)
		if err != nil {
			return err.Error()
		}
		perm, err := b.permanentPort(zone, p)
		if err != nil {
			return err.Error()
		}
		if !rt || !perm {
			missing = append(missing, fmt.Sprintf("%s (runtime %v, permanent %v)", p, rt, perm))
		}
	}
	if len(missing) > 0 {
		return fmt.Sprintf("zone %s lacks %v", zone, missing)
	}
	return ""
}

// device is what NetworkManager says of one interface.
type device struct {
	state   uint32
	managed bool
}

func (b bus) device(iface string) (device, error) {
	ctx := context.Background()
	var path dbus.ObjectPath
	if err := b.call(ctx, nmName, nmPath, nmName+".GetDeviceByIpIface", []any{iface}, &path); err != nil {
		return device{}, err
	}
	var props map[string]dbus.Variant
	if err := b.call(ctx, nmName, path, "org.freedesktop.DBus.Properties.GetAll", []any{nmName + ".Device"}, &props); err != nil {
		return device{}, err
	}
	var d device
	var ok1, ok2 bool
	d.state, ok1 = props["State"].Value().(uint32)
	d.managed, ok2 = props["Managed"].Value().(bool)
	if !ok1 || !ok2 {
		return device{}, fmt.Errorf("device %s: unexpected State %v or Managed %v", iface, props["State"], props["Managed"])
	}
	return d, nil
}
