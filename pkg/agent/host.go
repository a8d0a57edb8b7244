// Package agent wires the system packages (links, kernel, firewalld, networkmanager, networkd) and the
// logic packages (autodetect, cidr) into one ordered list of checks, runs passes over them, and
// runs the daemon: events in, checks run, status out to the Node and to metrics.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/calico-prep/calico-prep/pkg/autodetect"
	"github.com/calico-prep/calico-prep/pkg/calicoconfig"
	"github.com/calico-prep/calico-prep/pkg/check"
	"github.com/calico-prep/calico-prep/pkg/cidr"
	"github.com/calico-prep/calico-prep/pkg/config"
	"github.com/calico-prep/calico-prep/pkg/firewalld"
	"github.com/calico-prep/calico-prep/pkg/host"
	"github.com/calico-prep/calico-prep/pkg/kernel"
	"github.com/calico-prep/calico-prep/pkg/links"
	"github.com/calico-prep/calico-prep/pkg/networkd"
	"github.com/calico-prep/calico-prep/pkg/networkmanager"
	"github.com/calico-prep/calico-prep/pkg/report"
)

// Host is this node as the checks see it: the netlink and D-Bus clients, the configuration
// and the ordered checks built from them.
type Host struct {
	cfg   config.Config
	log   *slog.Logger
	links *links.Client
	fw    *firewalld.Client // nil while there is no system bus or firewalld is off
	nm    *networkmanager.Client
	nd    *networkd.Client // systemd-networkd's

	// passes counts Pass calls; snap and the firewalld checks' reads are kept per pass.
	passes check.Passes
	// snap holds one netlink snapshot per pass, shared by every check that reads links and
	// by the report of the pass.
	snap check.PassCache[host.Snapshot]

	mu          sync.Mutex
	internalIPs []netip.Addr // the Node's InternalIPs from the watch; cfg.NodeInternalIPs without a cluster
	checks      []check.Check
	kernel      []check.Check            // built once per requirements: they cache the kernel config between passes
	protected   atomic.Pointer[[]string] // interfaces NetworkManager must keep managing, per pass
	// calico is the effective configuration (cfg is its Config) and where it came from;
	// calicoNode what calico-node annotated on the Node. See calicoconfig.go.
	calico     calicoconfig.Effective
	managed    bool
	calicoNode autodetect.CalicoChoice
}

// Open validates what the components need and connects to netlink and, unless turned off, to
// the system bus. A missing bus is not an error: those checks report it.
func Open(ctx context.Context, cfg config.Config, log *slog.Logger) (*Host, error) {
	if err := firewalldOptions(cfg, nil, log).Validate(); err != nil {
		return nil, err
	}
	lc, err := links.New(links.Options{})
	if err != nil {
		return nil, fmt.Errorf("open netlink: %w", err)
	}
	h := &Host{cfg: cfg, log: log, links: lc, internalIPs: cfg.NodeInternalIPs, kernel: kernelChecks(cfg), calico: calicoconfig.FromFlags(cfg)}
	h.snap.Passes = &h.passes
	h.checks = h.buildChecks()
	return h, nil
}

func kernelChecks(cfg config.Config) []check.Check {
	return kernel.Checks(kernel.FS{Root: cfg.HostRoot}, kernelRequirements(cfg))
}

func kernelRequirements(cfg config.Config) kernel.Requirements {
	return kernel.Requirements{
		Encapsulation: string(cfg.Encapsulation), WireGuard: cfg.WireGuard || cfg.WireGuardv6, IPv6: cfg.PodCIDRv6.IsValid(),
	}
}

// ValidateDisabled rejects a --disable-checks entry that is neither an area nor the name of a
// check this configuration runs, naming the entry and the valid areas. It builds the checks
// without touching the host; firewalld and NetworkManager count as on, so that their checks can
// be named on a host where they are off or absent.
func ValidateDisabled(cfg config.Config) error {
	probe := cfg
	probe.Firewalld, probe.NetworkManager, probe.Networkd = config.ModeOn, config.ModeOn, config.ModeOn
	h := &Host{cfg: probe, log: slog.New(slog.DiscardHandler), kernel: kernelChecks(probe),
		calico: calicoconfig.Effective{Config: probe, Followed: probe.CalicoConfig == config.ModeAuto}, managed: true}
	return cfg.DisableChecks.Validate("--disable-checks", h.buildChecks())
}

// Close releases every connection.
func (h *Host) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.fw != nil {
		_ = h.fw.Close()
	}
	if h.nm != nil {
		_ = h.nm.Close()
	}
	h.dropNetworkd(h.nd)
	_ = h.links.Close()
}

// dialTimeout bounds a dial and handshake with the system bus.
const dialTimeout = 5 * time.Second

// Connect dials the system bus for each component that is on and not connected, and rebuilds
// the checks when a connection is new; it reports whether one is. The command calls it before
// a pass; the daemon's Watch keeps the connections from then on.
func (h *Host) Connect(ctx context.Context) bool {
	h.mu.Lock()
	needFW := h.cfg.Firewalld != config.ModeOff && h.fw == nil
	needNM := h.cfg.NetworkManager != config.ModeOff && h.nm == nil
	h.mu.Unlock()
	// Dial without the lock: a hung bus must not block SetInternalIPs or a pass's reads.
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	var fw *firewalld.Client
	var nm *networkmanager.Client
	var err error
	if needFW {
		if fw, err = firewalld.Dial(ctx, ""); err != nil {
			h.log.Debug("system bus not reachable for firewalld", "err", err)
		}
	}
	if needNM {
		if nm, err = networkmanager.Dial(ctx, ""); err != nil {
			h.log.Debug("system bus not reachable for NetworkManager", "err", err)
		}
	}
	nd := h.dialNetworkd(ctx)
	h.mu.Lock()
	defer h.mu.Unlock()
	if fw != nil {
		h.fw = fw
	}
	if nm != nil {
		h.nm = nm
	}
	if nd != nil {
		h.nd = nd
	}
	if fw == nil && nm == nil && nd == nil {
		return false
	}
	h.checks = h.buildChecks()
	return true
}

// clients returns the connections there are; nil where there is none.
func (h *Host) clients() (*firewalld.Client, *networkmanager.Client, *networkd.Client) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.fw, h.nm, h.nd
}

// disconnected reports whether a component that is on has no connection to the system bus.
func (h *Host) disconnected() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.cfg.Firewalld != config.ModeOff && h.fw == nil || h.cfg.NetworkManager != config.ModeOff && h.nm == nil ||
		h.networkdDisconnected()
}

// disconnect drops a client whose connection ended (its watch closed), so that it is dialled
// again.
func (h *Host) disconnect(client any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.fw != nil && client == h.fw:
		_ = h.fw.Close()
		h.fw = nil
	case h.nm != nil && client == h.nm:
		_ = h.nm.Close()
		h.nm = nil
	case h.dropNetworkd(client):
	default:
		return
	}
	h.checks = h.buildChecks()
}

// SetInternalIPs records the Node's InternalIPs (kubernetes-internal-ip). It reports whether
// they changed.
func (h *Host) SetInternalIPs(ips []netip.Addr) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if slices.Equal(h.internalIPs, ips) {
		return false
	}
	h.internalIPs = ips
	return true
}

// Pass runs every check once and describes the node as the pass saw it: the report's host
// network, autodetection and pools come from the same reads as the checks (report.Node's
// FromChecks adds what the entries say).
func (h *Host) Pass(ctx context.Context, runner check.Runner) (check.Report, report.Node) {
	h.mu.Lock()
	checks := h.checks
	h.mu.Unlock()
	h.passes.Start()
	protected := h.protectedInterfaces(ctx)
	h.protected.Store(&protected)
	rep := runner.Run(ctx, checks)
	return rep, h.describe(ctx)
}

// protectedInterfaces are the interfaces calico-prep never makes unmanaged: the one carrying
// the node IP. When that is unknown, every non-Calico interface with an address, so that an
// extra pattern such as en* can never take the node off its network.
func (h *Host) protectedInterfaces(ctx context.Context) []string {
	snap, err := h.snapshot(ctx)
	if err != nil {
		return nil // no snapshot, no device checks either: they read the same netlink
	}
	if res, err := h.detect(ctx, snap); err == nil && res.Interface != "" {
		return []string{res.Interface}
	}
	var names []string
	for _, i := range snap.Interfaces {
		if len(i.Addrs) > 0 && !report.IsCalicoInterface(i.Name) {
			names = append(names, i.Name)
		}
	}
	return names
}

// buildChecks returns the checks in the order they run. The most basic come first because the
// first failing check names the NodeCondition: the kernel, then the node's address and pod
// CIDR, Calico's links, and then what calico-prep changes (NetworkManager, firewalld).
func (h *Host) buildChecks() []check.Check {
	cfg := h.cfg
	checks := h.calicoChecks()
	checks = append(checks, h.kernel...)
	for _, fam := range familiesOf(cfg) {
		checks = append(checks, autodetect.NewCheck(fam.method, fam.family, h.snapshot, h.env))
	}
	checks = append(checks, h.agreeCheck())
	checks = append(checks, cidr.Checks(cidr.Input{
		Pools: poolsOf(cfg), ServiceCIDRs: cfg.ServiceCIDRs, KubeadmSubnets: cfg.KubeadmSubnets,
	}, h.snapshot)...)
	checks = append(checks, links.Checks(h.links, links.Config{
		Encapsulation: string(cfg.Encapsulation),
		WireGuard:     cfg.WireGuard || cfg.WireGuardv6,
		IPv6:          cfg.PodCIDRv6.IsValid(),
		CalicoStarted: h.calicoStarted,
		Uplink: func(ctx context.Context, snap host.Snapshot) (string, error) {
			res, err := h.detect(ctx, snap)
			return res.Interface, err
		},
		Snapshot: h.snapshot,
	})...)
	checks = append(checks, networkmanager.Checks(h.nm, networkmanager.Options{
		Mode:          cfg.NetworkManager,
		ConfDir:       cfg.NetworkManagerConfDir,
		ExtraPatterns: cfg.NetworkManagerExtraUnmanaged,
		// The node's uplink is never made unmanaged, whatever the patterns say.
		Protected: func() []string {
			if p := h.protected.Load(); p != nil {
				return *p
			}
			return nil
		},
	})...)
	fo := firewalldOptions(cfg, h.nodeInterface, h.log)
	// Closing what an older configuration opened needs the whole configuration: the daemon's,
	// once Calico's resources are read (never agent check's flags alone).
	fo.RemoveStale = h.managed && h.calico.Authoritative()
	fo.Passes = &h.passes
	checks = append(checks, firewalld.Checks(h.fw, fo)...)
	checks = append(checks, h.networkdChecks()...)
	return checks
}

type familyMethod struct {
	family int
	method autodetect.Method
}

// config is the configuration the checks run with; SetEffective may replace it.
func (h *Host) config() config.Config {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.cfg
}

// familiesOf are the IP families in use with their autodetection methods (validated by config
// and calicoconfig).
func familiesOf(cfg config.Config) []familyMethod {
	m4, _ := autodetect.ParseMethod(cfg.IPAutodetectionMethod)
	out := []familyMethod{{4, m4}}
	if cfg.PodCIDRv6.IsValid() {
		m6, _ := autodetect.ParseMethod(cfg.IP6AutodetectionMethod)
		out = append(out, familyMethod{6, m6})
	}
	return out
}

// poolsOf are the pod CIDRs: every one of Calico's pools when they are known.
func poolsOf(cfg config.Config) []netip.Prefix {
	if cfg.Pools != nil {
		return slices.Clone(cfg.Pools)
	}
	pools := []netip.Prefix{cfg.PodCIDR}
	if cfg.PodCIDRv6.IsValid() {
		pools = append(pools, cfg.PodCIDRv6)
	}
	return pools
}

func (h *Host) env(context.Context) autodetect.Env {
	h.mu.Lock()
	defer h.mu.Unlock()
	return autodetect.Env{NodeInternalIPs: slices.Clone(h.internalIPs)}
}

// detect runs the IPv4 autodetection (the node IP Calico uses) on snap.
func (h *Host) detect(ctx context.Context, snap host.Snapshot) (autodetect.Result, error) {
	fam := familiesOf(h.config())[0]
	return autodetect.Detect(ctx, fam.method, fam.family, snap.Interfaces, h.env(ctx))
}

// nodeInterface is the interface carrying the node IP: its firewalld zone receives the rules.
func (h *Host) nodeInterface(ctx context.Context) (string, error) {
	snap, err := h.snapshot(ctx)
	if err != nil {
		return "", err
	}
	res, err := h.detect(ctx, snap)
	if errors.Is(err, autodetect.ErrNoAddress) {
		return "", nil // the autodetect check reports it; firewalld falls back to the default zone
	}
	return res.Interface, err
}

// calicoStarted reports whether calico-node has run on this node: it writes its node name to
// /var/lib/calico/nodename at startup.
func (h *Host) calicoStarted() bool {
	_, err := os.Stat(filepath.Join(h.config().HostRoot, "var/lib/calico/nodename"))
	return err == nil
}

// describe is the node's part of the report of the current pass.
func (h *Host) describe(ctx context.Context) report.Node {
	cfg := h.config()
	n := report.Node{Pools: poolsOf(cfg), Warnings: h.Effective().Warnings}
	if snap, err := h.snapshot(ctx); err == nil {
		n.Host = report.HostOf(snap)
		for _, fam := range familiesOf(cfg) {
			if res, err := autodetect.Detect(ctx, fam.method, fam.family, snap.Interfaces, h.env(ctx)); err == nil {
				n.Autodetect = append(n.Autodetect, res)
			}
		}
	}
	return n
}

func firewalldOptions(cfg config.Config, nodeInterface func(context.Context) (string, error), log *slog.Logger) firewalld.Options {
	pods := []netip.Prefix{cfg.PodCIDR}
	if cfg.PodCIDRv6.IsValid() {
		pods = append(pods, cfg.PodCIDRv6)
	}
	if cfg.Pools != nil {
		pods = cfg.Pools
	}
	var felixMetrics, typhaMetrics, agentMetrics uint16
	if cfg.FirewalldOpenMetrics {
		felixMetrics, typhaMetrics, agentMetrics = cfg.FelixMetricsPort, cfg.TyphaMetricsPort, metricsPort(cfg.MetricsBindAddress)
	}
	return firewalld.Options{
		Mode:          cfg.Firewalld,
		Zone:          cfg.FirewalldZone,
		NodeInterface: nodeInterface,
		Rules: firewalld.Rules(firewalld.RuleInput{
			BGP: cfg.BGP, Typha: cfg.Typha, WireGuard: cfg.WireGuard, WireGuardv6: cfg.WireGuardv6,
			Encapsulation: cfg.Encapsulation, OtherEncapsulations: cfg.OtherEncapsulations, Ports: cfg.Ports,
			FelixMetricsPort: felixMetrics, TyphaMetricsPort: typhaMetrics, AgentMetricsPort: agentMetrics,
			Extra: cfg.FirewalldExtraPorts,
		}),
		Forwarding: cfg.FirewalldForwarding,
		PodCIDRs:   pods,
		StateDir:   cfg.StateDir,
		Log:        log,
	}
}

// snapshot is the network as this pass sees it, read once.
func (h *Host) snapshot(ctx context.Context) (host.Snapshot, error) {
	return h.snap.Get(ctx, h.links.Snapshot)
}
