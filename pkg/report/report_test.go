package report

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/calico-prep/calico-prep/pkg/autodetect"
	"github.com/calico-prep/calico-prep/pkg/check"
	"github.com/calico-prep/calico-prep/pkg/host"
)

func seedSnapshot() host.Snapshot {
	p := netip.MustParsePrefix
	return host.Snapshot{
		Interfaces: []host.Interface{
			{Index: 1, Name: "lo", Addrs: []netip.Prefix{p("127.0.0.1/8")}},
			{Index: 2, Name: "ens33", Up: true, Addrs: []netip.Prefix{p("192.168.79.128/24")}},
			{Index: 3, Name: "virbr0-nic"},
			{Index: 4, Name: "cali0a1b2c3d4e5", Type: "veth"},
			{Index: 5, Name: "tunl0", Type: "ipip", Addrs: []netip.Prefix{p("172.16.5.0/32")}},
		},
		Routes: []host.Route{
			{Dst: p("0.0.0.0/0"), Dev: "ens33", Gateway: netip.MustParseAddr("192.168.79.2"), Protocol: "boot"},
			{Dst: p("172.16.5.1/32"), Dev: "cali0a1b2c3d4e5", Protocol: "boot"},
			{Dst: p("172.16.9.0/26"), Dev: "tunl0", Protocol: "bird"},
			{Dst: p("172.16.5.0/26"), Type: "blackhole", Protocol: "bird"},
		},
	}
}

// The report leaves out what churns with pods: workload veths, tunnels and Calico's routes.
func TestHostOfLeavesOutCalico(t *testing.T) {
	got := HostOf(seedSnapshot())
	var names []string
	for _, i := range got.Interfaces {
		names = append(names, i.Name)
	}
	if !reflect.DeepEqual(names, []string{"lo", "ens33"}) {
		t.Errorf("interfaces %v, want lo ens33", names)
	}
	if len(got.Routes) != 1 || got.Routes[0].Dev != "ens33" {
		t.Errorf("routes %+v, want only the default route", got.Routes)
	}
}

func TestEncodeDecodeAndStability(t *testing.T) {
	var n Node
	n.FromChecks(check.Report{Ready: false, Entries: []check.Entry{
		{Name: "cidr/ipv4-pool", Result: check.Failed("PodCIDROverlap", "pod CIDR 192.168.0.0/16 overlaps ens33 address 192.168.79.128/24")},
		{Name: "kernel/module/ipip", Result: check.Result{Status: check.Disabled}},
		{Name: "kernel/version", Result: check.Passed("ok")},
	}})
	n.Host = HostOf(seedSnapshot())
	n.Autodetect = []autodetect.Result{{Method: "first-found", Interface: "ens33", CIDR: netip.MustParsePrefix("192.168.79.128/24"), Warnings: []string{}}}
	a, err := n.Encode()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := n.Encode()
	if a != b || strings.Contains(a, "time") {
		t.Fatalf("the annotation must be a pure function of the node's state:\n%s\n%s", a, b)
	}
	back, err := Decode(a)
	if err != nil {
		t.Fatal(err)
	}
	if len(back.Failing) != 1 || back.Failing[0].Reason != "PodCIDROverlap" || !reflect.DeepEqual(back.Disabled, []string{"kernel/module/ipip"}) || back.Host.Interfaces[1].Name != "ens33" {
		t.Fatalf("decoded %+v", back)
	}
	if _, err := Decode(`{"v":99}`); err == nil || !strings.Contains(err.Error(), "unsupported version 99") {
		t.Fatalf("newer schema accepted: %v", err)
	}
}

func TestEncodeStaysSmall(t *testing.T) {
	var n Node
	for i := range 5000 {
		n.Host.Routes = append(n.Host.Routes, host.Route{Dst: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24), Dev: "ens33", Protocol: "static"})
	}
	n.Host.Interfaces = []host.Interface{{Index: 2, Name: "ens33", Addrs: []netip.Prefix{netip.MustParsePrefix("10.0.0.5/16")}}}
	s, err := n.Encode()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Decode(s)
	if err != nil || len(s) > MaxSize || !back.Truncated || len(back.Host.Routes) != 0 || len(back.Host.Interfaces) != 1 {
		t.Fatalf("%d bytes, truncated=%v, %d routes, %d interfaces, err %v", len(s), back.Truncated, len(back.Host.Routes), len(back.Host.Interfaces), err)
	}
}

func TestHostOfLeavesOutServiceDummies(t *testing.T) {
	snap := seedSnapshot()
	snap.Interfaces = append(snap.Interfaces, host.Interface{Index: 9, Name: "kube-ipvs0", Addrs: []netip.Prefix{netip.MustParsePrefix("10.96.0.1/32")}})
	for _, i := range HostOf(snap).Interfaces {
		if i.Name == "kube-ipvs0" {
			t.Fatal("kube-ipvs0 reported: every Service change would rewrite every node's report")
		}
	}
}

// FuzzDecode: an annotation anyone can edit never panics the decoder (agent plan reads them
// from every node), and what decodes encodes again.
func FuzzDecode(f *testing.F) {
	f.Add(`{"v":1,"ready":true,"host":{"interfaces":[{"index":2,"name":"ens33","addrs":["192.168.79.128/24"]}]}}`)
	f.Add(`{"v":1,"failing":[{"check":"a","reason":"B","message":"c"}],"pools":["192.168.0.0/16"]}`)
	f.Add(`{"v":0}`)
	f.Fuzz(func(t *testing.T, s string) {
		n, err := Decode(s)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "decode report") {
				t.Fatalf("error %q does not say what failed", err)
			}
			return
		}
		if _, err := n.Encode(); err != nil {
			t.Fatalf("decoded report does not encode: %v", err)
		}
	})
}
