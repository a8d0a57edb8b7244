// Package config holds the agent's configuration: every setting with its flag, the environment
// variable calico-node itself reads where one exists (so an operator can copy calico-node's env
// block), its default, and validation that names the flag or variable and the bad value.
package config

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/calico-prep/calico-prep/pkg/calico"

	"github.com/calico-prep/calico-prep/pkg/check"
)

// Mode says whether an optional host component is managed.
type Mode string

const (
	// ModeAuto manages the component when it is present; its absence is "not applicable".
	ModeAuto Mode = "auto"
	// ModeOn requires the component; its absence is a failure.
	ModeOn Mode = "on"
	// ModeOff leaves the component alone.
	ModeOff Mode = "off"
)

// Config is the validated configuration of the agent.
type Config struct {
	PodCIDR        netip.Prefix   // IPv4 pool; always set
	PodCIDRv6      netip.Prefix   // IPv6 pool; zero when IPv6 is not used
	ServiceCIDRs   []netip.Prefix // optional
	KubeadmSubnets []netip.Prefix // kubeadm's podSubnet, when known; the pools must lie inside

	IPAutodetectionMethod  string // validated Calico method string
	IP6AutodetectionMethod string
	NodeInternalIPs        []netip.Addr // stand-in for the Node's InternalIP without a cluster

	Encapsulation calico.Encapsulation
	// OtherEncapsulations are used by some of Calico's IP pools besides Encapsulation; only
	// Calico's resources set them.
	OtherEncapsulations []calico.Encapsulation
	BGP                 bool
	Typha               bool
	WireGuard           bool
	// WireGuardv6 is WireGuard over IPv6: --wireguard with an IPv6 pool, or Felix's
	// wireguardEnabledV6.
	WireGuardv6 bool
	// Ports are Calico's ports: BGP, VXLAN and WireGuard from flags, Typha's from its Service.
	Ports calico.Ports
	// Pools are every IP pool when Calico's IP pools are known; nil means PodCIDR and PodCIDRv6.
	Pools []netip.Prefix
	// FelixMetricsPort and TyphaMetricsPort are Calico's metrics ports when they serve
	// metrics, from Calico's resources; 0 otherwise.
	FelixMetricsPort, TyphaMetricsPort uint16

	// CalicoConfig is auto (follow Calico's resources where no setting was given) or off.
	CalicoConfig Mode
	// Given names, for each option set on the command line or by an environment variable,
	// where its value came from ("--vxlan-port", "FELIX_VXLANPORT"), keyed by flag name.
	Given map[string]string

	HostRoot      string
	StateDir      string
	NodeName      string
	DisableChecks check.Selector

	Firewalld           Mode
	FirewalldZone       string
	FirewalldExtraPorts []Port
	FirewalldForwarding bool
	// FirewalldOpenMetrics opens the agent's metrics port and Calico's, where they serve metrics.
	FirewalldOpenMetrics bool

	NetworkManager               Mode
	NetworkManagerConfDir        string
	NetworkManagerExtraUnmanaged []string

	Networkd        Mode
	NetworkdConfDir string
	// NetworkdKeepForeignRoutes writes the networkd.conf drop-in that stops networkd removing
	// routes it did not create (--networkd-foreign-routes=keep).
	NetworkdKeepForeignRoutes bool

	Kubeconfig         string
	MetricsBindAddress string
	ResyncInterval     time.Duration
	DryRun             bool
	Once               bool
}

// DefaultMetricsBindAddress is where /metrics, /healthz and /readyz listen by default.
const DefaultMetricsBindAddress = ":9476"

// option is one setting: its flag, the calico-node environment variable that feeds it when the
// flag is not given, its default and how a value is checked and stored.
type option struct {
	flag, env, def, usage string
	isBool                bool
	// daemon options only mean something to agent run.
	daemon bool
	set    func(c *Config, field, value string) error
}

func options() []option {
	return []option{
		{flag: "pod-cidr", env: calico.EnvIPv4PoolCIDR, def: calico.DefaultIPv4Pool, usage: "IPv4 pod CIDR (Calico IP pool)",
			set: func(c *Config, f, v string) error { p, err := ParseCIDR(f, v, 4); c.PodCIDR = p; return err }},
		{flag: "pod-cidr-v6", env: calico.EnvIPv6PoolCIDR, usage: "IPv6 pod CIDR; empty when IPv6 is not used",
			set: func(c *Config, f, v string) error {
				if v == "" {
					return nil
				}
				p, err := ParseCIDR(f, v, 6)
				c.PodCIDRv6 = p
				return err
			}},
		{flag: "service-cidr", usage: "service CIDR(s), comma-separated; the pod CIDR must not overlap them",
			set: func(c *Config, f, v string) (err error) { c.ServiceCIDRs, err = ParseCIDRList(f, v); return }},
		{flag: "kubeadm-pod-subnet", usage: "kubeadm's podSubnet (--pod-network-cidr), comma-separated; the pod CIDRs must lie inside",
			set: func(c *Config, f, v string) (err error) { c.KubeadmSubnets, err = ParseCIDRList(f, v); return }},
		{flag: "ip-autodetection-method", env: calico.EnvIPAutodetection, def: "first-found", usage: "Calico IPv4 autodetection method",
			set: func(c *Config, f, v string) error { c.IPAutodetectionMethod = v; return validMethod(f, v) }},
		{flag: "ip6-autodetection-method", env: calico.EnvIP6Autodetection, def: "first-found", usage: "Calico IPv6 autodetection method (used with --pod-cidr-v6)",
			set: func(c *Config, f, v string) error { c.IP6AutodetectionMethod = v; return validMethod(f, v) }},
		{flag: "node-internal-ip", usage: "the Node's InternalIP(s) for kubernetes-internal-ip when there is no cluster",
			set: func(c *Config, f, v string) (err error) { c.NodeInternalIPs, err = ParseAddrList(f, v); return }},
		{flag: "encapsulation", def: "ipip", usage: "ipip, vxlan or none; from CALICO_IPV4POOL_IPIP/CALICO_IPV4POOL_VXLAN when not given",
			set: func(c *Config, f, v string) (err error) { c.Encapsulation, err = ParseEncapsulation(f, v); return }},
		{flag: "bgp", env: calico.EnvNetworkingBackend, def: "true", isBool: true, usage: "Calico peers with BGP (TCP 179); false for CALICO_NETWORKING_BACKEND=vxlan|none",
			set: func(c *Config, f, v string) (err error) { c.BGP, err = parseBGP(f, v); return }},
		{flag: "typha", env: calico.EnvTyphaServiceName, def: "false", isBool: true, usage: "Calico uses Typha (TCP 5473)",
			set: func(c *Config, f, v string) (err error) { c.Typha, err = parseBoolOrPresence(f, v); return }},
		{flag: "wireguard", env: calico.EnvWireGuardEnabled, def: "false", isBool: true, usage: "Calico encrypts with WireGuard (UDP 51820, 51821 with IPv6)",
			set: func(c *Config, f, v string) (err error) { c.WireGuard, err = ParseBool(f, v); return }},
		{flag: "bgp-port", def: "179", usage: "Calico's BGP port (BGPConfiguration listenPort)",
			set: func(c *Config, f, v string) (err error) { c.Ports.BGP, err = parsePortFlag(f, v); return }},
		{flag: "vxlan-port", env: calico.EnvVXLANPort, def: "4789", usage: "Calico's VXLAN port (Felix's vxlanPort)",
			set: func(c *Config, f, v string) (err error) { c.Ports.VXLAN, err = parsePortFlag(f, v); return }},
		{flag: "wireguard-port", env: calico.EnvWireGuardPort, def: "51820", usage: "Calico's WireGuard port (Felix's wireguardListeningPort)",
			set: func(c *Config, f, v string) (err error) { c.Ports.WireGuard, err = parsePortFlag(f, v); return }},
		{flag: "wireguard-port-v6", env: calico.EnvWireGuardPortV6, def: "51821", usage: "Calico's WireGuard port over IPv6 (Felix's wireguardListeningPortV6)",
			set: func(c *Config, f, v string) (err error) { c.Ports.WireGuardv6, err = parsePortFlag(f, v); return }},
		{flag: "host-root", def: "/", usage: "where the host's /proc, /sys, /lib/modules, /boot and /var/lib/calico are read",
			set: func(c *Config, f, v string) (err error) { c.HostRoot, err = ParseDir(f, v); return }},
		{flag: "state-dir", def: "/var/lib/calico-prep", usage: "where the agent records what it added",
			set: func(c *Config, f, v string) (err error) { c.StateDir, err = parseAbsPath(f, v); return }},
		{flag: "node-name", env: "NODE_NAME", usage: "this node's name (default: the host name)",
			set: func(c *Config, f, v string) (err error) { c.NodeName, err = parseNodeName(f, v); return }},
		{flag: "disable-checks", usage: "comma-separated areas (kernel, cidr, autodetect, links, firewalld, networkmanager, networkd) or check names to turn off",
			set: func(c *Config, f, v string) (err error) { c.DisableChecks, err = check.ParseSelector(f, v); return }},
		{flag: "firewalld", def: "auto", usage: "auto, on or off: manage firewalld when present, require it, or leave it alone",
			set: func(c *Config, f, v string) (err error) { c.Firewalld, err = ParseMode(f, v); return }},
		{flag: "firewalld-zone", usage: "zone for Calico's ports (default: the zone of the node-IP interface, else the default zone)",
			set: func(c *Config, f, v string) (err error) { c.FirewalldZone, err = parseZone(f, v); return }},
		{flag: "firewalld-extra-ports", usage: "more ports to open, e.g. 2379/tcp,6443/tcp",
			set: func(c *Config, f, v string) (err error) { c.FirewalldExtraPorts, err = ParsePorts(f, v); return }},
		{flag: "firewalld-forwarding", def: "true", isBool: true, usage: "let pod traffic forward through firewalld (own zone and policy)",
			set: func(c *Config, f, v string) (err error) { c.FirewalldForwarding, err = ParseBool(f, v); return }},
		{flag: "firewalld-open-metrics", def: "true", isBool: true, usage: "open the agent's metrics port, and Felix's and Typha's when they serve metrics, for Prometheus on other nodes",
			set: func(c *Config, f, v string) (err error) { c.FirewalldOpenMetrics, err = ParseBool(f, v); return }},
		{flag: "networkmanager", def: "auto", usage: "auto, on or off: keep Calico's interfaces unmanaged by NetworkManager",
			set: func(c *Config, f, v string) (err error) { c.NetworkManager, err = ParseMode(f, v); return }},
		{flag: "networkmanager-conf-dir", def: "/etc/NetworkManager/conf.d", usage: "where the unmanaged-devices drop-in is written",
			set: func(c *Config, f, v string) (err error) { c.NetworkManagerConfDir, err = parseAbsPath(f, v); return }},
		{flag: "networkmanager-extra-unmanaged", usage: "more interface-name globs to keep unmanaged, comma-separated",
			set: func(c *Config, f, v string) (err error) {
				c.NetworkManagerExtraUnmanaged, err = ParseInterfaceGlobs(f, v)
				return
			}},
		{flag: "networkd", def: "auto", usage: "auto, on or off: keep Calico's interfaces unmanaged by systemd-networkd",
			set: func(c *Config, f, v string) (err error) { c.Networkd, err = ParseMode(f, v); return }},
		{flag: "networkd-conf-dir", def: "/etc/systemd/network", usage: "where the .network file is written; networkd.conf and networkd.conf.d are read and written next to it",
			set: func(c *Config, f, v string) (err error) { c.NetworkdConfDir, err = parseAbsPath(f, v); return }},
		{flag: "networkd-foreign-routes", def: "keep", usage: "keep: make systemd-networkd keep routes and rules it did not create (Calico's), via a networkd.conf drop-in; off: leave networkd.conf alone",
			set: func(c *Config, f, v string) error {
				switch v {
				case "keep", "off":
					c.NetworkdKeepForeignRoutes = v == "keep"
					return nil
				}
				return fmt.Errorf("%s: unknown value %q: want keep or off", f, v)
			}},
		{flag: "kubeconfig", daemon: true, env: "KUBECONFIG", usage: "kubeconfig for Node reporting (default: in-cluster, else standalone)",
			set: func(c *Config, f, v string) error { c.Kubeconfig = v; return nil }},
		{flag: "calico-config", daemon: true, def: "auto", usage: "auto: settings not given here follow Calico's resources (FelixConfiguration, BGPConfiguration, IPPools, Installation) live; off: flags and environment only",
			set: func(c *Config, f, v string) (err error) { c.CalicoConfig, err = parseAutoOff(f, v); return }},
		{flag: "metrics-bind-address", daemon: true, def: DefaultMetricsBindAddress, usage: "address of /metrics, /healthz and /readyz; empty turns the server off",
			set: func(c *Config, f, v string) (err error) { c.MetricsBindAddress, err = parseBindAddress(f, v); return }},
		{flag: "resync-interval", daemon: true, def: "10m", usage: "slow full resync besides events (at least 10s)",
			set: func(c *Config, f, v string) (err error) {
				c.ResyncInterval, err = parseDuration(f, v, 10*time.Second)
				return
			}},
		{flag: "dry-run", daemon: true, def: "false", isBool: true, usage: "verify and list what would change; change nothing",
			set: func(c *Config, f, v string) (err error) { c.DryRun, err = ParseBool(f, v); return }},
		{flag: "once", daemon: true, def: "false", isBool: true, usage: "run one reconcile pass and exit with check's exit codes",
			set: func(c *Config, f, v string) (err error) { c.Once, err = ParseBool(f, v); return }},
	}
}

// value is a flag.Value that remembers the raw string; parsing happens in Load so that the
// environment can fill what the command line left out.
type value struct {
	s      string
	isBool bool
}

func (v *value) String() string     { return v.s }
func (v *value) Set(s string) error { v.s = s; return nil }
func (v *value) IsBoolFlag() bool   { return v.isBool }

// Flags binds every option of agent run to fs and returns the function that turns the parsed
// flags and the environment into a validated Config. Flags win over environment variables,
// which win over defaults.
func Flags(fs *flag.FlagSet) func(getenv func(string) string) (Config, error) {
	return bind(fs, options())
}

// HostFlags is Flags without the daemon's options, for agent check and agent cleanup, which
// would otherwise accept --once or --metrics-bind-address and silently ignore them.
func HostFlags(fs *flag.FlagSet) func(getenv func(string) string) (Config, error) {
	var opts []option
	for _, o := range options() {
		if !o.daemon {
			opts = append(opts, o)
		}
	}
	return bind(fs, opts)
}

func bind(fs *flag.FlagSet, opts []option) func(getenv func(string) string) (Config, error) {
	vals := make([]*value, len(opts))
	for i, o := range opts {
		vals[i] = &value{s: o.def, isBool: o.isBool}
		usage := o.usage
		if o.env != "" {
			usage += " (env " + o.env + ")"
		}
		fs.Var(vals[i], o.flag, usage)
	}
	return func(getenv func(string) string) (Config, error) {
		given := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
		c := Config{Given: map[string]string{}, CalicoConfig: ModeOff}
		for i, o := range opts {
			field, v := "--"+o.flag, vals[i].s
			if given[o.flag] {
				c.Given[o.flag] = field
			}
			if !given[o.flag] && o.env != "" && getenv(o.env) != "" {
				field, v = o.env, strings.TrimSpace(getenv(o.env))
				c.Given[o.flag] = field
			}
			if o.flag == "encapsulation" && !given[o.flag] {
				e, ok, err := EncapsulationFromEnv(getenv)
				if err != nil {
					return Config{}, err
				}
				if ok {
					c.Encapsulation = e
					c.Given[o.flag] = calico.EnvIPv4PoolIPIP + "/" + calico.EnvIPv4PoolVXLAN
					continue
				}
			}
			if err := o.set(&c, field, v); err != nil {
				return Config{}, err
			}
		}
		c.WireGuardv6 = c.WireGuard && c.PodCIDRv6.IsValid()
		if c.NodeName == "" {
			h, err := os.Hostname()
			if err != nil {
				return Config{}, fmt.Errorf("--node-name: not given and the host name is unknown: %w", err)
			}
			if c.NodeName, err = parseNodeName("--node-name (from the host name)", strings.ToLower(h)); err != nil {
				return Config{}, err
			}
		}
		// IP-in-IP carries traffic along routes that BIRD learns over BGP; without BGP calico-node
		// has no routes for it (VXLAN and no encapsulation work without BGP).
		if c.Encapsulation == calico.EncapIPIP && !c.BGP {
			return Config{}, errors.New("--encapsulation: ipip needs BGP (--bgp=true, CALICO_NETWORKING_BACKEND=bird); use vxlan without BGP")
		}
		return c, nil
	}
}
