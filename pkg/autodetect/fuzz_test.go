package autodetect

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/calico-prep/calico-prep/pkg/calico"

	"github.com/calico-prep/calico-prep/pkg/host"
)

// Seed corpora live in testdata/fuzz/<FuzzName>.

func FuzzParseMethod(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseMethod(s)
		if err != nil {
			if !strings.Contains(err.Error(), fmt.Sprintf("%q", s)) {
				t.Fatalf("error %q does not name the method %q", err, s)
			}
			return
		}
		again, err := ParseMethod(m.String())
		if err != nil {
			t.Fatalf("String() %q of parsed %q does not parse: %v", m.String(), s, err)
		}
		if !reflect.DeepEqual(again, m) {
			t.Fatalf("%q parses to %#v, its String() %q to %#v", s, m, m.String(), again)
		}
		if m.Kind == CIDR && len(m.CIDRs) != len(m.Args) {
			t.Fatalf("%q: %d CIDRs for %d args", s, len(m.CIDRs), len(m.Args))
		}
	})
}

// byteReader hands out fuzz bytes, zeros once they run out.
type byteReader struct{ b []byte }

func (r *byteReader) next() byte {
	if len(r.b) == 0 {
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *byteReader) bytes(n int) []byte {
	out := make([]byte, n)
	for i := range out {
		out[i] = r.next()
	}
	return out
}

var fuzzNames = []string{
	"lo", "eth0", "eth1", "ens33", "veth0", "docker0", "virbr0", "virbr0-nic", "loop0", "eth0.100",
	"cali1234", "tunl0", "br-1a2b", "ibmveth0", "vxlan.calico", "wg-v6.cali", "bond0", "x",
}

func (r *byteReader) addr() netip.Prefix {
	switch k := r.next() % 10; k {
	case 0:
		return netip.MustParsePrefix("127.0.0.1/8")
	case 1:
		return netip.PrefixFrom(netip.AddrFrom4([4]byte{169, 254, r.next(), r.next()}), 16)
	case 2:
		return netip.MustParsePrefix("fe80::1/64")
	case 3:
		// IPv4-mapped IPv6, which calico-node counts as IPv4.
		return netip.PrefixFrom(netip.AddrFrom16([16]byte{10: 0xff, 11: 0xff, 12: 10, 13: r.next(), 14: 0, 15: 1}), 96+int(r.next()%33))
	case 4, 5, 6:
		a := netip.AddrFrom4([4]byte(r.bytes(4)))
		return netip.PrefixFrom(a, int(r.next()%33))
	default:
		a := netip.AddrFrom16([16]byte(r.bytes(16)))
		return netip.PrefixFrom(a, int(r.next()%129))
	}
}

func (r *byteReader) interfaces() []host.Interface {
	n := int(r.next() % 8)
	out := make([]host.Interface, n)
	for i := range out {
		out[i] = host.Interface{Index: i + 1, Name: fuzzNames[int(r.next())%len(fuzzNames)], Up: r.next()%2 == 0}
		for range int(r.next() % 4) {
			out[i].Addrs = append(out[i].Addrs, r.addr())
		}
	}
	return out
}

func FuzzDetect(f *testing.F) {
	f.Fuzz(func(t *testing.T, method string, ipv6 bool, data []byte) {
		m, err := ParseMethod(method)
		if err != nil {
			return
		}
		family := 4
		if ipv6 {
			family = 6
		}
		r := &byteReader{data}
		ifaces := r.interfaces()
		local := r.addr().Addr()
		var internal []netip.Addr
		for range int(r.next() % 3) {
			internal = append(internal, r.addr().Addr())
		}
		env := Env{
			CanReach:        func(context.Context, string, int) (netip.Addr, error) { return local, nil },
			NodeInternalIPs: internal,
		}
		res, err := Detect(context.Background(), m, family, ifaces, env)
		wantIface, wantAddr, wantOK := reference(m, family, ifaces, local, internal)
		if err != nil {
			if !errors.Is(err, ErrNoAddress) {
				t.Fatalf("%q: unexpected error kind: %v", m, err)
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("%q", m.String())) {
				t.Fatalf("error %q does not name the method %q", err, m)
			}
			if wantOK {
				t.Fatalf("%q IPv%d on %v: error %v, calico-node would pick %d/%d", m, family, ifaces, err, wantIface, wantAddr)
			}
			return
		}
		if !wantOK {
			t.Fatalf("%q IPv%d on %v: picked %s %s, calico-node would pick nothing", m, family, ifaces, res.Interface, res.CIDR)
		}
		if res.Interface != ifaces[wantIface].Name || res.CIDR != ifaces[wantIface].Addrs[wantAddr] {
			t.Fatalf("%q IPv%d on %v: picked %s %s, calico-node would pick %s %s", m, family, ifaces,
				res.Interface, res.CIDR, ifaces[wantIface].Name, ifaces[wantIface].Addrs[wantAddr])
		}
		if res.Warnings == nil || res.Method != m.String() {
			t.Fatalf("result %#v: nil warnings or wrong method", res)
		}
	})
}

// reference is a second, independent rendering of calico-node's rules over package net's
// types and one joined regex per list (as calico-node builds them). It returns the indexes of
// the interface and address calico-node would pick.
func reference(m Method, family int, ifaces []host.Interface, local netip.Addr, internal []netip.Addr) (int, int, bool) {
	version := func(ip net.IP) int {
		if ip.To4() != nil {
			return 4
		}
		return 6
	}
	joined := func(rs []string) *regexp.Regexp {
		if len(rs) == 0 {
			return nil
		}
		return regexp.MustCompile("(" + strings.Join(rs, ")|(") + ")")
	}
	find := func(want net.IP) (int, int, bool) {
		for i := len(ifaces) - 1; i >= 0; i-- {
			for j, p := range ifaces[i].Addrs {
				ip := net.IP(p.Addr().AsSlice())
				if version(ip) == family && ip.Equal(want) {
					return i, j, true
				}
			}
		}
		return 0, 0, false
	}
	var incl, excl []string
	var cidrs []*net.IPNet
	switch m.Kind {
	case FirstFound:
		excl = calico.DefaultInterfaceExclusions()
	case Interface:
		incl = m.Args
	case SkipInterface:
		excl = append(calico.DefaultInterfaceExclusions(), m.Args...)
	case CIDR:
		for _, a := range m.Args {
			_, n, err := net.ParseCIDR(a)
			if err != nil {
				panic(err)
			}
			cidrs = append(cidrs, n)
		}
	case CanReach:
		return find(net.IP(local.AsSlice()))
	case KubernetesInternalIP:
		for _, a := range internal {
			if ip := net.IP(a.AsSlice()); version(ip) == family {
				return find(ip)
			}
		}
		return 0, 0, false
	}
	inRE, exRE := joined(incl), joined(excl)
	for i := len(ifaces) - 1; i >= 0; i-- {
		name := ifaces[i].Name
		if inRE != nil && !inRE.MatchString(name) || exRE != nil && exRE.MatchString(name) {
			continue
		}
		for j, p := range ifaces[i].Addrs {
			ip := net.IP(p.Addr().AsSlice())
			if version(ip) != family || !ip.IsGlobalUnicast() {
				continue
			}
			inside := len(cidrs) == 0
			for _, c := range cidrs {
				inside = inside || c.Contains(ip)
			}
			if inside {
				return i, j, true
			}
		}
	}
	return 0, 0, false
}
