package links

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/calico-prep/calico-prep/internal/netnstest"
	"github.com/calico-prep/calico-prep/pkg/check"
	"github.com/calico-prep/calico-prep/pkg/host"
)

func uplinkEth0(context.Context, host.Snapshot) (string, error) { return "eth0", nil }

// node is a namespace with an uplink eth0 (MTU 1500) whose peer sits in a second namespace.
func node(t *testing.T) *netnstest.NS {
	t.Helper()
	ns := netnstest.New(t)
	ns.AddVethTo(t, "eth0", netnstest.New(t), "eth0")
	return ns
}

func specNamed(t *testing.T, name string) linkSpec {
	t.Helper()
	i := slices.IndexFunc(calicoLinks(), func(s linkSpec) bool { return s.name == name })
	if i < 0 {
		t.Fatalf("no spec for %s", name)
	}
	return calicoLinks()[i]
}

type want struct {
	status check.Status
	reason string
	facts  map[string]string // a subset of the result's facts
	says   []string          // substrings of the message
}

func (w want) verify(t *testing.T, r check.Result) {
	t.Helper()
	if r.Status != w.status || r.Reason != w.reason {
		t.Fatalf("%s %s: %s; want %s %s", r.Status, r.Reason, r.Message, w.status, w.reason)
	}
	for k, v := range w.facts {
		if r.Facts[k] != v {
			t.Errorf("fact %s = %q, want %q (facts %v)", k, r.Facts[k], v, r.Facts)
		}
	}
	for _, s := range w.says {
		if !strings.Contains(r.Message, s) {
			t.Errorf("message %q does not say %q", r.Message, s)
		}
	}
}

func TestVXLANChecks(t *testing.T) {
	pass := check.Pass
	tests := []struct {
		name  string
		check string
		ipv6  bool
		build func(t *testing.T, ns *netnstest.NS)
		want  want
	}{
		{name: "as Felix makes it", check: "vxlan.calico",
			build: func(t *testing.T, ns *netnstest.NS) { ns.AddVXLAN(t, "vxlan.calico", 4096, 4789, "eth0") },
			want: want{status: pass, reason: "Satisfied", facts: map[string]string{"type": "vxlan", "mtu": "1450", "expectedMTU": "1450", "vni": "4096", "port": "4789", "uplink": "eth0"},
				says: []string{"vxlan.calico", "1450"}}},
		{name: "MTU above uplink minus 50", check: "vxlan.calico",
			build: func(t *testing.T, ns *netnstest.NS) {
				ns.AddVXLAN(t, "vxlan.calico", 4096, 4789, "eth0")
				ns.SetMTU(t, "eth0", 1400)
			},
			want: want{status: check.Fail, reason: "MTUTooLarge", facts: map[string]string{"mtu": "1450", "expectedMTU": "1350"},
				says: []string{"vxlan.calico has MTU 1450, above 1350", "uplink eth0"}}},
		{name: "other VNI and port", check: "vxlan.calico",
			build: func(t *testing.T, ns *netnstest.NS) { ns.AddVXLAN(t, "vxlan.calico", 1, 8472, "eth0") },
			want: want{status: check.Fail, reason: "VXLANMismatch", facts: map[string]string{"vni": "1", "port": "8472"},
				says: []string{"VNI 1, port 8472", "VNI 4096, port 4789"}}},
		{name: "down", check: "vxlan.calico",
			build: func(t *testing.T, ns *netnstest.NS) {
				ns.AddVXLAN(t, "vxlan.calico", 4096, 4789, "eth0")
				ns.SetDown(t, "vxlan.calico")
			},
			want: want{status: check.Fail, reason: "LinkDown", facts: map[string]string{"up": "false"}, says: []string{"vxlan.calico is down"}}},
		{name: "every problem is named", check: "vxlan.calico",
			build: func(t *testing.T, ns *netnstest.NS) {
				ns.AddVXLAN(t, "vxlan.calico", 1, 4789, "eth0")
				ns.SetDown(t, "vxlan.calico")
				ns.SetMTU(t, "eth0", 1400)
			},
			want: want{status: check.Fail, reason: "VXLANMismatch", says: []string{"VNI 1", ", is down and has MTU 1450"}}},
		{name: "missing", check: "vxlan.calico",
			build: func(*testing.T, *netnstest.NS) {},
			want:  want{status: check.Fail, reason: "LinkMissing", says: []string{"vxlan.calico is missing", "vxlan kernel module"}}},
		{name: "not a VXLAN device", check: "vxlan.calico",
			build: func(t *testing.T, ns *netnstest.NS) { ns.AddBridge(t, "vxlan.calico") },
			want:  want{status: check.Fail, reason: "LinkWrongType", facts: map[string]string{"type": "bridge"}, says: []string{"bridge", "want vxlan"}}},
		{name: "IPv6 needs 70 bytes", check: "vxlan-v6.calico", ipv6: true,
			build: func(t *testing.T, ns *netnstest.NS) { ns.AddVXLAN(t, "vxlan-v6.calico", 4096, 4789, "eth0") },
			want:  want{status: check.Fail, reason: "MTUTooLarge", facts: map[string]string{"expectedMTU": "1430"}, says: []string{"minus 70 for IPv6 VXLAN"}}},
		{name: "IPv6 at its MTU", check: "vxlan-v6.calico", ipv6: true,
			build: func(t *testing.T, ns *netnstest.NS) {
				ns.AddVXLAN(t, "vxlan-v6.calico", 4096, 4789, "eth0")
				ns.SetMTU(t, "vxlan-v6.calico", 1430)
			},
			want: want{status: pass, reason: "Satisfied", facts: map[string]string{"mtu": "1430"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := node(t)
			tt.build(t, ns)
			cfg := Config{Encapsulation: "vxlan", IPv6: tt.ipv6, CalicoStarted: func() bool { return true }, Uplink: uplinkEth0}
			tt.want.verify(t, runCheck(t, Checks(newClient(t, ns), cfg), "links/"+tt.check))
		})
	}
}

// TestStandInChecks runs the tunl0 and wireguard.cali judgements on TUN devices, because this
// kernel has neither ipip nor wireguard; only the wanted kind differs from the product checks.
func TestStandInChecks(t *testing.T) {
	tests := []struct {
		name  string
		link  string
		build func(t *testing.T, ns *netnstest.NS)
		want  want
	}{
		{name: "tunl0 up within uplink minus 20", link: "tunl0",
			build: func(t *testing.T, ns *netnstest.NS) { ns.AddTun(t, "tunl0"); ns.SetMTU(t, "tunl0", 1480) },
			want:  want{status: check.Pass, reason: "Satisfied", facts: map[string]string{"type": "tun", "mtu": "1480", "expectedMTU": "1480"}}},
		{name: "tunl0 below the limit is fine", link: "tunl0",
			build: func(t *testing.T, ns *netnstest.NS) { ns.AddTun(t, "tunl0"); ns.SetMTU(t, "tunl0", 1400) },
			want:  want{status: check.Pass, reason: "Satisfied"}},
		{name: "tunl0 MTU too large", link: "tunl0",
			build: func(t *testing.T, ns *netnstest.NS) { ns.AddTun(t, "tunl0") },
			want: want{status: check.Fail, reason: "MTUTooLarge", facts: map[string]string{"mtu": "1500", "expectedMTU": "1480"},
				says: []string{"tunl0 has MTU 1500, above 1480", "minus 20 for IPIP"}}},
		{name: "tunl0 down", link: "tunl0",
			build: func(t *testing.T, ns *netnstest.NS) {
				ns.AddTun(t, "tunl0")
				ns.SetMTU(t, "tunl0", 1480)
				ns.SetDown(t, "tunl0")
			},
			want: want{status: check.Fail, reason: "LinkDown", says: []string{"tunl0 is down"}}},
		{name: "wireguard.cali within uplink minus 60", link: "wireguard.cali",
			build: func(t *testing.T, ns *netnstest.NS) {
				ns.AddTun(t, "wireguard.cali")
				ns.SetMTU(t, "wireguard.cali", 1440)
			},
			want: want{status: check.Pass, reason: "Satisfied", facts: map[string]string{"expectedMTU": "1440"}}},
		{name: "wireguard.cali one byte over", link: "wireguard.cali",
			build: func(t *testing.T, ns *netnstest.NS) {
				ns.AddTun(t, "wireguard.cali")
				ns.SetMTU(t, "wireguard.cali", 1441)
			},
			want: want{status: check.Fail, reason: "MTUTooLarge", says: []string{"1441", "1440"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := node(t)
			tt.build(t, ns)
			spec := specNamed(t, tt.link)
			spec.kind = "tun"
			cfg := Config{Encapsulation: "ipip", WireGuard: true, Uplink: uplinkEth0}
			c := linkCheck(newClient(t, ns).Snapshot, cfg, spec)
			tt.want.verify(t, c.Verify(context.Background()))
		})
	}

	t.Run("the product checks want the real kinds", func(t *testing.T) {
		ns := node(t)
		ns.AddTun(t, "tunl0")
		ns.AddTun(t, "wireguard.cali")
		checks := Checks(newClient(t, ns), Config{Encapsulation: "ipip", WireGuard: true, Uplink: uplinkEth0})
		want{status: check.Fail, reason: "LinkWrongType", says: []string{"tunl0 is a tun link, want ipip"}}.verify(t, runCheck(t, checks, "links/tunl0"))
		want{status: check.Fail, reason: "LinkWrongType", says: []string{"want wireguard"}}.verify(t, runCheck(t, checks, "links/wireguard.cali"))
	})
}

func TestCaliVethCheck(t *testing.T) {
	tests := []struct {
		name  string
		build func(t *testing.T, ns *netnstest.NS)
		want  want
	}{
		{name: "no pods yet", build: func(t *testing.T, ns *netnstest.NS) { ns.AddVeth(t, "veth0", "veth1") },
			want: want{status: check.NotApplicable, reason: "NoCaliVeths"}},
		{name: "all up", build: func(t *testing.T, ns *netnstest.NS) {
			ns.AddVethTo(t, "cali1a2b3c4d5e6", netnstest.New(t), "eth0")
			ns.AddVethTo(t, "cali6e5d4c3b2a1", netnstest.New(t), "eth0")
		}, want: want{status: check.Pass, reason: "Satisfied", facts: map[string]string{"veths": "2"}}},
		{name: "one taken down", build: func(t *testing.T, ns *netnstest.NS) {
			ns.AddVethTo(t, "cali1a2b3c4d5e6", netnstest.New(t), "eth0")
			ns.AddVethTo(t, "cali6e5d4c3b2a1", netnstest.New(t), "eth0")
			ns.SetDown(t, "cali6e5d4c3b2a1")
		}, want: want{status: check.Fail, reason: "VethDown", facts: map[string]string{"veths": "2", "down": "cali6e5d4c3b2a1"},
			says: []string{"1 of 2", "cali6e5d4c3b2a1", "NetworkManager takes a veth down"}}},
		{name: "other links named cali are not pods' veths", build: func(t *testing.T, ns *netnstest.NS) {
			ns.AddBridge(t, "calibr")
			ns.SetDown(t, "calibr")
		}, want: want{status: check.NotApplicable, reason: "NoCaliVeths"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := node(t)
			tt.build(t, ns)
			clock := time.Unix(1_800_000_000, 0)
			checks := Checks(newClient(t, ns), Config{Encapsulation: "none", now: func() time.Time { return clock }})
			first := runCheck(t, checks, "links/cali-veths")
			if tt.want.reason == "VethDown" {
				// A veth just seen down may be one the CNI plugin is bringing up: the first pass
				// passes and asks for a recheck when the settle time is over.
				if first.Status != check.Pass || first.RecheckIn != vethSettle {
					t.Fatalf("first sight of a down veth: %s %s, recheck in %v; want pass, recheck in %v", first.Status, first.Message, first.RecheckIn, vethSettle)
				}
				clock = clock.Add(vethSettle)
				first = runCheck(t, checks, "links/cali-veths")
			}
			tt.want.verify(t, first)
		})
	}

	t.Run("a veth that comes up in time never fails", func(t *testing.T) {
		down := map[string]time.Time{}
		t0 := time.Unix(1_800_000_000, 0)
		if wait := settle([]string{"cali1"}, down, t0); wait != vethSettle {
			t.Fatalf("first sight: wait %v, want %v", wait, vethSettle)
		}
		if wait := settle(nil, down, t0.Add(time.Second)); wait != 0 || len(down) != 0 {
			t.Fatalf("after it came up: wait %v, remembered %v", wait, down)
		}
		if wait := settle([]string{"cali1"}, down, t0.Add(3*time.Second)); wait != vethSettle {
			t.Fatalf("down again later starts a new settle time: wait %v", wait)
		}
		if wait := settle([]string{"cali1"}, down, t0.Add(3*time.Second+vethSettle)); wait > 0 {
			t.Fatalf("down for the whole settle time: wait %v, want it to count", wait)
		}
	})

	t.Run("long lists are cut in the message, not in the facts", func(t *testing.T) {
		var snap host.Snapshot
		var all []string
		for i := range 7 {
			name := fmt.Sprintf("cali%011d", i)
			all = append(all, name)
			snap.Interfaces = append(snap.Interfaces, host.Interface{Index: i + 2, Name: name, Type: "veth"})
		}
		want{status: check.Fail, reason: "VethDown", facts: map[string]string{"down": strings.Join(all, ",")},
			says: []string{"7 of 7", all[4] + " and 2 more"}}.verify(t, verifyCaliVeths(caliVeths(snap)))
	})
}

func TestNotApplicable(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want map[string]string // check name → reason
	}{
		{name: "before calico-node has run nothing is required",
			cfg: Config{Encapsulation: "vxlan", WireGuard: true, IPv6: true, CalicoStarted: func() bool { return false }},
			want: map[string]string{"links/tunl0": "NotUsed", "links/vxlan.calico": "CalicoNotStarted", "links/vxlan-v6.calico": "CalicoNotStarted",
				"links/wireguard.cali": "CalicoNotStarted", "links/wg-v6.cali": "CalicoNotStarted", "links/cali-veths": "CalicoNotStarted"}},
		{name: "no encapsulation, no WireGuard",
			cfg: Config{Encapsulation: "none", IPv6: true},
			want: map[string]string{"links/tunl0": "NotUsed", "links/vxlan.calico": "NotUsed", "links/vxlan-v6.calico": "NotUsed",
				"links/wireguard.cali": "NotUsed", "links/wg-v6.cali": "NotUsed", "links/cali-veths": "NoCaliVeths"}},
		{name: "IPIP with WireGuard on IPv4 only",
			cfg: Config{Encapsulation: "ipip", WireGuard: true},
			want: map[string]string{"links/tunl0": "LinkMissing", "links/vxlan.calico": "NotUsed", "links/vxlan-v6.calico": "NotUsed",
				"links/wireguard.cali": "LinkMissing", "links/wg-v6.cali": "NotUsed", "links/cali-veths": "NoCaliVeths"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A node where none of Calico's links exist, and one cali veth is down.
			ns := node(t)
			if tt.cfg.CalicoStarted != nil {
				ns.AddVethTo(t, "cali0123456789a", netnstest.New(t), "eth0")
				ns.SetDown(t, "cali0123456789a")
			}
			got := map[string]string{}
			for _, c := range Checks(newClient(t, ns), tt.cfg) {
				r := c.Verify(context.Background())
				got[c.Name] = r.Reason
				if (r.Status == check.NotApplicable) != (r.Reason == "NotUsed" || r.Reason == "CalicoNotStarted" || r.Reason == "NoCaliVeths") {
					t.Errorf("%s: status %s with reason %s", c.Name, r.Status, r.Reason)
				}
			}
			if !maps.Equal(got, tt.want) {
				t.Fatalf("reasons %v\nwant    %v", got, tt.want)
			}
		})
	}
}

func TestUplinkAndSnapshotErrors(t *testing.T) {
	ns := node(t)
	ns.AddVXLAN(t, "vxlan.calico", 4096, 4789, "eth0")
	ns.SetMTU(t, "eth0", 1400) // vxlan.calico's 1450 would fail an MTU check
	c := newClient(t, ns)
	base := Config{Encapsulation: "vxlan"}

	noUplink := base
	noUplink.Uplink = func(context.Context, host.Snapshot) (string, error) { return "", errors.New("no address found") }
	want{status: check.Pass, reason: "Satisfied", says: []string{"MTU is not checked: find uplink: no address found"}}.
		verify(t, runCheck(t, Checks(c, noUplink), "links/vxlan.calico"))

	goneUplink := base
	goneUplink.Uplink = func(context.Context, host.Snapshot) (string, error) { return "ens33", nil }
	want{status: check.Pass, reason: "Satisfied", says: []string{`uplink "ens33" does not exist`}}.
		verify(t, runCheck(t, Checks(c, goneUplink), "links/vxlan.calico"))

	want{status: check.Pass, reason: "Satisfied", says: []string{"MTU is not checked"}}.
		verify(t, runCheck(t, Checks(c, base), "links/vxlan.calico"))

	broken := base
	broken.Snapshot = func(context.Context) (host.Snapshot, error) {
		return host.Snapshot{}, errors.New("dump links: netlink gone")
	}
	for _, name := range []string{"links/vxlan.calico", "links/cali-veths"} {
		want{status: check.Fail, reason: "VerifyError", says: []string{"netlink gone"}}.verify(t, runCheck(t, Checks(nil, broken), name))
	}
}

func runCheck(t *testing.T, checks []check.Check, name string) check.Result {
	t.Helper()
	i := slices.IndexFunc(checks, func(c check.Check) bool { return c.Name == name })
	if i < 0 {
		t.Fatalf("no check %s", name)
	}
	return checks[i].Verify(context.Background())
}
