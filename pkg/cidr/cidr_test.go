package cidr

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"reflect"
	"testing"

	"github.com/calico-prep/calico-prep/test/fixtures"

	"github.com/calico-prep/calico-prep/pkg/check"
	"github.com/calico-prep/calico-prep/pkg/host"
)

func pfx(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

func nic(index int, name string, addrs ...string) host.Interface {
	return host.Interface{Index: index, Name: name, Up: true, Addrs: pfx(addrs...)}
}

func route(dst, dev, typ, proto string) host.Route {
	return host.Route{Dst: netip.MustParsePrefix(dst), Dev: dev, Type: typ, Protocol: proto}
}

func strs(cs []Collision) []string {
	out := []string{}
	for _, c := range cs {
		out = append(out, c.String())
	}
	return out
}

func TestCollisions(t *testing.T) {
	seed := fixtures.SeedHost(t)
	uplink := nic(2, "eth0", "10.1.2.3/16", "fe80::1/64", "2001:db8:1::5/64")
	tests := []struct {
		name string
		in   Input
		snap host.Snapshot
		want []string
	}{
		{
			name: "seed host: the default pool overlaps ens33 and virbr0; their kernel routes are not repeated",
			in:   Input{Pools: pfx("192.168.0.0/16")}, snap: seed,
			want: []string{
				"pod CIDR 192.168.0.0/16 overlaps ens33 address 192.168.79.128/24",
				"pod CIDR 192.168.0.0/16 overlaps virbr0 address 192.168.122.1/24",
			},
		},
		{
			name: "seed host: 172.16.0.0/16 is clean (docker0 is 172.17.0.0/16)",
			in:   Input{Pools: pfx("172.16.0.0/16")}, snap: seed, want: []string{},
		},
		{
			name: "seed host: 172.16.0.0/12 contains docker0's network",
			in:   Input{Pools: pfx("172.16.0.0/12")}, snap: seed,
			want: []string{"pod CIDR 172.16.0.0/12 overlaps docker0 address 172.17.0.1/16"},
		},
		{
			name: "an address collides through its network, not just itself",
			in:   Input{Pools: pfx("10.1.200.0/24")}, snap: host.Snapshot{Interfaces: []host.Interface{uplink}},
			want: []string{"pod CIDR 10.1.200.0/24 overlaps eth0 address 10.1.2.3/16"},
		},
		{
			name: "a pool inside a host address's network and one containing it",
			in:   Input{Pools: pfx("10.0.0.0/8", "10.1.2.0/24")}, snap: host.Snapshot{Interfaces: []host.Interface{uplink}},
			want: []string{
				"pod CIDR 10.0.0.0/8 overlaps eth0 address 10.1.2.3/16",
				"pod CIDR 10.1.2.0/24 overlaps eth0 address 10.1.2.3/16",
			},
		},
		{
			name: "loopback and link-local addresses are skipped",
			in:   Input{Pools: pfx("127.0.0.0/8", "169.254.0.0/16", "fe80::/10", "::1/128")},
			snap: host.Snapshot{Interfaces: []host.Interface{
				nic(1, "lo", "127.0.0.1/8", "::1/128"), nic(2, "eth0", "169.254.10.1/16", "fe80::1/64"),
			}},
			want: []string{},
		},
		{
			name: "IPv6",
			in:   Input{Pools: pfx("2001:db8::/32", "fd00:10::/48")}, snap: host.Snapshot{Interfaces: []host.Interface{uplink}},
			want: []string{"pod CIDR 2001:db8::/32 overlaps eth0 address 2001:db8:1::5/64"},
		},
		{
			name: "families never collide with each other",
			in:   Input{Pools: pfx("::/0", "0.0.0.0/0")}, snap: host.Snapshot{Interfaces: []host.Interface{nic(2, "eth0", "10.1.2.3/16")}},
			want: []string{"pod CIDR 0.0.0.0/0 overlaps eth0 address 10.1.2.3/16"},
		},
		{
			name: "routes: default skipped, others reported with their device or type",
			in:   Input{Pools: pfx("10.244.0.0/16")},
			snap: host.Snapshot{Interfaces: []host.Interface{nic(2, "eth0", "192.168.1.10/24")}, Routes: []host.Route{
				route("0.0.0.0/0", "eth0", "unicast", "dhcp"),
				route("10.0.0.0/8", "eth1", "unicast", "static"),
				route("10.244.3.0/24", "", "blackhole", "static"),
				route("10.244.9.0/24", "", "unreachable", "boot"),
				route("0.0.0.0/1", "tun0", "unicast", "boot"),
				route("192.168.1.0/24", "eth0", "unicast", "kernel"),
			}},
			want: []string{
				"pod CIDR 10.244.0.0/16 overlaps route 10.0.0.0/8 via eth1",
				"pod CIDR 10.244.0.0/16 overlaps blackhole route 10.244.3.0/24",
				"pod CIDR 10.244.0.0/16 overlaps unreachable route 10.244.9.0/24",
				"pod CIDR 10.244.0.0/16 overlaps route 0.0.0.0/1 via tun0",
			},
		},
		{
			name: "IPv6 default and link-local routes are skipped",
			in:   Input{Pools: pfx("::/1", "fe80::/16")},
			snap: host.Snapshot{Routes: []host.Route{
				route("::/0", "eth0", "unicast", "ra"), route("fe80::/64", "eth0", "unicast", "kernel"),
				route("2001:db8::/64", "eth0", "unicast", "ra"),
			}},
			want: []string{"pod CIDR ::/1 overlaps route 2001:db8::/64 via eth0"},
		},
		{
			name: "Calico's own addresses and routes do not count, so a node stays ready after Calico runs",
			in:   Input{Pools: pfx("10.244.0.0/16")},
			snap: host.Snapshot{
				Interfaces: []host.Interface{
					nic(2, "eth0", "192.168.1.10/24"), nic(5, "tunl0", "10.244.12.0/32"), nic(6, "vxlan.calico", "10.244.12.1/32"),
					nic(7, "wireguard.cali", "10.244.12.2/32"), nic(8, "vxlan-v6.calico", "fd00:244::1/128"), nic(9, "wg-v6.cali"),
					nic(10, "cali1a2b3c4d5e6", "fe80::ecee:eeff:feee:eeee/64"),
				},
				Routes: []host.Route{
					route("10.244.12.0/26", "", "blackhole", "bird"),              // BGP mode, own block
					route("10.244.13.0/26", "", "blackhole", "80"),                // VXLAN mode, own block
					route("10.244.7.0/26", "eth0", "unicast", "bird"),             // BGP without encapsulation
					route("10.244.8.0/26", "eth0", "unicast", "80"),               // VXLAN CrossSubnet, same subnet
					route("10.244.9.0/26", "tunl0", "unicast", "bird"),            // IPIP
					route("10.244.10.0/26", "vxlan.calico", "unicast", "80"),      // VXLAN
					route("10.244.12.5/32", "cali1a2b3c4d5e6", "unicast", "boot"), // a workload
				},
			},
			want: []string{},
		},
		{
			name: "a BGP route that covers more than the pool is not Calico's block",
			in:   Input{Pools: pfx("10.244.0.0/16")},
			snap: host.Snapshot{Routes: []host.Route{route("10.240.0.0/12", "eth0", "unicast", "bird")}},
			want: []string{"pod CIDR 10.244.0.0/16 overlaps route 10.240.0.0/12 via eth0"},
		},
		{
			name: "a kernel route to an address's network is reported once, through the address",
			in:   Input{Pools: pfx("10.0.0.0/8")},
			snap: host.Snapshot{
				Interfaces: []host.Interface{nic(2, "eth0", "10.1.2.3/16")},
				Routes:     []host.Route{route("10.1.0.0/16", "eth0", "unicast", "kernel"), route("10.2.0.0/16", "eth0", "unicast", "static")},
			},
			want: []string{
				"pod CIDR 10.0.0.0/8 overlaps eth0 address 10.1.2.3/16",
				"pod CIDR 10.0.0.0/8 overlaps route 10.2.0.0/16 via eth0",
			},
		},
		{
			name: "service CIDRs",
			in:   Input{Pools: pfx("10.96.0.0/16", "fd00:96::/64"), ServiceCIDRs: pfx("10.96.0.0/12", "fd00:96::/108", "10.0.0.0/24")},
			want: []string{
				"pod CIDR 10.96.0.0/16 overlaps service CIDR 10.96.0.0/12",
				"pod CIDR fd00:96::/64 overlaps service CIDR fd00:96::/108",
			},
		},
		{
			name: "kubeadm podSubnet",
			in: Input{
				Pools:          pfx("192.168.0.0/16", "10.244.0.0/24", "10.0.0.0/8", "fd00:10::/64"),
				KubeadmSubnets: pfx("10.244.0.0/16", "10.245.0.0/16"),
			},
			want: []string{
				"pod CIDR 192.168.0.0/16 is not inside kubeadm podSubnet 10.244.0.0/16 or 10.245.0.0/16",
				"pod CIDR 10.0.0.0/8 is not inside kubeadm podSubnet 10.244.0.0/16 or 10.245.0.0/16",
				"pod CIDR fd00:10::/64 is not inside kubeadm podSubnet 10.244.0.0/16, 10.245.0.0/16, which has no IPv6 network",
			},
		},
		{
			name: "dual-stack kubeadm podSubnet",
			in:   Input{Pools: pfx("10.244.0.0/16", "fd00:10::/64"), KubeadmSubnets: pfx("10.244.0.0/16", "fd00:10::/56")},
			want: []string{},
		},
		{
			name: "order: addresses, routes, service CIDRs, kubeadm",
			in:   Input{Pools: pfx("10.0.0.0/8"), ServiceCIDRs: pfx("10.96.0.0/12"), KubeadmSubnets: pfx("10.244.0.0/16")},
			snap: host.Snapshot{
				Interfaces: []host.Interface{nic(2, "eth0", "10.1.2.3/16")},
				Routes:     []host.Route{route("10.50.0.0/16", "eth1", "unicast", "static")},
			},
			want: []string{
				"pod CIDR 10.0.0.0/8 overlaps eth0 address 10.1.2.3/16",
				"pod CIDR 10.0.0.0/8 overlaps route 10.50.0.0/16 via eth1",
				"pod CIDR 10.0.0.0/8 overlaps service CIDR 10.96.0.0/12",
				"pod CIDR 10.0.0.0/8 is not inside kubeadm podSubnet 10.244.0.0/16",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := strs(Collisions(tt.in, tt.snap)); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestCollisionJSON(t *testing.T) {
	cs := Collisions(Input{Pools: pfx("192.168.0.0/16")}, fixtures.SeedHost(t))
	b, err := json.Marshal(cs[0])
	if err != nil {
		t.Fatal(err)
	}
	want := `{"pool":"192.168.0.0/16","kind":"address","other":"192.168.79.128/24","interface":"ens33"}`
	if string(b) != want {
		t.Errorf("got  %s\nwant %s", b, want)
	}
}

func TestChecks(t *testing.T) {
	seed := fixtures.SeedHost(t)
	snap := func(context.Context) (host.Snapshot, error) { return seed, nil }
	tests := []struct {
		name string
		in   Input
		want map[string]check.Result
	}{
		{
			name: "seed host with the default pool",
			in:   Input{Pools: pfx("192.168.0.0/16")},
			want: map[string]check.Result{"cidr/ipv4-pool": {
				Status: check.Fail, Reason: "PodCIDROverlap",
				Message: "pod CIDR 192.168.0.0/16 overlaps ens33 address 192.168.79.128/24 (and 1 more)",
				Facts:   map[string]string{"pools": "192.168.0.0/16", "collisions": "2"},
			}},
		},
		{
			name: "dual stack, clean, inside kubeadm's podSubnet",
			in:   Input{Pools: pfx("fd00:10::/64", "172.16.0.0/16"), ServiceCIDRs: pfx("10.96.0.0/12"), KubeadmSubnets: pfx("172.16.0.0/16", "fd00:10::/56")},
			want: map[string]check.Result{
				"cidr/ipv4-pool": {Status: check.Pass, Reason: "Satisfied",
					Message: "pod CIDR 172.16.0.0/16 overlaps no host address, route or service CIDR and lies inside kubeadm's podSubnet",
					Facts:   map[string]string{"pools": "172.16.0.0/16", "collisions": "0"}},
				"cidr/ipv6-pool": {Status: check.Pass, Reason: "Satisfied",
					Message: "pod CIDR fd00:10::/64 overlaps no host address, route or service CIDR and lies inside kubeadm's podSubnet",
					Facts:   map[string]string{"pools": "fd00:10::/64", "collisions": "0"}},
			},
		},
		{
			name: "only outside kubeadm's podSubnet",
			in:   Input{Pools: pfx("172.16.0.0/16"), KubeadmSubnets: pfx("10.244.0.0/16")},
			want: map[string]check.Result{"cidr/ipv4-pool": {
				Status: check.Fail, Reason: "PodCIDROutsideKubeadmSubnet",
				Message: "pod CIDR 172.16.0.0/16 is not inside kubeadm podSubnet 10.244.0.0/16",
				Facts:   map[string]string{"pools": "172.16.0.0/16", "collisions": "1"},
			}},
		},
		{name: "no pools, no checks", in: Input{}, want: map[string]check.Result{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := map[string]check.Result{}
			for _, c := range Checks(tt.in, snap) {
				if c.Apply != nil {
					t.Errorf("%s is not read-only", c.Name)
				}
				got[c.Name] = c.Verify(context.Background())
			}
			if !reflect.DeepEqual(got, tt.want) {
				gb, _ := json.MarshalIndent(got, "", " ")
				wb, _ := json.MarshalIndent(tt.want, "", " ")
				t.Errorf("got  %s\nwant %s", gb, wb)
			}
		})
	}
	t.Run("snapshot error", func(t *testing.T) {
		cs := Checks(Input{Pools: pfx("10.244.0.0/16")}, func(context.Context) (host.Snapshot, error) {
			return host.Snapshot{}, errors.New("netlink: operation not permitted")
		})
		r := cs[0].Verify(context.Background())
		if r.Status != check.Fail || r.Reason != "VerifyError" || r.Message != "read addresses and routes: netlink: operation not permitted" {
			t.Errorf("got %+v", r)
		}
	})
}
