package links

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/calico-prep/calico-prep/pkg/calico"

	"github.com/calico-prep/calico-prep/pkg/check"
	"github.com/calico-prep/calico-prep/pkg/host"
)

// Config says which of Calico's links this node should have.
type Config struct {
	Encapsulation string // "ipip", "vxlan" or "none"
	WireGuard     bool
	IPv6          bool
	// CalicoStarted reports whether calico-node has run on this node. Until then Calico's links
	// cannot exist and their checks are not applicable: a check waiting for them would keep the
	// node unready, and so Calico unscheduled, forever. Nil means it has started.
	CalicoStarted func() bool
	// Uplink names the node's main interface in snap; the links' MTUs must leave room for their
	// encapsulation within its MTU. Nil, or an error, leaves MTUs unchecked (the autodetection
	// check reports why there is no uplink).
	Uplink func(ctx context.Context, snap host.Snapshot) (string, error)
	// Snapshot, when set, replaces the client's Snapshot, e.g. to share one snapshot per pass.
	Snapshot func(ctx context.Context) (host.Snapshot, error)
	// now is the clock of the veth settle time; time.Now when nil (tests set it).
	now func() time.Time
}

func (cfg Config) started() bool { return cfg.CalicoStarted == nil || cfg.CalicoStarted() }

// linkSpec is one link calico-node creates and what it must look like.
type linkSpec struct {
	name string
	// kind is the netlink link kind Calico creates; its kernel module has the same name.
	kind string
	// overhead is what the encapsulation adds to each packet, which is why the MTU must be at
	// most the uplink's minus this (Calico's own MTU calculation uses the same numbers).
	overhead int
	what     string     // the encapsulation, for messages
	vxlan    host.VXLAN // VNI and port Felix configures (its defaults), for VXLAN devices only
	// unused says why cfg does not call for the link, or "" when it does.
	unused func(Config) string
}

func calicoLinks() []linkSpec {
	// Felix's default VXLANVNI and VXLANPort, the same for both families.
	felixVXLAN := host.VXLAN{VNI: calico.VXLANVNI, Port: calico.VXLANPort}
	encap := func(want string, v6 bool) func(Config) string {
		return func(c Config) string {
			switch {
			case c.Encapsulation != want:
				return "the encapsulation is " + c.Encapsulation
			case v6 && !c.IPv6:
				return "IPv6 is not used"
			}
			return ""
		}
	}
	wireguard := func(v6 bool) func(Config) string {
		return func(c Config) string {
			switch {
			case !c.WireGuard:
				return "WireGuard is off"
			case v6 && !c.IPv6:
				return "IPv6 is not used"
			}
			return ""
		}
	}
	var specs []linkSpec
	for _, t := range calico.Tunnels() {
		spec := linkSpec{name: t.Device, kind: t.Kind, overhead: t.Overhead, what: t.Encapsulation}
		switch t.Kind {
		case "ipip", "vxlan":
			spec.unused = encap(t.Kind, t.IPv6)
		case "wireguard":
			spec.unused = wireguard(t.IPv6)
		}
		if t.Kind == "vxlan" {
			spec.vxlan = felixVXLAN
		}
		specs = append(specs, spec)
	}
	return specs
}

// Checks returns the checks of Calico's own links: links/tunl0, links/vxlan.calico,
// links/vxlan-v6.calico, links/wireguard.cali, links/wg-v6.cali and links/cali-veths. They only
// read; Calico creates and repairs its links itself.
func Checks(c *Client, cfg Config) []check.Check {
	snapshot := cfg.Snapshot
	if snapshot == nil {
		snapshot = c.Snapshot
	}
	var checks []check.Check
	for _, spec := range calicoLinks() {
		checks = append(checks, linkCheck(snapshot, cfg, spec))
	}
	return append(checks, vethCheck(snapshot, cfg))
}

func linkCheck(snapshot func(context.Context) (host.Snapshot, error), cfg Config, spec linkSpec) check.Check {
	return check.Check{Name: "links/" + spec.name, Verify: func(ctx context.Context) check.Result {
		if why := spec.unused(cfg); why != "" {
			return check.Skipped("NotUsed", "%s is not needed: %s", spec.name, why)
		}
		if !cfg.started() {
			return check.Skipped("CalicoNotStarted", "calico-node has not run on this node yet, so it has not created %s", spec.name)
		}
		snap, err := snapshot(ctx)
		if err != nil {
			return check.Errored(err)
		}
		uplink, uplinkErr := findUplink(ctx, cfg, snap)
		return verifyLink(snap, spec, uplink, uplinkErr)
	}}
}

func findUplink(ctx context.Context, cfg Config, snap host.Snapshot) (host.Interface, error) {
	if cfg.Uplink == nil {
		return host.Interface{}, fmt.Errorf("no uplink is known")
	}
	name, err := cfg.Uplink(ctx, snap)
	if err != nil {
		return host.Interface{}, fmt.Errorf("find uplink: %w", err)
	}
	u, ok := snap.Interface(name)
	if !ok {
		return host.Interface{}, fmt.Errorf("uplink %q does not exist", name)
	}
	return u, nil
}

// verifyLink is the whole judgement of one Calico link in snap, so tests can run it with
// stand-in links (a TUN for tunl0) by changing spec.kind. uplinkErr says why uplink is unknown.
func verifyLink(snap host.Snapshot, spec linkSpec, uplink host.Interface, uplinkErr error) check.Result {
	l, ok := snap.Interface(spec.name)
	if !ok {
		return check.Failed("LinkMissing", "%s is missing although calico-node has run on this node; Calico needs the %s kernel module to create it", spec.name, spec.kind)
	}
	facts := map[string]string{check.FactLink: l.Name, "type": l.Type, "mtu": strconv.Itoa(l.MTU), check.FactUp: strconv.FormatBool(l.Up)}
	if l.Type != spec.kind {
		return withFacts(check.Failed("LinkWrongType", "%s is a %s link, want %s", spec.name, l.Type, spec.kind), facts)
	}

	var reasons, problems []string
	fail := func(reason, format string, args ...any) {
		reasons = append(reasons, reason)
		problems = append(problems, fmt.Sprintf(format, args...))
	}
	if spec.vxlan != (host.VXLAN{}) {
		var got host.VXLAN
		if l.VXLAN != nil {
			got = *l.VXLAN
		}
		facts["vni"], facts["port"] = strconv.Itoa(got.VNI), strconv.Itoa(got.Port)
		if got != spec.vxlan {
			fail("VXLANMismatch", "has VNI %d, port %d (want VNI %d, port %d)", got.VNI, got.Port, spec.vxlan.VNI, spec.vxlan.Port)
		}
	}
	if !l.Up {
		fail("LinkDown", "is down")
	}
	var mtuNote string
	if uplinkErr != nil {
		mtuNote = fmt.Sprintf("; its MTU is not checked: %v", uplinkErr)
	} else {
		want := uplink.MTU - spec.overhead
		facts["expectedMTU"], facts["uplink"] = strconv.Itoa(want), uplink.Name
		mtuNote = fmt.Sprintf(", within the %d that uplink %s allows", want, uplink.Name)
		if l.MTU > want {
			fail("MTUTooLarge", "has MTU %d, above %d (MTU %d of uplink %s minus %d for %s)", l.MTU, want, uplink.MTU, uplink.Name, spec.overhead, spec.what)
		}
	}
	if len(problems) > 0 {
		return withFacts(check.Failed(reasons[0], "%s %s", spec.name, joinClauses(problems)), facts)
	}
	return withFacts(check.Passed("%s is an up %s link with MTU %d%s", spec.name, l.Type, l.MTU, mtuNote), facts)
}

// joinClauses joins "a", "b", "c" as "a, b and c".
func joinClauses(s []string) string {
	if len(s) < 2 {
		return strings.Join(s, "")
	}
	return strings.Join(s[:len(s)-1], ", ") + " and " + s[len(s)-1]
}

func withFacts(r check.Result, facts map[string]string) check.Result {
	r.Facts = facts
	return r
}

// vethSettle is how long a cali* veth may be down before it counts: Calico's CNI plugin moves
// the host end into the host namespace down and brings it up a moment later, and a pass that
// runs in between (the move is a netlink event) must not flip the node's readiness.
const vethSettle = 2 * time.Second

func vethCheck(snapshot func(context.Context) (host.Snapshot, error), cfg Config) check.Check {
	downSince := map[string]time.Time{} // per veth name, when a pass first saw it down
	now := cfg.now
	if now == nil {
		now = time.Now
	}
	return check.Check{Name: "links/cali-veths", Verify: func(ctx context.Context) check.Result {
		if !cfg.started() {
			return check.Skipped("CalicoNotStarted", "calico-node has not run on this node yet, so no pod has a cali* veth")
		}
		snap, err := snapshot(ctx)
		if err != nil {
			return check.Errored(err)
		}
		total, down := caliVeths(snap)
		res := verifyCaliVeths(total, down)
		if wait := settle(down, downSince, now()); wait > 0 {
			settling := check.Passed("%d cali* veths are coming up (%s); checking again in %v", len(down), strings.Join(down, ","), wait.Round(time.Millisecond))
			settling.Facts, settling.RecheckIn = res.Facts, wait
			return settling
		}
		return res
	}}
}

// settle records when each down veth was first seen down and returns how long the longest
// newcomer still has to come up: while that is above 0, the check passes and asks for a
// recheck then.
func settle(down []string, downSince map[string]time.Time, now time.Time) time.Duration {
	for name := range downSince {
		if !slices.Contains(down, name) {
			delete(downSince, name)
		}
	}
	var wait time.Duration
	for _, name := range down {
		since, ok := downSince[name]
		if !ok {
			since, downSince[name] = now, now
		}
		wait = max(wait, vethSettle-now.Sub(since))
	}
	return wait
}

// maxNamed bounds how many down veths a message names; the facts list them all.
const maxNamed = 5

// caliVeths counts the host ends of the pods' veths, which Calico's CNI plugin names cali*,
// and names those that are down.
func caliVeths(snap host.Snapshot) (total int, down []string) {
	for _, i := range snap.Interfaces {
		if i.Type != "veth" || !strings.HasPrefix(i.Name, calico.WorkloadPrefix) {
			continue
		}
		total++
		if !i.Up {
			down = append(down, i.Name)
		}
	}
	return total, down
}

// verifyCaliVeths judges the cali* veths caliVeths found.
func verifyCaliVeths(total int, down []string) check.Result {
	if total == 0 {
		return check.Skipped("NoCaliVeths", "no cali* veths exist: no pod on this node uses Calico networking yet")
	}
	if len(down) == 0 {
		return check.Passed("all %d cali* veths are up", total).With("veths", strconv.Itoa(total))
	}
	named := strings.Join(down[:min(len(down), maxNamed)], ", ")
	if len(down) > maxNamed {
		named += fmt.Sprintf(" and %d more", len(down)-maxNamed)
	}
	return withFacts(check.Failed("VethDown",
		"%d of %d cali* veths are down (%s); NetworkManager takes a veth down when it stops managing it, so keep cali* in its unmanaged-devices",
		len(down), total, named), map[string]string{"veths": strconv.Itoa(total), "down": strings.Join(down, ",")})
}
