package kernel

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strconv"
	"strings"

	"github.com/calico-prep/calico-prep/pkg/check"
)

// Requirements are the Calico features that decide which modules and sysctls matter.
type Requirements struct {
	Encapsulation string // ipip or vxlan add the tunnel module; none (or anything else) adds none
	WireGuard     bool
	IPv6          bool
}

// moduleNeed is one module check: any of names will do.
type moduleNeed struct {
	names    []string // alternatives; the first names the check
	required bool
	use      string // what Calico needs it for, or, when optional, when it is needed
}

// moduleNeeds lists the modules Calico relies on for req: those of Calico's system requirements
// (https://docs.tigera.io/calico/latest/getting-started/kubernetes/requirements) and of
// calicoctl node checksystem.
// Names are the files the kernel builds: the IPv4 rpfilter match and REJECT target are
// ipt_rpfilter.ko and ipt_REJECT.ko (net/ipv4/netfilter/Makefile); xt_rpfilter and xt_REJECT are
// only names other lists use, kept as alternatives.
func moduleNeeds(req Requirements) []moduleNeed {
	ip6Use := "it is needed only with IPv6"
	if req.IPv6 {
		ip6Use = "its IPv6 rules"
	}
	needs := []moduleNeed{
		{[]string{"ip_set"}, true, "the IP sets that hold policy members"},
		{[]string{"ip_tables", "nf_tables"}, true, "its IPv4 rules (iptables-legacy needs ip_tables, iptables-nft and Felix's nftables mode need nf_tables)"},
		{[]string{"ip6_tables", "nf_tables"}, req.IPv6, ip6Use},
		{[]string{"xt_set"}, true, "rules that match IP sets"},
		{[]string{"ipt_rpfilter", "xt_rpfilter"}, true, "the reverse-path check that stops pods spoofing their address"},
		{[]string{"xt_addrtype"}, true, "address-type matches"},
		{[]string{"xt_conntrack"}, true, "connection-state matches"},
		{[]string{"xt_mark"}, true, "packet marks"},
		{[]string{"xt_multiport"}, true, "port lists in policy rules"},
		{[]string{"ipt_REJECT", "xt_REJECT"}, true, "rejecting denied traffic"},
		{[]string{"nf_conntrack_netlink"}, true, "removing conntrack entries of deleted pods"},
		// Calico turns its IPVS support on only when it finds kube-proxy in IPVS mode (Calico docs,
		// "Enabling IPVS in Kubernetes"), so a kernel without IPVS only rules out that mode.
		{[]string{"xt_ipvs"}, false, "it is needed only when kube-proxy runs in IPVS mode"},
		{[]string{"xt_u32"}, false, "calicoctl node checksystem lists it, Calico runs without it"},
		{[]string{"xt_bpf"}, false, "calicoctl node checksystem lists it, Calico runs without it"},
	}
	if req.IPv6 {
		// ip6tables-restore fails on Felix's raw table without it (projectcalico/felix#2360).
		needs = append(needs, moduleNeed{[]string{"ip6t_rpfilter"}, true, "the IPv6 reverse-path check"})
	}
	switch req.Encapsulation {
	case "ipip":
		needs = append(needs, moduleNeed{[]string{"ipip"}, true, "the tunl0 IP-in-IP device"})
	case "vxlan":
		needs = append(needs, moduleNeed{[]string{"vxlan"}, true, "the vxlan.calico device"})
	}
	if req.WireGuard {
		// Felix modprobes wireguard itself when WireGuard is on (felix int_dataplane.go
		// configureKernel), so loadable is enough.
		needs = append(needs, moduleNeed{[]string{"wireguard"}, true, "the wireguard.cali device"})
	}
	return needs
}

// Checks returns the kernel checks for req, in the order a report should list them: version,
// modules, sysctls. The checks share a cache of the kernel config and module indexes, so a pass
// reads each once; a file is read again when its size or modification time changes, so the same
// checks can be run pass after pass.
func Checks(f FS, req Requirements) []check.Check {
	needs := moduleNeeds(req)
	var names []string
	for _, n := range needs {
		names = append(names, n.names...)
	}
	c := newCache(names...)
	checks := []check.Check{versionCheck(f, c)}
	for _, n := range needs {
		checks = append(checks, moduleCheck(f, c, n))
	}
	checks = append(checks, ipForwardCheck(f))
	if req.IPv6 {
		checks = append(checks, ipv6ForwardingCheck(f))
	}
	checks = append(checks, rpFilterCheck(f))
	if req.WireGuard {
		checks = append(checks, srcValidMarkCheck(f))
	}
	return checks
}

// Kernel versions. Calico's docs asked for "Linux kernel 3.10 or later" up to v3.28 and ask for
// 5.10 or later from v3.29 on (docs.tigera.io, "System requirements"); calicoctl node checksystem
// still enforces only 2.6.24. Below 3.10 fails; below 5.10 passes with a note, because the
// releases that accept it still run there.
const (
	minMajor, minMinor                 = 3, 10
	recommendedMajor, recommendedMinor = 5, 10
)

type kernelVersion struct{ major, minor int }

func (v kernelVersion) less(w kernelVersion) bool {
	return v.major < w.major || v.major == w.major && v.minor < w.minor
}

func (v kernelVersion) String() string { return fmt.Sprintf("%d.%d", v.major, v.minor) }

// parseRelease reads major and minor from a release such as "5.15.0-91-generic".
func parseRelease(rel string) (kernelVersion, bool) {
	majStr, rest, ok := strings.Cut(rel, ".")
	if !ok {
		return kernelVersion{}, false
	}
	end := 0
	for end < len(rest) && rest[end] >= '0' && rest[end] <= '9' {
		end++
	}
	major, err1 := strconv.Atoi(majStr)
	minor, err2 := strconv.Atoi(rest[:end])
	if err1 != nil || err2 != nil || major < 0 || minor < 0 || major > 1000 || minor > 1000 {
		return kernelVersion{}, false
	}
	return kernelVersion{major, minor}, true
}

func versionCheck(f FS, c *cache) check.Check {
	return check.Check{
		Name: "kernel/version",
		Verify: func(context.Context) check.Result {
			rel, err := c.release(f)
			if err != nil {
				return check.Errored(err)
			}
			minKernel := kernelVersion{minMajor, minMinor}
			recommendedKernel := kernelVersion{recommendedMajor, recommendedMinor}
			v, ok := parseRelease(rel)
			if !ok {
				return check.Failed("VersionUnknown", "kernel release %q does not start with a version such as 5.10; check /proc/sys/kernel/osrelease", rel).
					With("release", rel)
			}
			var r check.Result
			switch {
			case v.less(minKernel):
				r = check.Failed("KernelTooOld", "kernel %s is older than %s, the oldest Calico supports; upgrade the kernel to %s or later", rel, minKernel, recommendedKernel)
			case v.less(recommendedKernel):
				r = check.Result{Status: check.Pass, Reason: "KernelBelowRecommended",
					Message: fmt.Sprintf("kernel %s runs older Calico releases, but Calico v3.29 and later require %s or later; plan a kernel upgrade", rel, recommendedKernel)}
			default:
				r = check.Passed("kernel %s is %s or later", rel, recommendedKernel)
			}
			return r.With("release", rel).With("minimum", minKernel.String()).With("recommended", recommendedKernel.String())
		},
	}
}

func moduleCheck(f FS, c *cache, n moduleNeed) check.Check {
	return check.Check{
		Name: "kernel/module/" + strings.ToLower(n.names[0]),
		Verify: func(context.Context) check.Result {
			var missing []string
			for _, name := range n.names {
				m, err := f.module(c, name)
				if err != nil {
					return check.Errored(err)
				}
				if m.State != Missing {
					return moduleFound(n, m)
				}
				missing = append(missing, name+": "+m.Evidence)
			}
			return moduleMissing(n, missing)
		},
	}
}

func moduleFound(n moduleNeed, m Module) check.Result {
	how := "is built in"
	switch m.State {
	case Loaded:
		how = "is in the running kernel"
	case Loadable:
		how = "can be loaded"
	}
	r := check.Passed("kernel module %s %s (%s)", m.Name, how, m.Evidence)
	return withModuleFacts(r, n, m.Name, m.State, m.Evidence)
}

func moduleMissing(n moduleNeed, evidence []string) check.Result {
	what := "kernel module " + n.names[0] + " is not"
	if len(n.names) > 1 {
		what = "none of the kernel modules " + strings.Join(n.names, ", ") + " is"
	}
	ev := strings.Join(evidence, " | ")
	if !n.required {
		r := check.Result{Status: check.Pass, Reason: "OptionalModuleMissing",
			Message: fmt.Sprintf("optional %s available (%s); %s", what, ev, n.use)}
		return withModuleFacts(r, n, n.names[0], Missing, ev)
	}
	var syms []string
	for _, name := range n.names {
		if s := configSymbols(name); len(s) > 0 && !slices.Contains(syms, "CONFIG_"+s[0]+"=m") {
			syms = append(syms, "CONFIG_"+s[0]+"=m")
		}
	}
	fix := "install the kernel's extra modules package"
	if len(syms) > 0 {
		fix += " or build the kernel with " + strings.Join(syms, " or ")
	}
	r := check.Failed("ModuleMissing", "%s available (%s); Calico needs it for %s: %s", what, ev, n.use, fix)
	return withModuleFacts(r, n, n.names[0], Missing, ev)
}

func withModuleFacts(r check.Result, n moduleNeed, name string, st State, evidence string) check.Result {
	r = r.With("module", name).With("state", string(st)).With("evidence", evidence).
		With("required", strconv.FormatBool(n.required))
	if len(n.names) > 1 {
		r = r.With("alternatives", strings.Join(n.names, ","))
	}
	return r
}

// sysctlCheck reads name and hands its value to judge; a sysctl the kernel does not have is
// reported through missing.
func sysctlCheck(f FS, name string, judge func(value string) check.Result, missing func() check.Result) check.Check {
	return check.Check{
		Name: "kernel/sysctl/" + name,
		Verify: func(context.Context) check.Result {
			v, err := f.Sysctl(name)
			if errors.Is(err, fs.ErrNotExist) && missing != nil {
				return missing().With("sysctl", name)
			}
			if err != nil {
				return check.Errored(err)
			}
			return judge(v).With("sysctl", name).With("value", v)
		},
	}
}

// ipForwardCheck: kubeadm's preflight fails unless /proc/sys/net/ipv4/ip_forward is "1"
// (cmd/kubeadm/app/preflight checks_linux.go addIPv4Checks). Felix sets it itself once it runs
// with IPForwarding=Enabled, the default (felix int_dataplane.go configureKernel), but kubeadm
// join runs before Calico.
func ipForwardCheck(f FS) check.Check {
	const name = "net.ipv4.ip_forward"
	return sysctlCheck(f, name, func(v string) check.Result {
		if v == "1" {
			return check.Passed("%s is 1", name).With("want", "1")
		}
		return check.Failed("SysctlWrong", "%s is %s; set it to 1 (sysctl -w %s=1, and persist it in /etc/sysctl.d/): the node does not route pod traffic without it and kubeadm's preflight requires it", name, v, name).
			With("want", "1")
	}, nil)
}

// ipv6ForwardingCheck: Felix writes net.ipv6.conf.all.forwarding=1 with IPv6 (int_dataplane.go
// configureKernel); kubeadm checks net.ipv6.conf.default.forwarding, which a write to "all" also
// sets.
func ipv6ForwardingCheck(f FS) check.Check {
	const name = "net.ipv6.conf.all.forwarding"
	return sysctlCheck(f, name, func(v string) check.Result {
		if v == "1" {
			return check.Passed("%s is 1", name).With("want", "1")
		}
		return check.Failed("SysctlWrong", "%s is %s; set it to 1 (sysctl -w %s=1, and persist it in /etc/sysctl.d/): IPv6 pod traffic is not routed without it", name, v, name).
			With("want", "1")
	}, func() check.Result {
		return check.Failed("SysctlMissing", "%s does not exist, so IPv6 is disabled on this node; boot without ipv6.disable=1 or do not configure an IPv6 pool", name).
			With("want", "1")
	})
}

// rpFilterCheck only reports. Felix used to refuse to start with net.ipv4.conf.all.rp_filter=2
// (loose) unless IgnoreLooseRPF was set; since projectcalico/felix#2189 (Dec 2019, with
// IgnoreLooseRPF removed by libcalico-go#1181) it stops spoofing with an iptables rpfilter rule
// in the raw table, copies net.ipv4.conf.default.rp_filter onto each workload interface
// (endpoint_mgr.go configureInterface) and checks the global value no more. Any value works.
func rpFilterCheck(f FS) check.Check {
	const name = "net.ipv4.conf.all.rp_filter"
	return sysctlCheck(f, name, func(v string) check.Result {
		mode := "unknown"
		switch v {
		case "0":
			mode = "off"
		case "1":
			mode = "strict"
		case "2":
			mode = "loose"
		}
		msg := fmt.Sprintf("%s is %s (%s); Calico does its own reverse-path check and accepts any value", name, v, mode)
		if v == "2" {
			msg += ", though Felix from before projectcalico/felix#2189 (Dec 2019) refuses loose mode unless IgnoreLooseRPF is set"
		}
		return check.Passed("%s", msg).With("mode", mode)
	}, nil)
}

// srcValidMarkCheck only reports: Felix writes net.ipv4.conf.all.src_valid_mark=1 itself when
// WireGuard host encryption is on (felix/wireguard/wireguard.go ensureLink) and does not need it
// otherwise.
func srcValidMarkCheck(f FS) check.Check {
	const name = "net.ipv4.conf.all.src_valid_mark"
	return sysctlCheck(f, name, func(v string) check.Result {
		if v == "1" {
			return check.Passed("%s is 1", name)
		}
		return check.Result{Status: check.Pass, Reason: "SetByFelix",
			Message: fmt.Sprintf("%s is %s; nothing to do: Felix sets it to 1 itself when WireGuard host encryption is on", name, v)}
	}, nil)
}
