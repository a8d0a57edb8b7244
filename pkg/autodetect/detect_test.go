package autodetect

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/calico-prep/calico-prep/test/fixtures"

	"github.com/calico-prep/calico-prep/pkg/check"
	"github.com/calico-prep/calico-prep/pkg/host"
)

// nic builds an interface that is up; addrs are in kernel order.
func nic(index int, name string, addrs ...string) host.Interface {
	i := host.Interface{Index: index, Name: name, Up: true}
	for _, a := range addrs {
		i.Addrs = append(i.Addrs, netip.MustParsePrefix(a))
	}
	return i
}

func down(i host.Interface) host.Interface { i.Up = false; return i }

func mustMethod(t testing.TB, s string) Method {
	t.Helper()
	m, err := ParseMethod(s)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// reachVia returns a CanReach that answers as the kernel would on a host whose source
// address toward every destination is src.
func reachVia(src string) func(context.Context, string, int) (netip.Addr, error) {
	return func(context.Context, string, int) (netip.Addr, error) { return netip.MustParseAddr(src), nil }
}

var (
	lo      = nic(1, "lo", "127.0.0.1/8", "::1/128")
	eth0    = nic(2, "eth0", "fe80::1/64", "192.168.1.10/24", "2001:db8:1::10/64")
	eth1    = nic(3, "eth1", "10.0.0.5/24", "fd00:10::5/64")
	docker0 = nic(4, "docker0", "172.17.0.1/16")
)

func TestDetect(t *testing.T) {
	seed := fixtures.SeedHost(t).Interfaces
	tests := []struct {
		name    string
		method  string
		raw     *Method // instead of method, for a Method ParseMethod would not return
		family  int
		ifaces  []host.Interface
		env     Env
		iface   string
		cidr    string
		warn    []string // substrings, one per expected warning, in order
		wantErr string   // substring; the error must wrap ErrNoAddress
	}{
		{
			name: "seed host: first-found skips lo, virbr0 and docker0", method: "first-found", family: 4,
			ifaces: seed, iface: "ens33", cidr: "192.168.79.128/24",
		},
		{
			name: "empty method is first-found", method: "", family: 4,
			ifaces: seed, iface: "ens33", cidr: "192.168.79.128/24",
		},
		{
			name: "first-found takes the highest ifindex, not the first NIC", method: "first-found", family: 4,
			ifaces: []host.Interface{lo, eth0, eth1}, iface: "eth1", cidr: "10.0.0.5/24",
			warn: []string{"first-found sees 2 interfaces with a usable IPv4 address and picks eth1 10.0.0.5/24 because calico-node takes the highest ifindex (3); it passes over eth0 192.168.1.10/24 (ifindex 2)"},
		},
		{
			name: "walk follows slice order, not Index", method: "first-found", family: 4,
			ifaces: []host.Interface{lo, eth1, eth0}, iface: "eth0", cidr: "192.168.1.10/24",
			warn: []string{"picks eth0 192.168.1.10/24"},
		},
		{
			name: "first global unicast address in kernel order", method: "first-found", family: 4,
			ifaces: []host.Interface{lo, nic(2, "eth0", "169.254.7.7/16", "10.1.0.2/16", "10.1.0.3/16")},
			iface:  "eth0", cidr: "10.1.0.2/16",
		},
		{
			name: "host bits kept in the result", method: "first-found", family: 4,
			ifaces: []host.Interface{nic(2, "eth0", "10.1.2.3/8")}, iface: "eth0", cidr: "10.1.2.3/8",
		},
		{
			name: "^lo has no end anchor: loop0 and local1 are excluded too", method: "first-found", family: 4,
			ifaces: []host.Interface{lo, eth0, nic(7, "loop0", "10.7.0.1/24"), nic(8, "local1", "10.8.0.1/24")},
			iface:  "eth0", cidr: "192.168.1.10/24",
		},
		{
			name: "^veth is anchored at the start: ibmveth0 is not excluded", method: "first-found", family: 4,
			ifaces: []host.Interface{eth0, nic(5, "ibmveth0", "10.5.0.1/24"), nic(6, "veth12ab", "10.6.0.1/24")},
			iface:  "ibmveth0", cidr: "10.5.0.1/24", warn: []string{"first-found sees 2 interfaces"},
		},
		{
			name: "every default exclusion", method: "first-found", family: 4,
			ifaces: []host.Interface{
				eth0, nic(10, "docker0", "10.0.1.1/24"), nic(11, "cbr0", "10.0.2.1/24"), nic(12, "dummy0", "10.0.3.1/24"),
				nic(13, "podman0", "10.0.4.1/24"), nic(14, "virbr1", "10.0.5.1/24"), nic(15, "lxcbr0", "10.0.6.1/24"),
				nic(16, "veth0", "10.0.7.1/24"), nic(17, "lo2", "10.0.8.1/24"), nic(18, "br-1234deadbeef", "10.0.9.1/24"),
				nic(19, "cali12345678901", "10.0.10.1/24"), nic(20, "tunl0", "10.0.11.1/32"), nic(21, "flannel.1", "10.0.12.0/32"),
				nic(22, "kube-ipvs0", "10.96.0.1/32"), nic(23, "cni0", "10.0.13.1/24"), nic(24, "vxlan.calico", "10.0.14.1/32"),
				nic(25, "vxlan-v6.calico", "10.0.15.1/32"), nic(26, "wireguard.cali", "10.0.16.1/32"), nic(27, "wg-v6.cali", "10.0.17.1/32"),
				nic(28, "nodelocaldns", "10.0.18.1/32"),
			},
			iface: "eth0", cidr: "192.168.1.10/24",
		},
		{
			name: "IPv6 first-found skips link-local", method: "first-found", family: 6,
			ifaces: []host.Interface{lo, eth0}, iface: "eth0", cidr: "2001:db8:1::10/64",
		},
		{
			name: "IPv6 unique local counts as global unicast", method: "first-found", family: 6,
			ifaces: []host.Interface{lo, eth0, eth1}, iface: "eth1", cidr: "fd00:10::5/64",
			warn: []string{"first-found sees 2 interfaces with a usable IPv6 address and picks eth1 fd00:10::5/64"},
		},
		{
			name: "only link-local and loopback: nothing", method: "first-found", family: 6,
			ifaces:  []host.Interface{lo, nic(2, "eth0", "fe80::1/64", "192.168.1.10/24")},
			wantErr: "no interface left after calico-node's exclusions has a global unicast IPv6 address (looked at eth0; excluded lo)",
		},
		{
			name: "no interfaces at all", method: "first-found", family: 4,
			wantErr: "calico-node's exclusions leave no interface (excluded: none)",
		},
		{
			name: "a down interface is still picked", method: "first-found", family: 4,
			ifaces: []host.Interface{lo, down(eth1)}, iface: "eth1", cidr: "10.0.0.5/24",
			warn: []string{"eth1 is down; calico-node does not look at link state and picks it anyway"},
		},
		{
			name: "interface= picks the matching NIC first-found would pass over", method: "interface=eth0", family: 4,
			ifaces: []host.Interface{lo, eth0, eth1}, iface: "eth0", cidr: "192.168.1.10/24",
		},
		{
			name: "interface= is unanchored: eth.* also matches veth0, which wins", method: "interface=eth.*", family: 4,
			ifaces: []host.Interface{lo, eth0, nic(5, "veth0", "10.9.9.9/24")}, iface: "veth0", cidr: "10.9.9.9/24",
			warn: []string{
				"interface=eth.* sees 2 interfaces",
				`interface regex "eth.*" also matches veth0 because calico-node matches regexes unanchored; write "^eth.*$" to match whole names only`,
				`the picked interface veth0 is one first-found never picks (it matches the default exclusion "^veth.*")`,
			},
		},
		{
			name: "interface=eth0 also matches the VLAN eth0.100", method: "interface=eth0", family: 4,
			ifaces: []host.Interface{eth0, nic(9, "eth0.100", "10.100.0.2/24")}, iface: "eth0.100", cidr: "10.100.0.2/24",
			warn: []string{"interface=eth0 sees 2", `also matches eth0.100`},
		},
		{
			name: "interface= with alternation gets a grouped suggestion", method: "interface=eth0|eth1", family: 4,
			ifaces: []host.Interface{eth0, nic(9, "veth1", "10.100.0.2/24")}, iface: "veth1", cidr: "10.100.0.2/24",
			warn: []string{"sees 2", `write "^(eth0|eth1)$"`, "default exclusion"},
		},
		{
			name: "interface= lists regexes separated by commas with spaces", method: "interface=nomatch , eth1", family: 4,
			ifaces: []host.Interface{lo, eth0, eth1}, iface: "eth1", cidr: "10.0.0.5/24",
			warn: []string{`interface regex "nomatch" matches no interface`},
		},
		{
			name: "interface= with an empty regex (stray comma) matches everything, docker0 included", method: "interface=eth0,", family: 4,
			ifaces: []host.Interface{lo, eth0, docker0}, iface: "docker0", cidr: "172.17.0.1/16",
			warn: []string{"sees 2", "an empty regex in interface= (a stray comma?) matches every interface", `default exclusion "^docker.*"`},
		},
		{
			name: "interface= has no default exclusions: lo with a global address", method: "interface=lo", family: 4,
			ifaces: []host.Interface{nic(1, "lo", "127.0.0.1/8", "10.255.0.1/32"), eth0}, iface: "lo", cidr: "10.255.0.1/32",
			warn: []string{`default exclusion "^lo"`},
		},
		{
			// Not reachable through ParseMethod, which checks each regex too: calico-node only
			// compiles the joined (eth9)|(eth1), so this is a list of two.
			name: "regexes are joined before compiling", method: "", family: 4, raw: &Method{Kind: Interface, Args: []string{"eth9)|(eth1"}},
			ifaces: []host.Interface{lo, eth0, eth1, nic(4, "eth10", "10.10.0.1/24")}, iface: "eth10", cidr: "10.10.0.1/24",
			warn: []string{"interface=eth9)|(eth1 sees 2"},
		},
		{
			name: "interface= that matches nothing", method: "interface=ens.*", family: 4,
			ifaces: []host.Interface{lo, eth0}, wantErr: `no interface name matches "ens.*" (interfaces: eth0, lo)`,
		},
		{
			name: "interface= matching interfaces without an address", method: "interface=eth0", family: 4,
			ifaces: []host.Interface{lo, nic(2, "eth0", "fe80::1/64")}, wantErr: `no interface matching "eth0" has a global unicast IPv4 address (matching: eth0)`,
		},
		{
			name: "skip-interface= adds to the defaults", method: "skip-interface=eth1", family: 4,
			ifaces: []host.Interface{lo, eth0, eth1, docker0}, iface: "eth0", cidr: "192.168.1.10/24",
		},
		{
			name: "skip-interface= regex that matches nothing", method: "skip-interface=eht1,docker0", family: 4,
			ifaces: []host.Interface{lo, eth0, eth1, docker0}, iface: "eth1", cidr: "10.0.0.5/24",
			warn: []string{"skip-interface=eht1,docker0 sees 2", `skip-interface regex "eht1" matches no interface that the default exclusions leave`, `skip-interface regex "docker0" matches no interface that the default exclusions leave`},
		},
		{
			name: "skip-interface= is unanchored too", method: "skip-interface=eth1", family: 4,
			ifaces: []host.Interface{eth0, eth1, nic(9, "eth10", "10.10.0.1/24")}, iface: "eth0", cidr: "192.168.1.10/24",
			warn: []string{`skip-interface regex "eth1" also matches eth10`},
		},
		{
			name: "skip-interface= with an empty regex skips everything", method: "skip-interface=eth1,", family: 4,
			ifaces: []host.Interface{lo, eth0, eth1}, wantErr: "calico-node's exclusions leave no interface (excluded: eth1, eth0, lo)",
		},
		{
			name: "cidr= with host bits means its network", method: "cidr=192.168.79.128/24", family: 4,
			ifaces: seed, iface: "ens33", cidr: "192.168.79.128/24",
		},
		{
			name: "cidr= has no name filter: docker0 inside 172.16.0.0/12", method: "cidr=172.16.0.0/12", family: 4,
			ifaces: seed, iface: "docker0", cidr: "172.17.0.1/16",
			warn: []string{`the picked interface docker0 is one first-found never picks (it matches the default exclusion "^docker.*")`},
		},
		{
			name: "cidr= with several interfaces inside", method: "cidr=192.168.0.0/16", family: 4,
			ifaces: seed, iface: "virbr0", cidr: "192.168.122.1/24",
			warn: []string{"2 interfaces have an IPv4 address inside 192.168.0.0/16 and calico-node picks virbr0 192.168.122.1/24 because it takes the highest ifindex (3); it passes over ens33 192.168.79.128/24 (ifindex 2)", `default exclusion "^virbr.*"`},
		},
		{
			name: "cidr= takes the first address inside, not the first address", method: "cidr=10.1.0.0/16", family: 4,
			ifaces: []host.Interface{nic(2, "eth0", "192.168.1.10/24", "10.1.0.7/16")}, iface: "eth0", cidr: "10.1.0.7/16",
		},
		{
			name: "cidr= list, IPv6", method: "cidr=10.0.0.0/8, 2001:db8::/32", family: 6,
			ifaces: []host.Interface{lo, eth0, eth1}, iface: "eth0", cidr: "2001:db8:1::10/64",
		},
		{
			name: "cidr= of the other family finds nothing", method: "cidr=10.0.0.0/8", family: 6,
			ifaces: []host.Interface{eth1}, wantErr: "no interface has a global unicast IPv6 address inside 10.0.0.0/8 (interfaces: eth1)",
		},
		{
			name: "can-reach= matches the source address back to its interface", method: "can-reach=8.8.8.8", family: 4,
			ifaces: []host.Interface{lo, eth0, eth1}, env: Env{CanReach: reachVia("192.168.1.10")}, iface: "eth0", cidr: "192.168.1.10/24",
		},
		{
			name: "can-reach= IPv6", method: "can-reach=2001:4860:4860::8888", family: 6,
			ifaces: []host.Interface{lo, eth0, eth1}, env: Env{CanReach: reachVia("fd00:10::5")}, iface: "eth1", cidr: "fd00:10::5/64",
		},
		{
			name: "can-reach= to this node's own address", method: "can-reach=10.0.0.5", family: 4,
			ifaces: []host.Interface{lo, eth0, eth1}, env: Env{CanReach: reachVia("10.0.0.5")}, iface: "eth1", cidr: "10.0.0.5/24",
			warn: []string{"can-reach destination 10.0.0.5 is this node's own address on eth1"},
		},
		{
			name: "can-reach= to loopback lands on lo", method: "can-reach=127.0.0.1", family: 4,
			ifaces: []host.Interface{lo, eth0}, env: Env{CanReach: reachVia("127.0.0.1")}, iface: "lo", cidr: "127.0.0.1/8",
			warn: []string{"can-reach destination 127.0.0.1 is a loopback address; calico-node ends up on lo", `default exclusion "^lo"`, "the picked address 127.0.0.1/8 is a loopback address"},
		},
		{
			name: "can-reach= source address on no interface", method: "can-reach=8.8.8.8", family: 4,
			ifaces: []host.Interface{lo, eth0}, env: Env{CanReach: reachVia("10.99.0.1")},
			wantErr: `the kernel's source address toward "8.8.8.8", 10.99.0.1, is on no local interface`,
		},
		{
			name: "can-reach= unreachable", method: "can-reach=203.0.113.9", family: 4,
			ifaces: []host.Interface{lo, eth0},
			env: Env{CanReach: func(context.Context, string, int) (netip.Addr, error) {
				return netip.Addr{}, errors.New("connect: network is unreachable")
			}},
			wantErr: `find the source address toward "203.0.113.9": connect: network is unreachable`,
		},
		{
			name: "kubernetes-internal-ip takes the prefix of the local address", method: "kubernetes-internal-ip", family: 4,
			ifaces: []host.Interface{lo, eth0, eth1}, env: Env{NodeInternalIPs: []netip.Addr{netip.MustParseAddr("192.168.1.10")}},
			iface: "eth0", cidr: "192.168.1.10/24",
		},
		{
			name: "kubernetes-internal-ip uses the first InternalIP of the family", method: "kubernetes-internal-ip", family: 6,
			ifaces: []host.Interface{lo, eth0, eth1},
			env: Env{NodeInternalIPs: []netip.Addr{
				netip.MustParseAddr("192.168.1.10"), netip.MustParseAddr("fd00:10::5"), netip.MustParseAddr("2001:db8:1::10"),
			}},
			iface: "eth1", cidr: "fd00:10::5/64",
			warn: []string{"the Node has 2 IPv6 InternalIPs and calico-node uses only the first, fd00:10::5"},
		},
		{
			name: "kubernetes-internal-ip not on any local interface", method: "kubernetes-internal-ip", family: 4,
			ifaces: []host.Interface{lo, eth0}, env: Env{NodeInternalIPs: []netip.Addr{netip.MustParseAddr("203.0.113.7")}},
			wantErr: "the Node's InternalIP 203.0.113.7 is on no local interface",
		},
		{
			name: "kubernetes-internal-ip without an InternalIP of the family", method: "kubernetes-internal-ip", family: 6,
			ifaces: []host.Interface{lo, eth0}, env: Env{NodeInternalIPs: []netip.Addr{netip.MustParseAddr("192.168.1.10")}},
			wantErr: "the Node has no IPv6 InternalIP (InternalIPs: 192.168.1.10)",
		},
		{
			name: "kubernetes-internal-ip without a Node", method: "kubernetes-internal-ip", family: 4,
			ifaces: []host.Interface{lo, eth0}, wantErr: "the Node has no IPv4 InternalIP (InternalIPs: none)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := mustMethod(t, tt.method)
			if tt.raw != nil {
				m = *tt.raw
			}
			got, err := Detect(context.Background(), m, tt.family, tt.ifaces, tt.env)
			if tt.wantErr != "" {
				if !errors.Is(err, ErrNoAddress) {
					t.Fatalf("err = %v, want one wrapping ErrNoAddress", err)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %q\nwant it to contain %q", err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), `with "`+m.String()+`"`) {
					t.Errorf("err = %q does not name the method", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Interface != tt.iface || got.CIDR != netip.MustParsePrefix(tt.cidr) || got.Method != m.String() {
				t.Errorf("got %s %s %s, want %s %s %s", got.Method, got.Interface, got.CIDR, m, tt.iface, tt.cidr)
			}
			if len(got.Warnings) != len(tt.warn) {
				t.Fatalf("warnings = %q, want %d matching %q", got.Warnings, len(tt.warn), tt.warn)
			}
			for i, w := range tt.warn {
				if !strings.Contains(got.Warnings[i], w) {
					t.Errorf("warning %d = %q\nwant it to contain %q", i, got.Warnings[i], w)
				}
			}
		})
	}
}

func TestDetectRejectsBadInput(t *testing.T) {
	tests := []struct {
		name   string
		method Method
		family int
		want   string
	}{
		{"family", Method{Kind: FirstFound}, 5, `detect address with "first-found": unsupported IP family 5: want 4 or 6`},
		{"regex built without ParseMethod", Method{Kind: Interface, Args: []string{"eth("}}, 4, `compile interface regexes ["eth("] as calico-node joins them`},
		{"unterminated \\Q breaks the joined list", Method{Kind: SkipInterface, Args: []string{`\Qeth`}}, 4, "as calico-node joins them"},
		{"kind", Method{Kind: "nearest"}, 4, `unknown method kind "nearest"`},
		{"can-reach without destination", Method{Kind: CanReach}, 4, "can-reach needs one destination, got 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Detect(context.Background(), tt.method, tt.family, []host.Interface{eth0}, Env{})
			if err == nil || errors.Is(err, ErrNoAddress) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want a non-ErrNoAddress error containing %q", err, tt.want)
			}
		})
	}
}

func TestResultJSON(t *testing.T) {
	res, err := Detect(context.Background(), Method{Kind: FirstFound}, 4, []host.Interface{eth0}, Env{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"method":"first-found","interface":"eth0","cidr":"192.168.1.10/24","warnings":[]}`
	if string(b) != want {
		t.Errorf("JSON = %s\nwant  %s", b, want)
	}
}

func TestCheck(t *testing.T) {
	seed := fixtures.SeedHost(t)
	snap := func(s host.Snapshot, err error) func(context.Context) (host.Snapshot, error) {
		return func(context.Context) (host.Snapshot, error) { return s, err }
	}
	tests := []struct {
		name     string
		method   string
		family   int
		snapshot func(context.Context) (host.Snapshot, error)
		env      func(context.Context) Env
		want     check.Result
	}{
		{
			name: "seed host passes naming the choice", method: "first-found", family: 4, snapshot: snap(seed, nil),
			want: check.Result{Status: check.Pass, Reason: "Satisfied", Message: "first-found picks ens33 192.168.79.128/24",
				Facts: map[string]string{"method": "first-found", "interface": "ens33", "cidr": "192.168.79.128/24", "warnings": "0"}},
		},
		{
			name: "warnings go into the message", method: "cidr=192.168.0.0/16", family: 4, snapshot: snap(seed, nil),
			want: check.Result{Status: check.Pass, Reason: "Satisfied",
				Message: "cidr=192.168.0.0/16 picks virbr0 192.168.122.1/24; 2 interfaces have an IPv4 address inside 192.168.0.0/16 and calico-node picks virbr0 192.168.122.1/24 because it takes the highest ifindex (3); it passes over ens33 192.168.79.128/24 (ifindex 2); narrow the CIDR to the node network; " +
					`the picked interface virbr0 is one first-found never picks (it matches the default exclusion "^virbr.*"): a loopback, container, bridge or tunnel device`,
				Facts: map[string]string{"method": "cidr=192.168.0.0/16", "interface": "virbr0", "cidr": "192.168.122.1/24", "warnings": "2"}},
		},
		{
			name: "seed host has no IPv6 address", method: "first-found", family: 6, snapshot: snap(seed, nil),
			want: check.Result{Status: check.Fail, Reason: "NoAddressDetected",
				Message: `detect IPv6 address with "first-found": no interface left after calico-node's exclusions has a global unicast IPv6 address (looked at ens33; excluded docker0, virbr0-nic, virbr0, lo): calico-node would detect no address`,
				Facts:   map[string]string{"method": "first-found"}},
		},
		{
			name: "InternalIP from the env", method: "kubernetes-internal-ip", family: 4, snapshot: snap(seed, nil),
			env: func(context.Context) Env {
				return Env{NodeInternalIPs: []netip.Addr{netip.MustParseAddr("192.168.79.128")}}
			},
			want: check.Result{Status: check.Pass, Reason: "Satisfied", Message: "kubernetes-internal-ip picks ens33 192.168.79.128/24",
				Facts: map[string]string{"method": "kubernetes-internal-ip", "interface": "ens33", "cidr": "192.168.79.128/24", "warnings": "0"}},
		},
		{
			name: "snapshot error", method: "first-found", family: 4, snapshot: snap(host.Snapshot{}, errors.New("netlink: permission denied")),
			want: check.Result{Status: check.Fail, Reason: "VerifyError", Message: "read interfaces: netlink: permission denied"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewCheck(mustMethod(t, tt.method), tt.family, tt.snapshot, tt.env)
			if want := "autodetect/ipv" + string(rune('0'+tt.family)); c.Name != want || c.Apply != nil {
				t.Errorf("name %q apply %v, want %q and a read-only check", c.Name, c.Apply != nil, want)
			}
			got := c.Verify(context.Background())
			gb, _ := json.Marshal(got)
			wb, _ := json.Marshal(tt.want)
			if string(gb) != string(wb) {
				t.Errorf("got  %s\nwant %s", gb, wb)
			}
		})
	}
}
