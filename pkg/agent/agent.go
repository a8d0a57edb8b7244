package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/calico-prep/calico-prep/pkg/calico"

	"github.com/calico-prep/calico-prep/pkg/backoff"
	"github.com/calico-prep/calico-prep/pkg/calicoconfig"
	"github.com/calico-prep/calico-prep/pkg/check"
	"github.com/calico-prep/calico-prep/pkg/config"
	"github.com/calico-prep/calico-prep/pkg/firewalld"
	"github.com/calico-prep/calico-prep/pkg/metrics"
	"github.com/calico-prep/calico-prep/pkg/networkmanager"
	"github.com/calico-prep/calico-prep/pkg/nodestatus"
)

// ShutdownGrace is how long a pass in progress may go on after SIGTERM before it is abandoned.
const ShutdownGrace = 5 * time.Second

// PassTimeout bounds one pass: a hung firewalld (one Python thread) or system bus must degrade
// its checks, not freeze the loop, the Node status and /readyz.
const PassTimeout = 2 * time.Minute

// countInterval spaces the node counts behind the Typha advice: the cluster size changes
// slowly, and each count is a request from every node.
const countInterval = 6 * time.Hour

// Agent is the daemon: it runs a reconcile pass whenever something that can change a check's
// outcome happens, and publishes the result.
type Agent struct {
	cfg     config.Config
	log     *slog.Logger
	host    *Host
	metrics *metrics.Metrics
	node    *nodestatus.Client   // nil in standalone mode
	calico  *calicoconfig.Client // nil: flags alone (see calicoconfig.go)
	// calicoRead closes once Calico's resources are first read; nil without calico.
	calicoRead chan struct{}
	now        func() time.Time

	trigger chan struct{} // capacity 1: events during a pass coalesce into one more pass

	mu        sync.Mutex
	last      *check.Report      // last finished pass
	advice    []string           // from the last node count
	published *nodestatus.Status // what the Node says since our last write
	inflight  *nodestatus.Status // what a write in progress makes it say

	// publishFailed is set while a write to the Node is waiting for its retry.
	publishFailed atomic.Bool

	// Owned by the loop goroutine.
	pendingEvent *event
	publishRetry backoff.Backoff
	dialRetry    backoff.Backoff
}

type event struct {
	warning        bool
	reason, detail string
}

// after returns e, carrying the detail of an Event that could not be sent before it, so a
// transition is not lost while the API server is away.
func (e *event) after(pending *event) *event {
	if pending == nil {
		return e
	}
	return &event{warning: e.warning, reason: e.reason, detail: pending.detail + "; then " + e.detail}
}

// New returns an agent over an opened host. node may be nil (standalone).
func New(cfg config.Config, log *slog.Logger, h *Host, m *metrics.Metrics, node *nodestatus.Client) *Agent {
	return &Agent{
		cfg: cfg, log: log, host: h, metrics: m, node: node, now: time.Now,
		trigger:      make(chan struct{}, 1),
		publishRetry: backoff.Backoff{Min: time.Second, Max: 2 * time.Minute},
		dialRetry:    backoff.Backoff{Min: time.Second, Max: 5 * time.Minute},
	}
}

// Poke asks for a pass; pokes during a pass coalesce into one more pass.
func (a *Agent) Poke() {
	select {
	case a.trigger <- struct{}{}:
	default:
	}
}

// Ready reports whether the last pass finished with the node ready (for /readyz).
func (a *Agent) Ready() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.last != nil && a.last.Ready
}

// LastReport returns the last finished pass, if any.
func (a *Agent) LastReport() (check.Report, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.last == nil {
		return check.Report{}, false
	}
	return *a.last, true
}

// Run is the event loop: netlink, firewalld and NetworkManager events, changes to the Node and
// the slow resync timer wake it; there is no polling. It returns nil when ctx ends, after
// letting a pass in progress finish within ShutdownGrace; it never undoes preparation.
func (a *Agent) Run(ctx context.Context) error {
	passCtx, cancelPasses := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelPasses()
	go func() {
		<-ctx.Done()
		select {
		case <-passCtx.Done():
		case <-time.After(ShutdownGrace):
			cancelPasses()
		}
	}()

	var wg sync.WaitGroup
	defer wg.Wait()
	sources, stop := context.WithCancel(ctx)
	defer stop()
	spawn := func(f func(context.Context)) { wg.Go(func() { f(sources) }) }

	spawn(a.watchLinks)
	if a.node != nil {
		spawn(a.watchNode)
	}
	spawn(a.resync)
	if a.calico != nil {
		spawn(a.watchCalico)
	}
	a.Poke()

	for {
		select {
		case <-ctx.Done():
			return nil
		case <-a.trigger:
		}
		if ctx.Err() != nil || !a.awaitCalicoRead(ctx) {
			return nil // a poke and SIGTERM together: do not start another pass
		}
		pctx, cancel := context.WithTimeout(passCtx, PassTimeout)
		// A pass sees the clients as they are; dial what went away since the last one, and
		// try again later while the system bus is away.
		fw, nm := a.host.Connect(pctx)
		a.watchClients(spawn, fw, nm)
		a.watchNetworkd(spawn, a.host.takeFreshNetworkd())
		if a.host.Disconnected() {
			time.AfterFunc(a.dialRetry.Next(), a.Poke)
		} else {
			a.dialRetry.Reset()
		}
		a.pass(pctx)
		cancel()
	}
}

// Once runs one reconcile pass (waiting for the Node first when reporting to a cluster) and
// returns its report.
func (a *Agent) Once(ctx context.Context) (check.Report, error) {
	if a.node != nil {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		for n := range a.node.Watch(wctx) {
			a.host.SetInternalIPs(n.InternalIPs)
			a.host.SetCalicoNode(n.Annotations)
			break
		}
		if !a.node.Seen() {
			return check.Report{}, fmt.Errorf("node %q not seen within 30s: not registered, or the API server is unreachable or refuses the agent (see the log)", a.cfg.NodeName)
		}
	}
	if a.calico != nil {
		a.awaitCalico(ctx, 30*time.Second)
	}
	a.host.Connect(ctx)
	a.pass(ctx)
	rep, _ := a.LastReport()
	if a.node != nil && a.published == nil && !a.cfg.DryRun {
		return rep, errors.New("publishing the node status failed; see the log")
	}
	return rep, nil
}

func (a *Agent) pass(ctx context.Context) {
	ctx = check.StartPass(ctx) // the report published after the pass reads what the pass read
	mode := check.Reconcile
	if a.cfg.DryRun {
		mode = check.DryRun
	}
	start := a.now()
	rep := a.host.Pass(ctx, check.Runner{Mode: mode, Disabled: a.cfg.DisableChecks, Log: a.log, Now: a.now})
	finished := a.now()
	a.metrics.Observe(rep, finished.Sub(start), finished)
	a.mu.Lock()
	prev := a.last
	a.last = &rep
	a.mu.Unlock()
	a.log.Debug("pass finished", "ready", rep.Ready, "took", finished.Sub(start))
	if d := rep.RecheckIn(); d > 0 {
		time.AfterFunc(d, a.Poke)
	}
	if prev == nil || prev.Ready != rep.Ready {
		if first, ok := rep.FirstFailure(); ok {
			a.log.Warn("node is not prepared for Calico", "check", first.Name, "reason", first.Reason, "message", first.Message)
		} else {
			a.log.Info("node is prepared for Calico")
		}
	}
	if a.node != nil && !a.cfg.DryRun {
		a.publish(ctx, prev, rep)
	}
}

// publish writes the node status when it changed, with an Event for each transition.
func (a *Agent) publish(ctx context.Context, prev *check.Report, rep check.Report) {
	if !a.node.Seen() {
		return // the watch delivers the Node and pokes
	}
	want := a.status(ctx, rep)
	if ev := transition(a.readiness(), prev, rep); ev != nil {
		a.pendingEvent = ev.after(a.pendingEvent)
	}
	// The watch echoes the write before Publish returns: mark it as ours, not as drift.
	a.mu.Lock()
	a.inflight = &want
	a.mu.Unlock()
	_, err := a.node.Publish(ctx, want)
	a.mu.Lock()
	a.inflight = nil
	if err == nil {
		a.published = &want
	}
	a.mu.Unlock()
	if err != nil {
		a.retryPublish(err)
		return
	}
	if ev := a.pendingEvent; ev != nil {
		if err := a.node.Event(ctx, ev.warning, ev.reason, ev.detail); err != nil {
			a.retryPublish(err)
			return
		}
		a.pendingEvent = nil
	}
	a.publishRetry.Reset()
	a.publishFailed.Store(false)
}

func (a *Agent) retryPublish(err error) {
	a.publishFailed.Store(true)
	d := a.publishRetry.Next()
	a.log.Warn("cannot update the Node; retrying", "err", err, "retry_in", d)
	time.AfterFunc(d, a.Poke)
}

// readiness is what the Node said before this pass: what calico-prep last published, or at
// startup the condition found on the Node; nil when unknown.
func (a *Agent) readiness() *bool {
	if p := a.publishedStatus(); p != nil {
		return &p.Ready
	}
	if n, ok := a.node.Current(); ok && n.Condition != nil {
		ready := n.Condition.Status == "True"
		return &ready
	}
	return nil
}

// status is what the Node should say after rep.
func (a *Agent) status(ctx context.Context, rep check.Report) nodestatus.Status {
	st := nodestatus.Status{Ready: rep.Ready, Reason: "Prepared", Message: "node is prepared for Calico"}
	if f, ok := rep.FirstFailure(); ok {
		st.Reason, st.Message = f.Reason, f.Message
	}
	r := a.host.Report(ctx, rep)
	a.mu.Lock()
	r.Advice = a.advice
	a.mu.Unlock()
	enc, err := r.Encode()
	if err != nil {
		a.log.Error("encode report", "err", err)
	}
	st.Report = enc
	return st
}

// transition returns the Event for a pass, or nil when nothing flipped. Readiness flipping is
// one Event; checks flipping between pass and fail without a readiness change are another.
// At startup the previous readiness comes from the Node's condition (prevReady nil → unknown).
func transition(prevReady *bool, prev *check.Report, rep check.Report) *event {
	if prevReady == nil || *prevReady != rep.Ready {
		if rep.Ready {
			return &event{reason: "CalicoPrepReady", detail: "node is prepared for Calico"}
		}
		f, _ := rep.FirstFailure()
		return &event{warning: true, reason: "CalicoPrepNotReady", detail: fmt.Sprintf("node is not prepared for Calico: %s", f.Message)}
	}
	if prev == nil {
		return nil
	}
	var flips []string
	for _, e := range rep.Entries {
		old, ok := prev.Entry(e.Name)
		if ok && (old.Status == check.Fail) != (e.Status == check.Fail) {
			flips = append(flips, fmt.Sprintf("%s %s", e.Name, map[bool]string{true: "fails", false: "passes"}[e.Status == check.Fail]))
		}
	}
	if len(flips) == 0 {
		return nil
	}
	return &event{warning: !rep.Ready, reason: "CalicoPrepCheckChanged", detail: strings.Join(flips, "; ")}
}

// watchNode follows the Node: its InternalIPs feed kubernetes-internal-ip, and a change to what
// calico-prep published (someone removed the label) asks for a pass. Kubelet's own status
// updates change neither and cost nothing. A Node delivered while a write waits for its retry
// means the API server is back: the pass retries now rather than when the backoff says.
func (a *Agent) watchNode(ctx context.Context) {
	for n := range a.node.Watch(ctx) {
		changed := a.host.SetInternalIPs(n.InternalIPs)
		changed = a.host.SetCalicoNode(n.Annotations) || changed
		if changed || a.drifted(n) || a.publishFailed.Load() {
			a.Poke()
		}
	}
}

// drifted reports whether the Node says something calico-prep neither published nor is
// writing. The label and annotation, and the condition, are judged apart: the two writes of one
// publish land one after the other, and the Node in between is not drift.
func (a *Agent) drifted(n nodestatus.Node) bool {
	a.mu.Lock()
	published, inflight := a.published, a.inflight
	a.mu.Unlock()
	meta := func(p *nodestatus.Status) bool {
		return p != nil && n.Labels[nodestatus.LabelReady] == fmt.Sprint(p.Ready) && n.Annotations[nodestatus.AnnotationReport] == p.Report
	}
	cond := func(p *nodestatus.Status) bool {
		return p != nil && n.Condition != nil &&
			string(n.Condition.Status) == map[bool]string{true: "True", false: "False"}[p.Ready] &&
			n.Condition.Reason == p.Reason && n.Condition.Message == p.Message
	}
	return !meta(published) && !meta(inflight) || !cond(published) && !cond(inflight)
}

func (a *Agent) publishedStatus() *nodestatus.Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.published
}

// resync wakes the loop on a slow timer, and counts nodes for the Typha advice at the first
// resync and then every countInterval (not at startup: that would be one more request from
// every node at every rollout).
func (a *Agent) resync(ctx context.Context) {
	t := time.NewTicker(a.cfg.ResyncInterval)
	defer t.Stop()
	var counted time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if a.node != nil && (counted.IsZero() || time.Since(counted) >= countInterval) {
			a.countNodes(ctx)
			counted = time.Now()
		}
		a.Poke()
	}
}

func (a *Agent) countNodes(ctx context.Context) {
	n, err := a.node.CountNodes(ctx)
	if err != nil {
		a.log.Warn("cannot count nodes for Typha advice", "err", err)
		return
	}
	a.metrics.SetClusterNodes(n)
	var advice []string
	if n > calico.TyphaThreshold && !a.cfg.Typha {
		advice = append(advice, fmt.Sprintf("the cluster has more than %d nodes: Calico recommends Typha with %d replicas (and --typha here so %d/tcp is opened)", calico.TyphaThreshold, calico.TyphaReplicas(n), calico.TyphaPort))
	}
	a.mu.Lock()
	a.advice = advice
	a.mu.Unlock()
}

// watchLinks turns netlink events into passes, resubscribing with backoff when the
// subscription fails (e.g. the socket's buffer overflowed under a burst).
func (a *Agent) watchLinks(ctx context.Context) {
	b := backoff.Backoff{Min: 100 * time.Millisecond, Max: 30 * time.Second}
	for ctx.Err() == nil {
		ch, err := a.host.links.Subscribe(ctx)
		if err == nil {
			for ev := range ch {
				if ev.Err != nil {
					err = ev.Err
					break
				}
				b.Reset()
				a.Poke()
			}
		}
		if ctx.Err() != nil {
			return
		}
		d := b.Next()
		a.log.Warn("netlink subscription ended; subscribing again", "err", err, "retry_in", d)
		a.Poke() // events may have been lost
		sleep(ctx, d)
	}
}

// watchClients starts a watch for each newly connected D-Bus client. A reload, restart or new
// device pokes the loop; a closed watch means the connection is gone: the client is dropped
// and the next pass dials again.
func (a *Agent) watchClients(spawn func(func(context.Context)), fw *firewalld.Client, nm *networkmanager.Client) {
	if fw != nil {
		spawn(func(ctx context.Context) {
			ch, err := fw.Watch(ctx)
			if err == nil {
				for range ch {
					a.Poke()
				}
			}
			if ctx.Err() == nil {
				a.log.Warn("firewalld watch ended; reconnecting", "err", err)
				a.host.Disconnect(fw)
				a.Poke()
			}
		})
	}
	if nm != nil {
		spawn(func(ctx context.Context) {
			ch, err := nm.Watch(ctx)
			if err == nil {
				for range ch {
					a.Poke()
				}
			}
			if ctx.Err() == nil {
				a.log.Warn("NetworkManager watch ended; reconnecting", "err", err)
				a.host.Disconnect(nm)
				a.Poke()
			}
		})
	}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
