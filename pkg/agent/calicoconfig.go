package agent

import (
	"context"
	"maps"
	"net"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/calico-prep/calico-prep/pkg/autodetect"
	"github.com/calico-prep/calico-prep/pkg/calicoconfig"
	"github.com/calico-prep/calico-prep/pkg/check"
)

// calicoSyncWait bounds how long the daemon's first pass waits for Calico's resources to be
// read. An API server that does not answer in time does not hold the node back.
const calicoSyncWait = 10 * time.Second

// SetEffective makes eff the configuration the checks run with, from the next pass on. The
// daemon calls it (also with calicoconfig.FromFlags when Calico's resources are not
// followed); only then does firewalld/stale-rules close what an older configuration opened.
// It reports whether anything changed.
func (h *Host) SetEffective(eff calicoconfig.Effective) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.managed && reflect.DeepEqual(h.calico, eff) {
		return false
	}
	rebuild := !h.managed || !reflect.DeepEqual(h.cfg, eff.Config) || h.calico.Authoritative() != eff.Authoritative()
	if kernelRequirements(h.cfg) != kernelRequirements(eff.Config) {
		h.kernel = kernelChecks(eff.Config)
	}
	h.cfg, h.calico, h.managed = eff.Config, eff, true
	if rebuild {
		h.checks = h.buildChecks()
	}
	return true
}

// Effective returns the configuration the checks run with.
func (h *Host) Effective() calicoconfig.Effective {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.calico
}

// SetCalicoNode records the annotations calico-node wrote on the Node (the addresses it chose).
// It reports whether they changed; other annotations do not count.
func (h *Host) SetCalicoNode(annotations map[string]string) bool {
	c := autodetect.ChoiceFromAnnotations(annotations)
	h.mu.Lock()
	defer h.mu.Unlock()
	if c.IPv4 == h.calicoNode.IPv4 && c.IPv6 == h.calicoNode.IPv6 && maps.Equal(c.Tunnels, h.calicoNode.Tunnels) {
		return false
	}
	h.calicoNode = c
	return true
}

// calicoChecks are calico/config, which says where the configuration comes from, when
// Calico's resources are followed.
func (h *Host) calicoChecks() []check.Check {
	if !h.calico.Followed {
		return nil
	}
	return []check.Check{calicoconfig.NewCheck(h.Effective)}
}

// agreeCheck is autodetect/calico-agrees for the families in use; buildChecks calls it with
// h.mu held.
func (h *Host) agreeCheck() check.Check {
	var methods []autodetect.FamilyMethod
	for _, fam := range familiesOf(h.cfg) {
		from := "IP_AUTODETECTION_METHOD"
		name := "IPv4 autodetection"
		if fam.family == 6 {
			from, name = "IP6_AUTODETECTION_METHOD", "IPv6 autodetection"
		}
		for _, s := range h.calico.Settings {
			if s.Name == name {
				from = s.From
			}
		}
		methods = append(methods, autodetect.FamilyMethod{Family: fam.family, Method: fam.method, From: from})
	}
	return autodetect.NewAgreeCheck(methods, h.snapshot, h.env, func() autodetect.CalicoChoice {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.calicoNode
	})
}

// metricsPort is the port of the agent's metrics server for other nodes' Prometheus: none
// when it listens on loopback only, or not at all.
func metricsPort(bind string) uint16 {
	host, port, err := net.SplitHostPort(bind)
	if err != nil {
		return 0
	}
	if a, err := netip.ParseAddr(host); err == nil && a.IsLoopback() || strings.EqualFold(host, "localhost") {
		return 0
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return 0
	}
	return uint16(n)
}

// watchCalico applies each state of Calico's resources and asks for a pass when the
// configuration changed. Until the first complete state, or calicoSyncWait (calicoWaitJob), no
// pass runs, whatever else asks: a pass on flags alone would open Felix's defaults on a node
// where Calico uses other ports, only for the next pass to close them.
func (a *Agent) watchCalico(ctx context.Context) {
	for st := range a.calico.Watch(ctx) {
		changed := a.host.SetEffective(calicoconfig.Resolve(a.cfg, st, true))
		if st.Synced && a.calicoRead() {
			changed = true
		}
		if changed {
			a.Poke()
		}
	}
}

// calicoRead ends the wait for Calico's resources; it reports whether there was one.
func (a *Agent) calicoRead() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	was := a.st.calicoUnread
	a.st.calicoUnread = false
	return was
}

// awaitingCalico reports whether passes still wait for Calico's resources.
func (a *Agent) awaitingCalico() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.st.calicoUnread
}

// awaitCalico applies the first complete state of Calico's resources, waiting at most wait;
// the configuration stays the flags' when none comes.
func (a *Agent) awaitCalico(ctx context.Context, wait time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for st := range a.calico.Watch(ctx) {
		a.host.SetEffective(calicoconfig.Resolve(a.cfg, st, true))
		if st.Synced {
			return
		}
	}
	a.log.Warn("Calico's resources not read in time; this pass uses flags alone", "waited", wait)
}
