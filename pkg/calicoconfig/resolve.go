package calicoconfig

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/calico-prep/calico-prep/pkg/calico"
	"github.com/calico-prep/calico-prep/pkg/config"
)

// Effective is the configuration the checks run with, and where each of its settings came from.
type Effective struct {
	Config config.Config
	// Settings are the settings that Calico's resources may set, each with its value and source.
	Settings []Setting
	// Warnings name each disagreement between a setting given explicitly and Calico's resources,
	// and Calico configurations that cannot work.
	Warnings []string
	// Problems name invalid values in Calico's resources (from State.Problems).
	Problems []string
	// Notes say what Calico's dataplane choices need from the node.
	Notes []string
	// Group is the API group Calico's resources were read from; "" when none is served.
	Group string
	// Followed is set when Calico's resources are followed at all (--calico-config=auto in a
	// cluster); Synced when they have all been read.
	Followed, Synced bool
}

// Setting is one setting's value and where it came from: a flag ("--vxlan-port"), an
// environment variable ("FELIX_VXLANPORT"), a Calico resource field ("FelixConfiguration
// default spec.vxlanPort") or "default".
type Setting struct {
	Name, Value, From string
	// Calico is set when From is one of Calico's resources.
	Calico bool
}

// Authoritative reports whether the configuration is complete: from flags alone, or with
// every one of Calico's resources read. Only then may something calico-prep opened for an
// older configuration be closed; a configuration built while the API server cannot be read
// would otherwise close what Calico still needs.
func (e Effective) Authoritative() bool { return !e.Followed || e.Synced }

// FromFlags is the configuration when Calico's resources are not followed.
func FromFlags(cfg config.Config) Effective {
	return Resolve(cfg, State{}, false)
}

// seeds are the environment variables calico-node uses only to create its first IP pool and
// ignores once any pool exists; Calico's IP pools win over them.
var seeds = []string{calico.EnvIPv4PoolCIDR, calico.EnvIPv6PoolCIDR, calico.EnvIPv4PoolIPIP + "/" + calico.EnvIPv4PoolVXLAN}

// resolver merges flags and Calico's resources setting by setting.
type resolver struct {
	cfg config.Config
	eff *Effective
	// poolsKnown is set when Calico's IP pools decide the pools and encapsulation.
	poolsKnown bool
}

// pick returns the value of one setting: the flag or environment variable that gave it
// explicitly, else Calico's value when there is one (from names its field), else the flag's
// default or a seed. A disagreement between an explicit value and Calico's is a warning.
func (r *resolver) pick(name, flag, flagValue, calicoValue, from string) (value string, fromCalico bool) {
	given, explicit := r.cfg.Given[flag]
	if explicit && r.poolsKnown && slices.Contains(seeds, given) {
		explicit = false // calico-node ignores it too once a pool exists
	}
	switch {
	case explicit:
		if from != "" && calicoValue != flagValue {
			r.eff.Warnings = append(r.eff.Warnings, fmt.Sprintf("%s: %s from %s, but %s says %s; using %s (an explicit setting wins)",
				name, flagValue, given, from, calicoValue, flagValue))
		}
		r.eff.Settings = append(r.eff.Settings, Setting{Name: name, Value: flagValue, From: given})
		return flagValue, false
	case from != "":
		r.eff.Settings = append(r.eff.Settings, Setting{Name: name, Value: calicoValue, From: from, Calico: true})
		return calicoValue, true
	}
	if given == "" {
		given = "default"
	}
	r.eff.Settings = append(r.eff.Settings, Setting{Name: name, Value: flagValue, From: given})
	return flagValue, false
}

// Resolve returns the effective configuration: cfg's settings, except that a setting not given
// explicitly follows Calico's resources where they set it (follow false: cfg alone).
// Calico's precedence between its own resources is kept: FelixConfiguration "node.<node>"
// over "default"; the operator's Installation over what it configures (IP pools it creates,
// Felix's metrics port); IPPools over calico-node's pool variables.
func Resolve(cfg config.Config, st State, follow bool) Effective {
	eff := Effective{Followed: follow, Synced: st.Synced, Group: st.Group, Problems: st.Problems}
	r := &resolver{cfg: cfg, eff: &eff}
	out := cfg
	if !follow {
		st = State{}
	}
	in := st.Installation
	if in == nil {
		in = &Installation{}
	}
	felix := func(get func(*Felix) (string, bool)) (string, string) {
		for _, f := range []struct {
			name string
			f    *Felix
		}{{"node." + cfg.NodeName, st.FelixNode}, {DefaultName, st.FelixDefault}} {
			if f.f == nil {
				continue
			}
			if v, ok := get(f.f); ok {
				return v, "FelixConfiguration " + f.name
			}
		}
		return "", ""
	}
	u16 := func(p *uint16) (string, bool) {
		if p == nil {
			return "", false
		}
		return strconv.Itoa(int(*p)), true
	}
	boolean := func(p *bool) (string, bool) {
		if p == nil {
			return "", false
		}
		return strconv.FormatBool(*p), true
	}
	field := func(from, f string) string {
		if from == "" {
			return ""
		}
		return from + " " + f
	}

	// IP pools and encapsulation: the enabled IPPools, else the pools the Installation asks
	// the operator to create.
	var pools []Pool
	poolsFrom := ""
	for _, p := range st.Pools {
		if !p.Disabled {
			pools = append(pools, p)
		}
	}
	if len(pools) > 0 {
		poolsFrom = "IPPool " + poolNames(pools)
	} else if len(in.Pools) > 0 {
		pools, poolsFrom = in.Pools, "Installation default spec.calicoNetwork.ipPools"
	}
	r.poolsKnown = poolsFrom != ""
	family := func(v6 bool) (cidrs []netip.Prefix, encaps []calico.Encapsulation) {
		for _, p := range pools {
			if p.CIDR.Addr().Is6() == v6 {
				cidrs = append(cidrs, p.CIDR)
			}
			if e := calico.Encapsulation(p.Encapsulation); e != calico.EncapNone && !slices.Contains(encaps, e) {
				encaps = append(encaps, e)
			}
		}
		return cidrs, encaps
	}
	cidrs4, encaps := family(false)
	cidrs6, _ := family(true)
	from4, from6 := poolsFrom, poolsFrom
	if len(cidrs4) == 0 {
		from4 = ""
	}
	if len(cidrs6) == 0 {
		from6 = ""
	}
	flag6 := ""
	if cfg.PodCIDRv6.IsValid() {
		flag6 = cfg.PodCIDRv6.String()
	}
	if _, fromCalico := r.pick("IPv4 pools", "pod-cidr", cfg.PodCIDR.String(), prefixes(cidrs4), from4); fromCalico {
		out.PodCIDR = cidrs4[0]
	} else {
		cidrs4 = []netip.Prefix{cfg.PodCIDR}
	}
	if _, fromCalico := r.pick("IPv6 pools", "pod-cidr-v6", flag6, prefixes(cidrs6), from6); fromCalico {
		out.PodCIDRv6 = cidrs6[0]
	} else if cfg.PodCIDRv6.IsValid() {
		cidrs6 = []netip.Prefix{cfg.PodCIDRv6}
	} else if r.poolsKnown {
		// Calico's pools are known and none is IPv6, and no IPv6 pool was given: no IPv6.
		cidrs6 = nil
		out.PodCIDRv6 = netip.Prefix{}
	}
	if r.poolsKnown {
		out.Pools = append(slices.Clone(cidrs4), cidrs6...)
	}
	primary, others := calico.EncapNone, []calico.Encapsulation(nil)
	for _, e := range encaps {
		switch {
		case e == calico.EncapIPIP || primary == calico.EncapNone:
			if primary != calico.EncapNone {
				others = append(others, primary)
			}
			primary = e
		default:
			others = append(others, e)
		}
	}
	encapValue := encapString(primary, others)
	if _, fromCalico := r.pick("encapsulation", "encapsulation", string(cfg.Encapsulation), encapValue, from(r.poolsKnown, poolsFrom+" spec.ipipMode/vxlanMode")); fromCalico {
		out.Encapsulation, out.OtherEncapsulations = primary, others
	}

	// BGP: the Installation, else calico.yaml's calico_backend.
	bgpValue, _ := boolean(in.BGP)
	bgpFrom := ""
	if bgpValue != "" {
		bgpFrom = "Installation default spec.calicoNetwork.bgp"
	} else if st.CalicoBackend != "" {
		switch st.CalicoBackend {
		case "bird":
			bgpValue = "true"
		case "vxlan", "none":
			bgpValue = "false"
		default:
			eff.Warnings = append(eff.Warnings, fmt.Sprintf("ConfigMap kube-system/%s: calico_backend %q is not bird, vxlan or none; ignoring it", CalicoConfigMap, st.CalicoBackend))
		}
		if bgpValue != "" {
			bgpFrom = "ConfigMap kube-system/" + CalicoConfigMap + " calico_backend"
		}
	}
	if v, fromCalico := r.pick("BGP", "bgp", strconv.FormatBool(cfg.BGP), bgpValue, bgpFrom); fromCalico {
		out.BGP = v == "true"
	}
	if !out.BGP && slices.Contains(append([]calico.Encapsulation{out.Encapsulation}, out.OtherEncapsulations...), calico.EncapIPIP) {
		eff.Warnings = append(eff.Warnings, "IP-in-IP pools without BGP: calico-node has no routes for IP-in-IP traffic without BGP; use VXLAN or turn BGP on")
	}
	listen, _ := u16(st.BGPListenPort)
	if v, fromCalico := r.pick("BGP port", "bgp-port", strconv.Itoa(int(cfg.Ports.BGP)), listen, field(from(listen != "", "BGPConfiguration default"), "spec.listenPort")); fromCalico {
		out.Ports.BGP = atou16(v)
	}

	// Felix.
	felixPort := func(name, flag, f string, have uint16, get func(*Felix) *uint16, set *uint16) {
		v, src := felix(func(x *Felix) (string, bool) { return u16(get(x)) })
		if v, fromCalico := r.pick(name, flag, strconv.Itoa(int(have)), v, field(src, "spec."+f)); fromCalico {
			*set = atou16(v)
		}
	}
	felixPort("VXLAN port", "vxlan-port", "vxlanPort", cfg.Ports.VXLAN, func(x *Felix) *uint16 { return x.VXLANPort }, &out.Ports.VXLAN)
	wg, wgFrom := felix(func(x *Felix) (string, bool) { return boolean(x.WireGuard) })
	if v, fromCalico := r.pick("WireGuard", "wireguard", strconv.FormatBool(cfg.WireGuard), wg, field(wgFrom, "spec.wireguardEnabled")); fromCalico {
		out.WireGuard = v == "true"
	}
	if v, f := felix(func(x *Felix) (string, bool) { return boolean(x.WireGuardV6) }); f != "" {
		out.WireGuardv6 = v == "true"
		eff.Settings = append(eff.Settings, Setting{Name: "WireGuard over IPv6", Value: v, From: field(f, "spec.wireguardEnabledV6"), Calico: true})
	} else if st.Group != "" {
		out.WireGuardv6 = false // Felix's default
		eff.Settings = append(eff.Settings, Setting{Name: "WireGuard over IPv6", Value: "false", From: "default"})
	} else {
		out.WireGuardv6 = out.WireGuard && out.PodCIDRv6.IsValid()
		eff.Settings = append(eff.Settings, Setting{Name: "WireGuard over IPv6", Value: strconv.FormatBool(out.WireGuardv6), From: "--wireguard with an IPv6 pool"})
	}
	felixPort("WireGuard port", "wireguard-port", "wireguardListeningPort", cfg.Ports.WireGuard, func(x *Felix) *uint16 { return x.WireGuardPort }, &out.Ports.WireGuard)
	felixPort("WireGuard port over IPv6", "wireguard-port-v6", "wireguardListeningPortV6", cfg.Ports.WireGuardv6, func(x *Felix) *uint16 { return x.WireGuardPortV6 }, &out.Ports.WireGuardv6)

	// Typha: its Service, once Calico is installed.
	typhaValue, typhaFrom := "", ""
	typha := st.Typha
	if st.Group == "" {
		typha = nil // a Service left behind by a Calico that is gone
	}
	switch {
	case typha != nil:
		typhaValue, typhaFrom = "true", "Service "+typha.Namespace+"/"+TyphaServiceName
	case st.Group != "" && st.Synced:
		typhaValue, typhaFrom = "false", "no Service "+TyphaServiceName+" in "+strings.Join(TyphaNamespaces, " or ")
	}
	if v, fromCalico := r.pick("Typha", "typha", strconv.FormatBool(cfg.Typha), typhaValue, typhaFrom); fromCalico {
		out.Typha = v == "true"
	}
	if typha != nil {
		out.Ports.Typha = typha.Port
		eff.Settings = append(eff.Settings, Setting{Name: "Typha port", Value: strconv.Itoa(int(typha.Port)), From: "Service " + typha.Namespace + "/" + TyphaServiceName, Calico: true})
	}

	// Metrics ports: the operator's, which override Felix's own.
	out.FelixMetricsPort, out.TyphaMetricsPort = 0, 0
	switch {
	case in.NodeMetricsPort != nil:
		out.FelixMetricsPort = *in.NodeMetricsPort
		eff.Settings = append(eff.Settings, Setting{Name: "Felix metrics port", Value: strconv.Itoa(int(*in.NodeMetricsPort)), From: "Installation default spec.nodeMetricsPort", Calico: true})
	default:
		enabled, ef := felix(func(x *Felix) (string, bool) { return boolean(x.Metrics) })
		if enabled == "true" {
			p, pf := felix(func(x *Felix) (string, bool) { return u16(x.MetricsPort) })
			out.FelixMetricsPort = calico.FelixMetricsPort
			if p != "" {
				out.FelixMetricsPort = atou16(p)
			} else {
				pf = "default"
			}
			eff.Settings = append(eff.Settings, Setting{Name: "Felix metrics port", Value: strconv.Itoa(int(out.FelixMetricsPort)),
				From: field(ef, "spec.prometheusMetricsEnabled") + ", port from " + field(pf, "spec.prometheusMetricsPort"), Calico: true})
		}
	}
	if in.TyphaMetricsPort != nil {
		out.TyphaMetricsPort = *in.TyphaMetricsPort
		eff.Settings = append(eff.Settings, Setting{Name: "Typha metrics port", Value: strconv.Itoa(int(*in.TyphaMetricsPort)), From: "Installation default spec.typhaMetricsPort", Calico: true})
	}

	// Autodetection: the Installation's, which the operator gives calico-node.
	if v, fromCalico := r.pick("IPv4 autodetection", "ip-autodetection-method", cfg.IPAutodetectionMethod, in.Method4, from(in.Method4 != "", "Installation default spec.calicoNetwork.nodeAddressAutodetectionV4")); fromCalico {
		out.IPAutodetectionMethod = v
	}
	if v, fromCalico := r.pick("IPv6 autodetection", "ip6-autodetection-method", cfg.IP6AutodetectionMethod, in.Method6, from(in.Method6 != "", "Installation default spec.calicoNetwork.nodeAddressAutodetectionV6")); fromCalico {
		out.IP6AutodetectionMethod = v
	}

	// What the dataplane needs; the checks do not change with it.
	if v, f := felix(func(x *Felix) (string, bool) {
		if x.VXLANVNI == nil {
			return "", false
		}
		return strconv.Itoa(int(*x.VXLANVNI)), true
	}); f != "" {
		eff.Settings = append(eff.Settings, Setting{Name: "VXLAN VNI", Value: v, From: field(f, "spec.vxlanVNI"), Calico: true})
	}
	bpf, bpfFrom := felix(func(x *Felix) (string, bool) { return boolean(x.BPF) })
	bpfFrom = field(bpfFrom, "spec.bpfEnabled")
	if in.Dataplane != "" {
		bpf, bpfFrom = strconv.FormatBool(in.Dataplane == "BPF"), "Installation default spec.calicoNetwork.linuxDataplane"
	}
	if bpf == "true" {
		eff.Notes = append(eff.Notes, "eBPF dataplane ("+bpfFrom+"): calico-node needs the BPF filesystem mounted at /sys/fs/bpf and a kernel with Calico's eBPF support (5.3 or later, 4.18 on RHEL 8)")
	}
	nft, nftFrom := felix(func(x *Felix) (string, bool) { return x.NFTablesMode, x.NFTablesMode != "" })
	nftFrom = field(nftFrom, "spec.nftablesMode")
	if in.Dataplane == "Nftables" {
		nft, nftFrom = "Enabled", "Installation default spec.calicoNetwork.linuxDataplane"
	}
	if nft == "Enabled" {
		note := "nftables dataplane (" + nftFrom + "): firewalld's forwarding policy is still needed; Calico's nftables rules do not override firewalld's forward rejects (firewalld#767)"
		if !cfg.FirewalldForwarding {
			eff.Warnings = append(eff.Warnings, note+", and --firewalld-forwarding is off")
		} else {
			eff.Notes = append(eff.Notes, note)
		}
	}
	eff.Config = out
	return eff
}

func from(ok bool, s string) string {
	if !ok {
		return ""
	}
	return s
}

func atou16(s string) uint16 {
	n, _ := strconv.ParseUint(s, 10, 16)
	return uint16(n)
}

func prefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

func poolNames(ps []Pool) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.Name
	}
	return strings.Join(s, ",")
}

func encapString(primary calico.Encapsulation, others []calico.Encapsulation) string {
	s := []string{string(primary)}
	for _, e := range others {
		s = append(s, string(e))
	}
	return strings.Join(s, ",")
}
