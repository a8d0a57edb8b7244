package testbed

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/calico-prep/calico-prep/test/testkit"
)

func TestOptionsDefaultsAndValidation(t *testing.T) {
	got, err := Options{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	want := Options{Name: "node", Uplink: "ens33", UplinkAddr: netip.MustParsePrefix("192.168.79.128/24"), PodCIDR: netip.MustParsePrefix("10.65.128.0/24"),
		FirewalldBackend: "nftables", FirewalldVersion: Debian, NetworkManagerVersion: Debian}
	if got != want {
		t.Errorf("defaults = %+v, want %+v", got, want)
	}
	tests := []struct {
		name  string
		opts  Options
		field string
	}{
		{"upper-case name", Options{Name: "Node"}, `Options.Name "Node"`},
		{"name with slash", Options{Name: "a/b"}, `Options.Name "a/b"`},
		{"long uplink", Options{Uplink: "a-very-long-linkname"}, `Options.Uplink "a-very-long-linkname"`},
		{"uplink named like Calico's", Options{Uplink: "tunl0"}, `Options.Uplink "tunl0"`},
		{"IPv6 uplink", Options{UplinkAddr: netip.MustParsePrefix("fd00::1/64")}, `Options.UplinkAddr "fd00::1/64"`},
		{"uplink /32", Options{UplinkAddr: netip.MustParsePrefix("192.168.1.1/32")}, `Options.UplinkAddr "192.168.1.1/32"`},
		{"network address", Options{UplinkAddr: netip.MustParsePrefix("192.168.1.0/24")}, `Options.UplinkAddr "192.168.1.0/24"`},
		{"pod CIDR not masked", Options{PodCIDR: netip.MustParsePrefix("10.65.0.1/24")}, `Options.PodCIDR "10.65.0.1/24"`},
		{"pod CIDR overlaps uplink", Options{PodCIDR: netip.MustParsePrefix("192.168.0.0/16")}, `Options.PodCIDR "192.168.0.0/16"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.opts.withDefaults()
			if err == nil || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("error = %v, want one naming %s", err, tc.field)
			}
			// Start refuses before it creates anything.
			if _, err := Start(t.Context(), tc.opts); err == nil || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("Start error = %v, want one naming %s", err, tc.field)
			}
		})
	}
}

func TestGatewayOf(t *testing.T) {
	tests := []struct{ uplink, gw string }{
		{"192.168.79.128/24", "192.168.79.1"},
		{"192.168.79.1/24", "192.168.79.254"},
		{"10.0.0.2/30", "10.0.0.1"},
		{"10.0.0.1/30", "10.0.0.2"},
	}
	for _, tc := range tests {
		if got := gatewayOf(netip.MustParsePrefix(tc.uplink)); got.String() != tc.gw {
			t.Errorf("gatewayOf(%s) = %s, want %s", tc.uplink, got, tc.gw)
		}
	}
}

func TestNodeLinks(t *testing.T) {
	ctx := testContext(t)
	n := Up(t, Options{Name: "links", Calico: true})

	links := mustExec(t, ctx, n, "ip", "-d", "-o", "link", "show")
	for _, want := range []string{
		`\d+: lo: <LOOPBACK,UP,`,
		`\d+: ens33@if\d+: <BROADCAST,MULTICAST,UP,LOWER_UP>.* veth `,
		`\d+: cali0a1b2c3d4e5@if\d+: <BROADCAST,MULTICAST,UP,LOWER_UP>.* link/ether ee:ee:ee:ee:ee:ee .* veth `,
		`\d+: vxlan\.calico: .*UP.* vxlan id 4096 local 192\.168\.79\.128 dev ens33 .*dstport 4789 `,
	} {
		if !regexp.MustCompile(want).MatchString(links) {
			t.Errorf("links lack %s:\n%s", want, links)
		}
	}
	tunl := mustExec(t, ctx, n, "ip", "-d", "-o", "link", "show", "tunl0")
	isTun := strings.Contains(tunl, " tun type tun ")
	isIPIP := strings.Contains(tunl, " ipip ")
	if isTun == isIPIP || n.TunlIsStandIn != isTun {
		t.Errorf("tunl0 is tun=%v ipip=%v, TunlIsStandIn=%v:\n%s", isTun, isIPIP, n.TunlIsStandIn, tunl)
	}
	addrs := mustExec(t, ctx, n, "ip", "-o", "-4", "addr", "show")
	for _, want := range []string{"ens33    inet 192.168.79.128/24", "tunl0    inet 10.65.128.1/32"} {
		if !strings.Contains(addrs, want) {
			t.Errorf("addresses lack %q:\n%s", want, addrs)
		}
	}
	routes := mustExec(t, ctx, n, "ip", "-4", "route", "show")
	for _, want := range []string{"default via 192.168.79.1 dev ens33", "10.65.128.2 dev cali0a1b2c3d4e5 scope link"} {
		if !strings.Contains(routes, want) {
			t.Errorf("routes lack %q:\n%s", want, routes)
		}
	}

	podNS, podAddr := Pod(n)
	if podAddr != netip.MustParseAddr("10.65.128.2") || !strings.HasPrefix(podNS, n.NetNS+"-pod") {
		t.Fatalf("Pod = %s %s", podNS, podAddr)
	}
	// Real traffic both ways over the cali veth, routed the way Calico routes it.
	serve := func(t *testing.T, ns string) net.Listener {
		t.Helper()
		var l net.Listener
		if err := InNetNS(ns, func() (err error) { l, err = net.Listen("tcp4", ":8080"); return err }); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.Write([]byte("hi"))
				c.Close()
			}
		}()
		return l
	}
	dial := func(ns, addr string) (string, error) {
		var got []byte
		err := InNetNS(ns, func() error {
			c, err := net.DialTimeout("tcp4", addr, 2*time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			got, err = io.ReadAll(c)
			return err
		})
		return string(got), err
	}
	serve(t, podNS)
	serve(t, n.NetNS)
	if got, err := dial(n.NetNS, podAddr.String()+":8080"); err != nil || got != "hi" {
		t.Errorf("node to pod: %q, %v", got, err)
	}
	if got, err := dial(podNS, "192.168.79.128:8080"); err != nil || got != "hi" {
		t.Errorf("pod to node: %q, %v", got, err)
	}
	// The uplink's far side is a namespace of its own holding the gateway address.
	if out, err := ExecNS(ctx, n.lanNS(), "ip", "-o", "-4", "addr", "show", "eth0"); err != nil || !strings.Contains(string(out), "192.168.79.1/24") {
		t.Errorf("uplink peer: %s, %v", out, err)
	}
}

func TestFirewalldPortShowsInNftables(t *testing.T) {
	ctx := testContext(t)
	hostRules := snapshotHost(t, ctx, "fw").ruleset
	n := Up(t, Options{Name: "fw", Firewalld: true})
	conn := dialBus(t, n)

	var zone string
	if err := firewalld(conn).CallWithContext(ctx, firewalldBusName+".getDefaultZone", 0).Store(&zone); err != nil {
		t.Fatal(err)
	}
	if zone != "public" {
		t.Errorf("default zone = %q, want public (the node's firewalld.conf)", zone)
	}
	before := mustExec(t, ctx, n, "nft", "list", "ruleset")
	if strings.Contains(before, "dport 179") {
		t.Fatalf("port 179 open before it was added:\n%s", before)
	}
	var res string
	if err := firewalld(conn).CallWithContext(ctx, firewalldBusName+".zone.addPort", 0, zone, "179", "tcp", int32(0)).Store(&res); err != nil {
		t.Fatal(err)
	}
	after := mustExec(t, ctx, n, "nft", "list", "ruleset")
	if !regexp.MustCompile(`(?s)chain filter_IN_public_allow \{.*tcp dport 179 accept`).MatchString(after) {
		t.Errorf("nft ruleset in the node lacks the port:\n%s", after)
	}
	if got := snapshotHost(t, ctx, "fw").ruleset; got != hostRules {
		t.Errorf("host ruleset changed:\n%s", got)
	}
}

func TestNetworkManagerManagesThenUnmanages(t *testing.T) {
	ctx := testContext(t)
	n := Up(t, Options{Name: "nm", NetworkManager: true, Calico: true})
	for _, link := range []string{"ens33", CaliVeth} {
		st, err := n.deviceState(ctx, link)
		if err != nil {
			t.Fatal(err)
		}
		if st == nmStateUnmanaged || st == nmStateUnknown {
			t.Errorf("%s: state %d, want managed", link, st)
		}
	}
	conn := dialBus(t, n)
	var dev dbus.ObjectPath
	if err := conn.Object(nmBusName, nmPath).CallWithContext(ctx, nmBusName+".GetDeviceByIpIface", 0, CaliVeth).Store(&dev); err != nil {
		t.Fatal(err)
	}
	if err := conn.Object(nmBusName, dev).CallWithContext(ctx, "org.freedesktop.DBus.Properties.Set", 0, nmDeviceIface, "Managed", dbus.MakeVariant(false)).Err; err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, func() string {
		st, err := n.deviceState(ctx, CaliVeth)
		if err != nil || st != nmStateUnmanaged {
			return "cali veth state " + fmtState(st, err) + ", want 10"
		}
		return ""
	})
	if st, err := n.deviceState(ctx, "ens33"); err != nil || st == nmStateUnmanaged {
		t.Errorf("ens33: state %s, want still managed", fmtState(st, err))
	}

	// While it managed the veth, NetworkManager removed the pod's route; once unmanaged,
	// what Felix puts back stays.
	if err := n.RestorePodRoutes(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if routes := mustExec(t, ctx, n, "ip", "-4", "route", "show", "dev", CaliVeth); !strings.Contains(routes, "10.65.128.2 scope link") {
		t.Errorf("pod route gone again:\n%s", routes)
	}
}

func fmtState(st uint32, err error) string {
	if err != nil {
		return err.Error()
	}
	return strconv.Itoa(int(st))
}

func TestNetworkManagerReadsNodeConfDir(t *testing.T) {
	ctx := testContext(t)
	n := Up(t, Options{Name: "nmconf", NetworkManager: true, Calico: true})
	dropIn := "[keyfile]\nunmanaged-devices=interface-name:cali*;interface-name:tunl*;interface-name:vxlan.calico\n"
	if err := os.WriteFile(filepath.Join(n.NMConfDir, "calico.conf"), []byte(dropIn), 0o644); err != nil {
		t.Fatal(err)
	}
	oldPID := n.PID("NetworkManager")
	if err := n.StopNetworkManager(ctx); err != nil {
		t.Fatal(err)
	}
	if n.PID("NetworkManager") != 0 {
		t.Fatal("NetworkManager still has a PID after stop")
	}
	if err := n.StartNetworkManager(ctx); err != nil {
		t.Fatal(err)
	}
	if pid := n.PID("NetworkManager"); pid == 0 || pid == oldPID {
		t.Fatalf("NetworkManager PID %d after restart, was %d", pid, oldPID)
	}
	for link, unmanaged := range map[string]bool{CaliVeth: true, "tunl0": true, "ens33": false} {
		st, err := n.deviceState(ctx, link)
		if err != nil {
			t.Fatal(err)
		}
		if (st == nmStateUnmanaged) != unmanaged {
			t.Errorf("%s: state %d, want unmanaged=%v", link, st, unmanaged)
		}
	}
}

func TestAddCaliVethIsSeenByNetworkManager(t *testing.T) {
	ctx := testContext(t)
	n := Up(t, Options{Name: "addveth", NetworkManager: true})
	if ns, _ := Pod(n); ns != "" {
		t.Fatalf("bare node has a pod %s", ns)
	}
	if err := n.AddCaliVeth(ctx, "cali1111111111a"); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, func() string {
		st, err := n.deviceState(ctx, "cali1111111111a")
		if err != nil || st == nmStateUnknown || st == nmStateUnmanaged {
			return "new veth state " + fmtState(st, err)
		}
		return ""
	})
	ns, addr := Pod(n)
	if addr != netip.MustParseAddr("10.65.128.2") || n.Pods[0].Veth != "cali1111111111a" {
		t.Errorf("Pod = %s %s (%+v)", ns, addr, n.Pods)
	}
	if out, err := ExecNS(ctx, ns, "ip", "-o", "-4", "addr", "show", "eth0"); err != nil || !strings.Contains(string(out), "10.65.128.2/32") {
		t.Errorf("pod address: %s, %v", out, err)
	}
}

func TestFirewalldRestartKeepsPermanentConfig(t *testing.T) {
	ctx := testContext(t)
	n := Up(t, Options{Name: "fwrestart", Firewalld: true})
	conn := dialBus(t, n)
	var zonePath dbus.ObjectPath
	if err := conn.Object(firewalldBusName, firewalldPath+"/config").CallWithContext(ctx, firewalldBusName+".config.getZoneByName", 0, "public").Store(&zonePath); err != nil {
		t.Fatal(err)
	}
	if err := conn.Object(firewalldBusName, zonePath).CallWithContext(ctx, firewalldBusName+".config.zone.addPort", 0, "179", "tcp").Err; err != nil {
		t.Fatal(err)
	}
	if err := firewalld(conn).CallWithContext(ctx, firewalldBusName+".zone.addPort", 0, "", "5473", "tcp", int32(0)).Err; err != nil {
		t.Fatal(err)
	}
	xml, err := os.ReadFile(filepath.Join(n.FirewalldDir, "zones", "public.xml"))
	if err != nil || !strings.Contains(string(xml), `<port port="179" protocol="tcp"/>`) {
		t.Fatalf("permanent zone file in FirewalldDir: %s, %v", xml, err)
	}

	oldPID := n.PID("firewalld")
	if err := n.KillFirewalld(ctx); err != nil {
		t.Fatal(err)
	}
	if ok, err := n.hasOwner(ctx, firewalldBusName); err != nil || ok {
		t.Fatalf("firewalld still on the bus after kill: %v %v", ok, err)
	}
	// A crash leaves firewalld's table behind, as on a real host.
	if rs := mustExec(t, ctx, n, "nft", "list", "tables"); !strings.Contains(rs, "table inet firewalld") {
		t.Errorf("table gone after SIGKILL:\n%s", rs)
	}
	if err := n.StartFirewalld(ctx); err != nil {
		t.Fatal(err)
	}
	if pid := n.PID("firewalld"); pid == 0 || pid == oldPID {
		t.Fatalf("firewalld PID %d after restart, was %d", pid, oldPID)
	}
	query := func(port string) bool {
		t.Helper()
		var ok bool
		if err := firewalld(conn).CallWithContext(ctx, firewalldBusName+".zone.queryPort", 0, "", port, "tcp").Store(&ok); err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if !query("179") {
		t.Error("permanent port 179 not loaded after restart")
	}
	if query("5473") {
		t.Error("runtime-only port 5473 survived a restart")
	}

	if err := n.StopFirewalld(ctx); err != nil {
		t.Fatal(err)
	}
	if rs := mustExec(t, ctx, n, "nft", "list", "tables"); strings.Contains(rs, "firewalld") {
		t.Errorf("table left after SIGTERM (CleanupOnExit):\n%s", rs)
	}
	if err := n.StartFirewalld(ctx); err != nil {
		t.Fatal(err)
	}
	if !query("179") {
		t.Error("permanent port 179 not loaded after stop and start")
	}
}

func TestTrafficBetweenNodesFollowsFirewall(t *testing.T) {
	ctx := testContext(t)
	a := Up(t, Options{Name: "traffica", Firewalld: true, UplinkAddr: netip.MustParsePrefix("192.168.79.128/24")})
	b := Up(t, Options{Name: "trafficb", UplinkAddr: netip.MustParsePrefix("192.168.79.129/24")})
	Connect(t, a, b, netip.MustParsePrefix("10.99.0.1/24"), netip.MustParsePrefix("10.99.0.2/24"))

	var l net.Listener
	if err := a.Do(func() (err error) { l, err = net.Listen("tcp4", ":179"); return err }); err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("bgp"))
			c.Close()
		}
	}()
	dial := func() (string, error) {
		var got []byte
		err := b.Do(func() error {
			c, err := net.DialTimeout("tcp4", "10.99.0.1:179", 2*time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			got, err = io.ReadAll(c)
			return err
		})
		return string(got), err
	}
	if got, err := dial(); err == nil {
		t.Fatalf("B reached A:179 (%q) although A's firewall has no rule for it", got)
	}
	conn := dialBus(t, a)
	if err := firewalld(conn).CallWithContext(ctx, firewalldBusName+".zone.addPort", 0, "", "179", "tcp", int32(0)).Err; err != nil {
		t.Fatal(err)
	}
	if got, err := dial(); err != nil || got != "bgp" {
		t.Fatalf("B to A:179 after addPort: %q, %v", got, err)
	}
}

func TestDownIsIdempotentAndStopsEverything(t *testing.T) {
	ctx := testContext(t)
	n, err := Start(ctx, Options{Name: "down", Firewalld: true, NetworkManager: true, Calico: true})
	if err != nil {
		t.Fatal(err)
	}
	pids := []int{n.PID("dbus"), n.PID("firewalld"), n.PID("NetworkManager")}
	if err := n.Down(ctx); err != nil {
		t.Fatal(err)
	}
	if err := n.Down(ctx); err != nil {
		t.Fatalf("second Down: %v", err)
	}
	for _, pid := range pids {
		if _, err := os.Stat(filepath.Join("/proc", strconv.Itoa(pid))); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("pid %d still exists after Down", pid)
		}
	}
	for _, p := range append([]string{n.Dir, n.NetNS}, n.owned...) {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still exists after Down", p)
		}
	}
	if err := n.StartFirewalld(ctx); err == nil {
		t.Error("StartFirewalld on a downed node succeeded")
	}
	if err := n.AddCaliVeth(ctx, "cali2222222222b"); err == nil {
		t.Error("AddCaliVeth on a downed node succeeded")
	}
}

func TestHostUnchanged(t *testing.T) {
	ctx := testContext(t)
	before := snapshotHost(t, ctx, "hostcheck")
	n, err := Start(ctx, Options{Name: "hostcheck", Firewalld: true, NetworkManager: true, Networkd: true, Calico: true})
	if err != nil {
		t.Fatal(err)
	}
	// Exercise what tests do: rules, a new veth, a crash and restart, a NetworkManager restart.
	conn := dialBus(t, n)
	if err := firewalld(conn).CallWithContext(ctx, firewalldBusName+".zone.addPort", 0, "", "179", "tcp", int32(0)).Err; err != nil {
		t.Error(err)
	}
	if err := n.AddCaliVeth(ctx, "cali3333333333c"); err != nil {
		t.Error(err)
	}
	if err := n.KillFirewalld(ctx); err != nil {
		t.Error(err)
	}
	if err := n.StartFirewalld(ctx); err != nil {
		t.Error(err)
	}
	if err := n.StopNetworkManager(ctx); err != nil {
		t.Error(err)
	}
	if err := n.StartNetworkManager(ctx); err != nil {
		t.Error(err)
	}
	if err := n.StopNetworkd(ctx); err != nil {
		t.Error(err)
	}
	if err := n.StartNetworkd(ctx); err != nil {
		t.Error(err)
	}
	during := snapshotHost(t, ctx, "hostcheck")
	if len(during.netns) == 0 || len(during.children) == 0 {
		t.Errorf("the comparison cannot see the node: netns %v, children %v", during.netns, during.children)
	}
	if err := n.Down(ctx); err != nil {
		t.Fatal(err)
	}
	if d := before.diff(snapshotHost(t, ctx, "hostcheck")); d != "" {
		t.Errorf("host changed:\n%s", d)
	}
}
