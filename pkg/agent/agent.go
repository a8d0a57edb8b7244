package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"

	"github.com/calico-prep/calico-prep/pkg/calico"
	"github.com/calico-prep/calico-prep/pkg/calicoconfig"
	"github.com/calico-prep/calico-prep/pkg/check"
	"github.com/calico-prep/calico-prep/pkg/config"
	"github.com/calico-prep/calico-prep/pkg/nodestatus"
	"github.com/calico-prep/calico-prep/pkg/report"
)

// ShutdownGrace is how long the work in progress (a pass, a write to the Node) may go on after
// SIGTERM before it is abandoned.
const ShutdownGrace = 5 * time.Second

// PassTimeout bounds one pass: a hung firewalld (one Python thread) or system bus must degrade
// its checks, not freeze the loop, the Node status and /readyz.
const PassTimeout = 2 * time.Minute

// requestTimeout bounds one exchange with the API server (a write, an Event, the node count):
// an API server that hangs must not hold a write forever; the retry sends the newest state.
const requestTimeout = 30 * time.Second

// settleFor bounds how long a check whose component is starting or reconnecting keeps its
// last judgement: NetworkManager says it is starting until it has tried to activate every
// connection (DHCP included), firewalld loads its configuration for seconds on a small
// machine. After that the check is judged as it is.
const settleFor = time.Minute

// The node count behind the Typha advice is asked for rarely, and less often the larger the
// cluster, so that the cluster as a whole asks about once per countSpacing whatever its size:
// each agent counts at a random time within its first countInterval, then every
// max(countInterval, nodes × countSpacing), spread at random.
const (
	countInterval = 6 * time.Hour
	countSpacing  = time.Minute
)

// PassRunner runs reconcile passes over the node; *Host is the real one.
type PassRunner interface {
	// Pass runs every check once and describes the node as the pass saw it (report.Node's
	// host part; the loop adds what the entries say).
	Pass(ctx context.Context, runner check.Runner) (check.Report, report.Node)
	// SetInternalIPs records the Node's InternalIPs (kubernetes-internal-ip autodetection)
	// and reports whether they changed.
	SetInternalIPs(ips []netip.Addr) bool
	// SetCalicoNode records the Node's annotations that calico-node wrote (the addresses it
	// chose) and reports whether they changed.
	SetCalicoNode(annotations map[string]string) bool
	// SetEffective makes eff the configuration of the passes that follow and reports whether
	// anything changed.
	SetEffective(eff calicoconfig.Effective) bool
}

// CalicoSource delivers the state of Calico's resources, first as read, then at every change,
// until ctx ends; *calicoconfig.Client is the real one.
type CalicoSource interface {
	Watch(ctx context.Context) <-chan calicoconfig.State
}

// Publisher is the Node the loop reports to; *nodestatus.Client is the real one.
type Publisher interface {
	// Watch delivers the Node, first as it is, then at every change, until ctx ends.
	Watch(ctx context.Context) <-chan nodestatus.Node
	// Current is the Node as last seen; false while it has not been seen.
	Current() (nodestatus.Node, bool)
	// Refresh reads the Node as it is now: the watch's first state may be a cache's, a little
	// behind.
	Refresh(ctx context.Context) error
	Publish(ctx context.Context, want nodestatus.Status) (writes int, err error)
	Event(ctx context.Context, warning bool, reason, message string) error
	CountNodes(ctx context.Context) (int64, error)
}

// Observer receives every judged pass; *metrics.Metrics is the real one.
type Observer interface {
	Observe(rep check.Report, took time.Duration, finished time.Time)
	SetClusterNodes(n int64)
}

// Source is a source of events: it calls poke whenever something happened that may change a
// check's outcome, until ctx ends. (*Host).Watch is one; adding another to Deps.Sources is all
// it takes to wake the loop on it.
type Source func(ctx context.Context, poke func())

// Deps are the loop's collaborators.
type Deps struct {
	Passes  PassRunner
	Node    Publisher    // nil: standalone, nothing is reported to a cluster
	Calico  CalicoSource // nil: the flags alone (the command then calls SetEffective itself)
	Metrics Observer     // nil: none
	Sources []Source
	Clock   clock.WithTicker // nil: the real clock
	Log     *slog.Logger
}

// job is what the loop does. Each is one item of the queue: adding a job that is queued
// already changes nothing, adding one that is running makes it run once more afterwards, and
// no job ever runs twice at once.
type job int

const (
	passJob       job = iota // run a reconcile pass and judge it
	publishJob               // make the Node say what the last judged pass says
	countJob                 // count the cluster's nodes for the Typha advice
	calicoWaitJob            // stop waiting for Calico's resources before the first pass
	jobKinds
)

// Agent is the daemon loop: events ask for a pass, a pass judges the node, the judgement goes
// to the Node and to metrics. One queue decides what runs when: coalescing, rechecks, retries
// and the resync are items added now or later. A worker per kind of job runs them, so that a
// write to a hung API server never holds up the passes that keep the host prepared.
type Agent struct {
	cfg     config.Config
	log     *slog.Logger
	host    PassRunner
	node    Publisher
	calico  CalicoSource
	metrics Observer
	sources []Source
	clock   clock.WithTicker
	queue   workqueue.TypedDelayingInterface[job]
	retry   workqueue.TypedRateLimiter[job] // spaces the retries of failed API requests
	reapply workqueue.TypedRateLimiter[job] // spaces the passes after a failed apply

	mu sync.Mutex
	st state
}

// state is everything the jobs share; only under Agent.mu.
type state struct {
	judged   *check.Report       // the last judged pass
	settling map[string]settling // checks whose component is settling: since when, and why
	advice   []string            // from the last node count
	// want is what the Node should say after the last judged pass; nil until a pass was
	// judged with the Node seen.
	want   *nodestatus.Status
	events []event // transitions not yet sent, oldest first
	// published is what the Node says since calico-prep's last write; inflight what a write
	// in progress makes it say (the watch echoes it before the write returns).
	published, inflight *nodestatus.Status
	// retrying is set while a failed write waits for its retry.
	retrying bool
	// calicoUnread is set until Calico's resources are first read completely, or calicoSyncWait
	// has passed: no pass runs before (see watchCalico).
	calicoUnread bool
}

// New returns the loop over its collaborators. It starts the queue's timer; Run or Once stop it.
func New(cfg config.Config, d Deps) *Agent {
	a := &Agent{cfg: cfg, log: d.Log, host: d.Passes, node: d.Node, calico: d.Calico, metrics: d.Metrics, sources: d.Sources, clock: d.Clock}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if a.metrics == nil {
		a.metrics = noMetrics{}
	}
	if a.clock == nil {
		a.clock = clock.RealClock{}
	}
	a.queue = workqueue.NewTypedDelayingQueueWithConfig(workqueue.TypedDelayingQueueConfig[job]{Clock: a.clock})
	a.retry = jittered{workqueue.NewTypedItemExponentialFailureRateLimiter[job](time.Second, 10*time.Second)}
	// An apply fails for a moment (firewalld busy, the state directory full) or for as long
	// as someone leaves it so: soon at first, then every few minutes, never only at the resync.
	a.reapply = jittered{workqueue.NewTypedItemExponentialFailureRateLimiter[job](time.Second, 5*time.Minute)}
	a.st.settling = map[string]settling{}
	a.st.calicoUnread = d.Calico != nil
	return a
}

// Poke asks for a pass; pokes during a pass coalesce into one more pass.
func (a *Agent) Poke() { a.queue.Add(passJob) }

// Ready reports whether the last judged pass found the node ready (for /readyz).
func (a *Agent) Ready() bool {
	rep, ok := a.LastReport()
	return ok && rep.Ready
}

// LastReport returns the last judged pass, if any.
func (a *Agent) LastReport() (check.Report, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.st.judged == nil {
		return check.Report{}, false
	}
	return *a.st.judged, true
}

// Run runs the loop until ctx ends: the event sources and the Node's watch wake it, a slow
// resync besides; there is no polling. When ctx ends it starts nothing new and lets the work
// in progress finish within ShutdownGrace; it never undoes preparation. It returns nil.
func (a *Agent) Run(ctx context.Context) error {
	jobs, cancelJobs := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelJobs()
	var sources, workers sync.WaitGroup
	defer sources.Wait()
	for _, s := range a.sources {
		sources.Go(func() { s(ctx, a.Poke) })
	}
	if a.node != nil {
		sources.Go(func() { a.watchNode(ctx) })
		// Not at start: that would be a request from every node at every rollout.
		a.queue.AddAfter(countJob, a.cfg.ResyncInterval+rand.N(countInterval))
	}
	if a.calico != nil {
		sources.Go(func() { a.watchCalico(ctx) })
		a.queue.AddAfter(calicoWaitJob, calicoSyncWait)
	}
	a.Poke()
	for range jobKinds {
		workers.Go(func() { a.work(ctx, jobs) })
	}

	<-ctx.Done()
	a.queue.ShutDown()
	done := make(chan struct{})
	go func() {
		workers.Wait()
		close(done)
	}()
	grace := a.clock.NewTimer(ShutdownGrace)
	defer grace.Stop()
	select {
	case <-done:
	case <-grace.C():
		cancelJobs()
		<-done
	}
	return nil
}

// work runs jobs until the queue shuts down; after ctx ends it starts none.
func (a *Agent) work(ctx, jobs context.Context) {
	for {
		j, shutdown := a.queue.Get()
		if shutdown {
			return
		}
		if ctx.Err() == nil {
			a.do(jobs, j)
		}
		a.queue.Done(j)
	}
}

func (a *Agent) do(ctx context.Context, j job) {
	switch j {
	case passJob:
		if a.awaitingCalico() {
			return // reading Calico's resources ends the wait and asks for the pass
		}
		pctx, cancel := context.WithTimeout(ctx, PassTimeout)
		next, _ := a.pass(pctx)
		cancel()
		if next > 0 {
			a.queue.AddAfter(passJob, next)
		}
		if a.cfg.ResyncInterval > 0 {
			a.queue.AddAfter(passJob, a.cfg.ResyncInterval) // the queue keeps the earliest
		}
	case publishJob:
		if err := a.publish(ctx); err != nil {
			d := a.retry.When(publishJob)
			a.log.Warn("cannot update the Node; retrying", "err", err, "retry_in", d)
			a.queue.AddAfter(publishJob, d)
			return
		}
		a.retry.Forget(publishJob)
	case countJob:
		n, err := a.countNodes(ctx)
		if err != nil {
			d := a.retry.When(countJob)
			a.log.Warn("cannot count nodes for Typha advice", "err", err, "retry_in", d)
			a.queue.AddAfter(countJob, d)
			return
		}
		a.retry.Forget(countJob)
		every := max(countInterval, time.Duration(n)*countSpacing)
		a.queue.AddAfter(countJob, every/2+rand.N(every))
	case calicoWaitJob:
		if a.calicoRead() {
			a.log.Warn("Calico's resources not read in time; passes use what is known, and close nothing", "waited", calicoSyncWait)
			a.Poke()
		}
	}
}

// Once runs passes until one can be judged (a component that is starting gets up to settleFor),
// publishes it when reporting to a cluster (waiting for the Node first) and returns its report.
func (a *Agent) Once(ctx context.Context) (check.Report, error) {
	defer a.queue.ShutDown()
	if a.node != nil {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		for n := range a.node.Watch(wctx) {
			a.host.SetInternalIPs(n.InternalIPs)
			a.host.SetCalicoNode(n.Annotations)
			break
		}
		if _, ok := a.node.Current(); !ok {
			return check.Report{}, fmt.Errorf("node %q not seen within 30s: not registered, or the API server is unreachable or refuses the agent (see the log)", a.cfg.NodeName)
		}
	}
	if a.calico != nil {
		a.awaitCalico(ctx, 30*time.Second)
	}
	for {
		next, judged := a.pass(ctx)
		if judged {
			break
		}
		select {
		case <-ctx.Done():
			return check.Report{}, ctx.Err()
		case <-a.clock.After(next):
		}
	}
	rep, _ := a.LastReport()
	if a.reporting() {
		// No later watch event will correct a write left out against a stale first state.
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := a.node.Refresh(rctx)
		cancel()
		if err != nil {
			a.log.Warn("cannot read the Node", "err", err)
			return rep, errors.New("reading the Node failed; see the log")
		}
		if err := a.publish(ctx); err != nil {
			a.log.Warn("cannot update the Node", "err", err)
			return rep, errors.New("publishing the node status failed; see the log")
		}
	}
	return rep, nil
}

// reporting says whether judged passes go to the Node.
func (a *Agent) reporting() bool { return a.node != nil && !a.cfg.DryRun }

// pass runs one reconcile pass and judges it. It returns when the next pass is due without an
// event (0: no sooner than the resync), and whether this one was judged; one whose settling
// components have no earlier judgement to keep is held back.
func (a *Agent) pass(ctx context.Context) (next time.Duration, judged bool) {
	mode := check.Reconcile
	if a.cfg.DryRun {
		mode = check.DryRun
	}
	start := a.clock.Now()
	rep, desc := a.host.Pass(ctx, check.Runner{Mode: mode, Disabled: a.cfg.DisableChecks, Log: a.log, Now: a.clock.Now})
	finished := a.clock.Now()

	a.mu.Lock()
	prev := a.st.judged
	newly := settlingSince(rep, a.st.settling, finished)
	rep, judged, until := settle(rep, prev, a.st.settling, finished)
	advice := a.st.advice
	a.mu.Unlock()
	if len(newly) > 0 {
		names := make([]string, len(newly))
		for i, e := range newly {
			names[i] = e.Name
		}
		a.log.Info("waiting for a component to settle before judging", "checks", names,
			"reason", newly[0].Reason, "message", newly[0].Message, "for_at_most", settleFor)
	}
	next = minPositive(rep.RecheckIn(), until)
	if !judged {
		a.log.Debug("pass held back: a component is settling", "recheck_in", next)
		return next, false
	}

	var want *nodestatus.Status
	if a.reporting() {
		if _, seen := a.node.Current(); seen { // until then the watch asks for a pass when it is
			want = status(rep, desc, advice, a.log)
		}
	}
	a.mu.Lock()
	a.st.judged = &rep
	if want != nil {
		if ev := transition(a.readiness(), prev, rep); ev != nil {
			a.st.events = append(a.st.events, *ev)
		}
		a.st.want = want
	}
	a.mu.Unlock()

	a.metrics.Observe(rep, finished.Sub(start), finished)
	a.log.Debug("pass finished", "ready", rep.Ready, "took", finished.Sub(start))
	if slices.ContainsFunc(rep.Entries, func(e check.Entry) bool { return e.ApplyError != "" }) {
		next = minPositive(next, a.reapply.When(passJob))
	} else {
		a.reapply.Forget(passJob)
	}
	if prev == nil || prev.Ready != rep.Ready {
		if first, ok := rep.FirstFailure(); ok {
			a.log.Warn("node is not prepared for Calico", "check", first.Name, "reason", first.Reason, "message", first.Message)
		} else {
			a.log.Info("node is prepared for Calico")
		}
	}
	if want != nil {
		a.queue.Add(publishJob)
	}
	return next, true
}

// status is what the Node should say after rep; desc is the node's part of the report.
func status(rep check.Report, desc report.Node, advice []string, log *slog.Logger) *nodestatus.Status {
	st := nodestatus.Status{Ready: rep.Ready, Reason: "Prepared", Message: "node is prepared for Calico"}
	if f, ok := rep.FirstFailure(); ok {
		st.Reason, st.Message = f.Reason, f.Message
	}
	desc.FromChecks(rep)
	desc.Advice = advice
	enc, err := desc.Encode()
	if err != nil {
		log.Error("encode report", "err", err)
	}
	st.Report = enc
	return &st
}

// settling is when a check began to settle and for which reason. A new reason is a new
// settling: a check that settles for long as "not running" (networkd absent in auto mode) and
// then meets a bus restart gets the whole settleFor for that.
type settling struct {
	since  time.Time
	reason string
}

// settlingSince records when each settling entry of rep began to settle (for its reason) and
// forgets the checks that no longer do. It returns the entries that began now.
func settlingSince(rep check.Report, since map[string]settling, now time.Time) []check.Entry {
	for name := range since {
		if e, ok := rep.Entry(name); !ok || !e.Settling {
			delete(since, name)
		}
	}
	var newly []check.Entry
	for _, e := range rep.Entries {
		if s, ok := since[e.Name]; e.Settling && (!ok || s.reason != e.Reason) {
			since[e.Name] = settling{since: now, reason: e.Reason}
			newly = append(newly, e)
		}
	}
	return newly
}

// settle judges a pass. A settling entry (its component is starting or reconnecting) keeps the
// entry of the last judged pass until it has settled for settleFor; a settling failure with no
// earlier entry to keep holds the whole pass back (judged false) as long. A component that
// restarts and comes back as it was thus changes nothing: no write, no Event, no metric. It
// returns when the first settling entry's time is up, 0 when none settles.
func settle(rep check.Report, last *check.Report, since map[string]settling, now time.Time) (out check.Report, judged bool, until time.Duration) {
	out, judged = rep, true
	out.Entries = slices.Clone(rep.Entries)
	for i, e := range out.Entries {
		if !e.Settling {
			continue
		}
		left := settleFor - now.Sub(since[e.Name].since)
		if left <= 0 {
			continue // settling for too long: judged as it is
		}
		until = minPositive(until, left)
		if last != nil {
			if kept, ok := last.Entry(e.Name); ok {
				kept.Applied, kept.ApplyError = false, "" // counted when it happened
				out.Entries[i] = kept
				continue
			}
		}
		if e.Status == check.Fail {
			judged = false
		}
	}
	out.Ready = !slices.ContainsFunc(out.Entries, func(e check.Entry) bool { return e.Status == check.Fail })
	return out, judged, until
}

// publish makes the Node say what the last judged pass says, then sends the Events of the
// transitions since the last one sent (as one, when the API server was away for several).
func (a *Agent) publish(ctx context.Context) error {
	if _, seen := a.node.Current(); !seen {
		return nil // the watch asks again when it sees the Node
	}
	a.mu.Lock()
	want, events := a.st.want, slices.Clone(a.st.events)
	a.st.inflight = want
	a.mu.Unlock()
	if want == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	_, err := a.node.Publish(ctx, *want)
	a.mu.Lock()
	a.st.inflight = nil
	if err == nil {
		a.st.published = want
	}
	a.mu.Unlock()
	if err == nil && len(events) > 0 {
		ev := merge(events)
		if err = a.node.Event(ctx, ev.warning, ev.reason, ev.detail); err == nil {
			a.mu.Lock()
			a.st.events = a.st.events[len(events):]
			a.mu.Unlock()
		}
	}
	a.mu.Lock()
	a.st.retrying = err != nil
	a.mu.Unlock()
	return err
}

// readiness is what the Node says before this pass, or will once the write in progress lands:
// the status last wanted, or at startup the condition found on the Node; nil when unknown.
// Under a.mu.
func (a *Agent) readiness() *bool {
	if w := a.st.want; w != nil {
		return &w.Ready
	}
	if n, ok := a.node.Current(); ok && n.Condition != nil {
		ready := n.Condition.Status == "True"
		return &ready
	}
	return nil
}

// watchNode follows the Node. Its InternalIPs feed kubernetes-internal-ip and calico-node's
// annotations autodetect/calico-agrees: a change asks for a pass, as does the first sight of
// the Node. A change to what calico-prep published (someone removed the label) asks for a
// write, and so does any news while a failed write waits for its retry: the API server is
// back. Kubelet's own status updates cost nothing.
func (a *Agent) watchNode(ctx context.Context) {
	for n := range a.node.Watch(ctx) {
		changed := a.host.SetInternalIPs(n.InternalIPs)
		changed = a.host.SetCalicoNode(n.Annotations) || changed
		a.mu.Lock()
		haveWant, retrying := a.st.want != nil, a.st.retrying
		a.mu.Unlock()
		switch {
		case changed || a.reporting() && !haveWant:
			a.Poke()
		case retrying || a.drifted(n):
			a.queue.Add(publishJob)
		}
	}
}

// drifted reports whether the Node says something calico-prep neither published nor is
// writing. The label and annotation, and the condition, are judged apart: the two writes of one
// publish land one after the other, and the Node in between is not drift.
func (a *Agent) drifted(n nodestatus.Node) bool {
	a.mu.Lock()
	published, inflight := a.st.published, a.st.inflight
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

// countNodes counts the cluster's nodes for the metric and the Typha advice; a change of
// advice asks for a pass, whose report carries it.
func (a *Agent) countNodes(ctx context.Context) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	n, err := a.node.CountNodes(ctx)
	if err != nil {
		return 0, err
	}
	a.metrics.SetClusterNodes(n)
	var advice []string
	if n > calico.TyphaThreshold && !a.cfg.Typha {
		advice = append(advice, fmt.Sprintf("the cluster has more than %d nodes: Calico recommends Typha with %d replicas (and --typha here so %d/tcp is opened)", calico.TyphaThreshold, calico.TyphaReplicas(n), calico.TyphaPort))
	}
	a.mu.Lock()
	changed := !slices.Equal(a.st.advice, advice)
	a.st.advice = advice
	a.mu.Unlock()
	if changed {
		a.Poke()
	}
	return n, nil
}

type event struct {
	warning        bool
	reason, detail string
}

// maxMerged bounds the transitions one Event tells of after the API server was away.
const maxMerged = 5

// merge turns the transitions not yet sent into one Event: the last one's, telling what came
// before it, so that a transition is not lost while the API server is away.
func merge(evs []event) event {
	last := evs[len(evs)-1]
	var details []string
	if len(evs) > maxMerged {
		details = append(details, fmt.Sprintf("%d earlier changes", len(evs)-maxMerged))
		evs = evs[len(evs)-maxMerged:]
	}
	for _, e := range evs {
		details = append(details, e.detail)
	}
	last.detail = strings.Join(details, "; then ")
	return last
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

// jittered cuts each delay of a rate limiter by up to a quarter at random, so that the agents
// of a whole cluster do not retry in step after an outage.
type jittered struct {
	workqueue.TypedRateLimiter[job]
}

func (j jittered) When(item job) time.Duration {
	d := j.TypedRateLimiter.When(item)
	return d - rand.N(d/4+1)
}

type noMetrics struct{}

func (noMetrics) Observe(check.Report, time.Duration, time.Time) {}
func (noMetrics) SetClusterNodes(int64)                          {}

// minPositive is the smaller of two durations, ignoring those that are not positive.
func minPositive(a, b time.Duration) time.Duration {
	switch {
	case a <= 0:
		return b
	case b <= 0:
		return a
	}
	return min(a, b)
}
