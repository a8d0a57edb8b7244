package calicoconfig

import (
	"flag"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/calico-prep/calico-prep/pkg/calico"
	"github.com/calico-prep/calico-prep/pkg/config"
)

// flags returns the configuration agent run would load from args and env.
func flags(t *testing.T, env map[string]string, args ...string) config.Config {
	t.Helper()
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	load := config.Flags(fs)
	if err := fs.Parse(append([]string{"--node-name=node-a"}, args...)); err != nil {
		t.Fatal(err)
	}
	cfg, err := load(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func u16(v uint16) *uint16 { return &v }
func yes() *bool           { b := true; return &b }
func no() *bool            { b := false; return &b }

func setting(e Effective, name string) Setting {
	for _, s := range e.Settings {
		if s.Name == name {
			return s
		}
	}
	return Setting{}
}

func TestResolve(t *testing.T) {
	pool := func(cidr, encap string) Pool {
		return Pool{Name: "p-" + cidr, CIDR: netip.MustParsePrefix(cidr), Encapsulation: encap}
	}
	for _, tt := range []struct {
		name  string
		env   map[string]string
		args  []string
		st    State
		check func(t *testing.T, e Effective)
	}{
		{name: "no Calico: the flags, authoritative",
			st: State{Synced: true},
			check: func(t *testing.T, e Effective) {
				c := e.Config
				if c.Encapsulation != calico.EncapIPIP || !c.BGP || c.Ports.VXLAN != 4789 || c.Pools != nil || len(e.Warnings) > 0 {
					t.Errorf("config %+v, warnings %q", c, e.Warnings)
				}
				if s := setting(e, "VXLAN port"); s.From != "default" || s.Value != "4789" {
					t.Errorf("VXLAN port setting %+v", s)
				}
				if !e.Authoritative() {
					t.Error("not authoritative")
				}
			}},
		{name: "not synced: not authoritative",
			st: State{},
			check: func(t *testing.T, e Effective) {
				if e.Authoritative() {
					t.Error("authoritative before Calico's resources were read")
				}
			}},
		{name: "per-node FelixConfiguration wins over default",
			st: State{Synced: true, Group: "crd.projectcalico.org/v1",
				FelixDefault: &Felix{VXLANPort: u16(8472), WireGuard: yes(), WireGuardPort: u16(51830)},
				FelixNode:    &Felix{VXLANPort: u16(4790)}},
			check: func(t *testing.T, e Effective) {
				c := e.Config
				if c.Ports.VXLAN != 4790 || !c.WireGuard || c.Ports.WireGuard != 51830 {
					t.Errorf("ports %+v wireguard %v", c.Ports, c.WireGuard)
				}
				if s := setting(e, "VXLAN port"); s.From != "FelixConfiguration node.node-a spec.vxlanPort" || !s.Calico {
					t.Errorf("VXLAN port setting %+v", s)
				}
				if s := setting(e, "WireGuard"); s.From != "FelixConfiguration default spec.wireguardEnabled" {
					t.Errorf("WireGuard setting %+v", s)
				}
			}},
		{name: "an explicit flag wins and the disagreement is a warning",
			args: []string{"--vxlan-port=4789", "--wireguard=false"},
			env:  map[string]string{calico.EnvTyphaServiceName: "calico-typha"},
			st: State{Synced: true, Group: "crd.projectcalico.org/v1",
				FelixDefault: &Felix{VXLANPort: u16(8472), WireGuard: yes()}},
			check: func(t *testing.T, e Effective) {
				if e.Config.Ports.VXLAN != 4789 || e.Config.WireGuard || !e.Config.Typha {
					t.Errorf("config %+v", e.Config)
				}
				want := []string{
					"VXLAN port: 4789 from --vxlan-port, but FelixConfiguration default spec.vxlanPort says 8472; using 4789 (an explicit setting wins)",
					"WireGuard: false from --wireguard, but FelixConfiguration default spec.wireguardEnabled says true; using false (an explicit setting wins)",
					"Typha: true from FELIX_TYPHAK8SSERVICENAME, but no Service calico-typha in calico-system or kube-system says false; using true (an explicit setting wins)",
				}
				if !slices.Equal(e.Warnings, want) {
					t.Errorf("warnings\n%q\nwant\n%q", e.Warnings, want)
				}
			}},
		{name: "IP pools win over calico-node's pool variables, which only seed the first pool",
			env: map[string]string{calico.EnvIPv4PoolCIDR: "192.168.0.0/16", calico.EnvIPv4PoolIPIP: "Always"},
			st: State{Synced: true, Group: "crd.projectcalico.org/v1", Pools: []Pool{
				pool("10.244.0.0/16", "vxlan"), pool("10.245.0.0/16", "ipip"), pool("fd00:10::/64", "vxlan"),
				{Name: "off", CIDR: netip.MustParsePrefix("10.99.0.0/16"), Encapsulation: "ipip", Disabled: true}}},
			check: func(t *testing.T, e Effective) {
				c := e.Config
				if got := prefixes(c.Pools); got != "10.244.0.0/16,10.245.0.0/16,fd00:10::/64" {
					t.Errorf("pools %s", got)
				}
				if c.PodCIDR.String() != "10.244.0.0/16" || c.PodCIDRv6.String() != "fd00:10::/64" {
					t.Errorf("pod CIDRs %s %s", c.PodCIDR, c.PodCIDRv6)
				}
				if c.Encapsulation != calico.EncapIPIP || !slices.Equal(c.OtherEncapsulations, []calico.Encapsulation{calico.EncapVXLAN}) {
					t.Errorf("encapsulation %s + %v", c.Encapsulation, c.OtherEncapsulations)
				}
				if len(e.Warnings) > 0 {
					t.Errorf("warnings %q", e.Warnings)
				}
			}},
		{name: "--pod-cidr wins over the pools",
			args: []string{"--pod-cidr=10.1.0.0/16"},
			st:   State{Synced: true, Group: "crd.projectcalico.org/v1", Pools: []Pool{pool("10.244.0.0/16", "vxlan")}},
			check: func(t *testing.T, e Effective) {
				if got := prefixes(e.Config.Pools); got != "10.1.0.0/16" || e.Config.Encapsulation != calico.EncapVXLAN {
					t.Errorf("pools %s encapsulation %s", got, e.Config.Encapsulation)
				}
				if len(e.Warnings) != 1 || !strings.HasPrefix(e.Warnings[0], "IPv4 pools: 10.1.0.0/16 from --pod-cidr, but IPPool p-10.244.0.0/16 says 10.244.0.0/16") {
					t.Errorf("warnings %q", e.Warnings)
				}
			}},
		{name: "operator: Installation's BGP, autodetection, metrics ports; Typha's Service",
			st: State{Synced: true, Group: "crd.projectcalico.org/v1",
				FelixDefault: &Felix{Metrics: yes(), MetricsPort: u16(9999)},
				Installation: &Installation{BGP: no(), Method4: "interface=eth1", NodeMetricsPort: u16(9191), TyphaMetricsPort: u16(9193),
					Pools: []Pool{pool("10.48.0.0/16", "vxlan")}},
				Typha: &TyphaService{Namespace: "calico-system", Port: 5474}},
			check: func(t *testing.T, e Effective) {
				c := e.Config
				if c.BGP || c.IPAutodetectionMethod != "interface=eth1" || c.FelixMetricsPort != 9191 || c.TyphaMetricsPort != 9193 ||
					!c.Typha || c.Ports.Typha != 5474 || prefixes(c.Pools) != "10.48.0.0/16" || c.Encapsulation != calico.EncapVXLAN {
					t.Errorf("config %+v", c)
				}
			}},
		{name: "calico.yaml: calico_backend vxlan turns BGP off; Felix's metrics on its default port",
			st: State{Synced: true, Group: "crd.projectcalico.org/v1", CalicoBackend: "vxlan",
				FelixDefault: &Felix{Metrics: yes()}, BGPListenPort: u16(1179)},
			check: func(t *testing.T, e Effective) {
				c := e.Config
				if c.BGP || c.FelixMetricsPort != calico.FelixMetricsPort || c.Ports.BGP != 1179 || c.Typha {
					t.Errorf("config %+v", c)
				}
				if len(e.Warnings) != 1 || !strings.HasPrefix(e.Warnings[0], "IP-in-IP pools without BGP") {
					t.Errorf("warnings %q (the default ipip with BGP off)", e.Warnings)
				}
			}},
		{name: "eBPF and nftables dataplanes are noted",
			args: []string{"--firewalld-forwarding=false"},
			st: State{Synced: true, Group: "crd.projectcalico.org/v1",
				FelixDefault: &Felix{BPF: yes(), NFTablesMode: "Enabled"}},
			check: func(t *testing.T, e Effective) {
				if len(e.Notes) != 1 || !strings.Contains(e.Notes[0], "/sys/fs/bpf") {
					t.Errorf("notes %q", e.Notes)
				}
				if len(e.Warnings) != 1 || !strings.Contains(e.Warnings[0], "firewalld#767") {
					t.Errorf("warnings %q", e.Warnings)
				}
			}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.check(t, Resolve(flags(t, tt.env, tt.args...), tt.st, true))
		})
	}
}

func TestFromFlagsIgnoresState(t *testing.T) {
	cfg := flags(t, nil)
	e := FromFlags(cfg)
	if e.Followed || !e.Authoritative() || e.Config.Ports != cfg.Ports {
		t.Errorf("FromFlags = %+v", e)
	}
}
