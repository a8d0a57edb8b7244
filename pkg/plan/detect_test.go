package plan

import (
	"net/netip"
	"regexp"
	"slices"
	"testing"

	"github.com/calico-prep/calico-prep/pkg/host"
)

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

func TestAggregate(t *testing.T) {
	tests := []struct {
		name string
		in   []string
		want []string
	}{
		{"one", []string{"10.0.1.0/24"}, []string{"10.0.1.0/24"}},
		{"duplicates", []string{"10.0.1.0/24", "10.0.1.0/24"}, []string{"10.0.1.0/24"}},
		{"siblings merge", []string{"10.0.1.0/24", "10.0.0.0/24"}, []string{"10.0.0.0/23"}},
		{"merges cascade", []string{"10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24", "10.0.3.0/24"}, []string{"10.0.0.0/22"}},
		{"neighbours that are not siblings stay", []string{"10.0.1.0/24", "10.0.2.0/24"}, []string{"10.0.1.0/24", "10.0.2.0/24"}},
		{"inside another", []string{"10.0.5.0/24", "10.0.0.0/16", "10.0.77.0/24"}, []string{"10.0.0.0/16"}},
		{"uneven sizes", []string{"10.0.0.0/25", "10.0.0.128/25", "10.0.1.0/24"}, []string{"10.0.0.0/23"}},
		{"families apart", []string{"2001:db8::/64", "10.0.0.0/24", "2001:db8:0:1::/64"}, []string{"10.0.0.0/24", "2001:db8::/63"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := prefixStrings(aggregate(prefixes(tt.in...)))
			if !slices.Equal(got, tt.want) {
				t.Errorf("aggregate(%v) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestInterfaceRegex(t *testing.T) {
	tests := []struct {
		names    []string
		want     string
		notMatch []string
	}{
		{[]string{"eth0"}, "^eth0$", []string{"eth00", "veth0", "eth1"}},
		{[]string{"bond0.100", "ens33"}, `^(bond0\.100|ens33)$`, []string{"bond0x100", "ens333", "bond0"}},
		{[]string{"odd,name", "odd#2"}, `^(odd\x2cname|odd\x232)$`, []string{"odd", "odd,"}},
	}
	for _, tt := range tests {
		got := interfaceRegex(tt.names)
		if got != tt.want {
			t.Errorf("interfaceRegex(%q) = %q, want %q", tt.names, got, tt.want)
		}
		re := regexp.MustCompile(got)
		for _, n := range tt.names {
			if !re.MatchString(n) {
				t.Errorf("%q does not match %q", got, n)
			}
		}
		for _, n := range tt.notMatch {
			if re.MatchString(n) {
				t.Errorf("%q matches %q", got, n)
			}
		}
	}
}

func TestRouteSource(t *testing.T) {
	snap := host.Snapshot{
		Interfaces: []host.Interface{
			{Index: 1, Name: "lo", Addrs: prefixes("127.0.0.1/8")},
			{Index: 2, Name: "eth0", Addrs: prefixes("10.0.0.5/24", "10.9.9.5/24", "2001:db8::5/64")},
			{Index: 3, Name: "eth1", Addrs: prefixes("10.200.0.5/24")},
			{Index: 4, Name: "wg0"},
		},
		Routes: []host.Route{
			{Dst: netip.MustParsePrefix("0.0.0.0/0"), Dev: "eth0", Gateway: netip.MustParseAddr("10.9.9.1"), Type: "unicast"},
			{Dst: netip.MustParsePrefix("10.0.0.0/24"), Dev: "eth0", Type: "unicast"},
			{Dst: netip.MustParsePrefix("10.200.0.0/16"), Dev: "eth1", Type: "unicast"},
			{Dst: netip.MustParsePrefix("10.200.7.0/24"), Type: "blackhole"},
			{Dst: netip.MustParsePrefix("10.50.0.0/16"), Dev: "wg0", Type: "unicast"},
			{Dst: netip.MustParsePrefix("10.60.0.0/16"), Dev: "gone0", Type: "unicast"},
			{Dst: netip.MustParsePrefix("2001:db8::/64"), Dev: "eth0", Type: "unicast"},
		},
	}
	tests := []struct {
		name, dest string
		family     int
		want       string
		err        string
	}{
		{name: "local address", dest: "10.200.0.5", family: 4, want: "10.200.0.5"},
		{name: "default route prefers the gateway's network", dest: "8.8.8.8", family: 4, want: "10.9.9.5"},
		{name: "on-link prefers the destination's network", dest: "10.0.0.77", family: 4, want: "10.0.0.5"},
		{name: "longest prefix wins", dest: "10.200.3.3", family: 4, want: "10.200.0.5"},
		{name: "more specific blackhole", dest: "10.200.7.1", family: 4, err: "the route to 10.200.7.1 is blackhole 10.200.7.0/24"},
		{name: "interface without address", dest: "10.50.0.1", family: 4, err: "wg0, the interface of the route to 10.50.0.1, has no global IPv4 address"},
		{name: "interface not in report", dest: "10.60.0.1", family: 4, err: `the route to 10.60.0.1 leaves through "gone0", which the report does not list`},
		{name: "IPv6", dest: "2001:db8::99", family: 6, want: "2001:db8::5"},
		{name: "no IPv6 default route", dest: "2001:db9::1", family: 6, err: "no route to 2001:db9::1 in the report"},
		{name: "host name", dest: "api.example.com", family: 4, err: `the plan cannot resolve "api.example.com"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := routeSource(snap, tt.dest, tt.family)
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Errorf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || got.String() != tt.want {
				t.Errorf("routeSource(%s) = %s, %v; want %s", tt.dest, got, err, tt.want)
			}
		})
	}
}

func TestControlPlaneAndGateway(t *testing.T) {
	ip := func(s string) []netip.Addr { return []netip.Addr{netip.MustParseAddr(s)} }
	nodes := []Node{
		{Name: "w1", InternalIPs: ip("10.0.0.7")},
		{Name: "cp2", ControlPlane: true, InternalIPs: ip("10.0.0.3")},
		{Name: "cp1", ControlPlane: true, InternalIPs: ip("2001:db8::2")},
		{Name: "cp3", ControlPlane: true, InternalIPs: ip("10.0.0.4")},
	}
	if a, name, ok := controlPlaneAddr(nodes, 4); !ok || name != "cp2" || a.String() != "10.0.0.3" {
		t.Errorf("IPv4 control plane = %s %s %v, want cp2 10.0.0.3", name, a, ok)
	}
	if a, name, ok := controlPlaneAddr(nodes, 6); !ok || name != "cp1" || a.String() != "2001:db8::2" {
		t.Errorf("IPv6 control plane = %s %s %v, want cp1 2001:db8::2", name, a, ok)
	}
	if _, _, ok := controlPlaneAddr(nodes[:1], 4); ok {
		t.Error("control plane found among workers")
	}
}
