package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/util/workqueue"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/calico-prep/calico-prep/pkg/calico"
	"github.com/calico-prep/calico-prep/pkg/calicoconfig"
	"github.com/calico-prep/calico-prep/pkg/check"
	"github.com/calico-prep/calico-prep/pkg/config"
	"github.com/calico-prep/calico-prep/pkg/nodestatus"
	"github.com/calico-prep/calico-prep/pkg/report"
)

// The loop's unit tests: fake collaborators and a fake clock, no root, netlink or D-Bus. Time
// moves only when a test steps the clock; the tests wait for what must happen (a pass, a write)
// and, before asserting that nothing more happens, for the queue to be idle.
//
// The queue is workqueue's own (adding, coalescing, handing out, marking done); only its
// delayed adds are the test's: workqueue's delaying goroutine computes its timers from a clock
// reading that a test stepping the clock meanwhile makes stale, so here a step moves what has
// come due into the queue before it returns.

// waitFor bounds how long a test waits for the loop to react; it reacts in microseconds.
const waitFor = 10 * time.Second

var t0 = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)

// fakeHost runs scripted passes.
type fakeHost struct {
	mu      sync.Mutex
	entered int                      // passes begun
	passes  int                      // passes ended
	script  func(n int) check.Report // the report of the n-th pass, from 1
	gate    chan struct{}            // when set, each pass waits for a value from it
	ips     []netip.Addr
	annot   map[string]string        // calico-node's annotations, as last set
	eff     []calicoconfig.Effective // the configurations set, in order
	ctxErr  error                    // the context's error when the last pass ended
	now     func() time.Time
	at      []time.Time // when each pass ended, by now
}

func (h *fakeHost) Pass(ctx context.Context, _ check.Runner) (check.Report, report.Node) {
	h.mu.Lock()
	gate := h.gate
	h.entered++
	h.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.passes++
	h.ctxErr = ctx.Err()
	if h.now != nil {
		h.at = append(h.at, h.now())
	}
	rep := ready()
	if h.script != nil {
		rep = h.script(h.passes)
	}
	return rep, report.Node{}
}

func (h *fakeHost) SetInternalIPs(ips []netip.Addr) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	changed := fmt.Sprint(ips) != fmt.Sprint(h.ips)
	h.ips = ips
	return changed
}

// SetCalicoNode, like Host's, counts only calico-node's annotations.
func (h *fakeHost) SetCalicoNode(annotations map[string]string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	calicos := maps.Clone(annotations)
	maps.DeleteFunc(calicos, func(k, _ string) bool { return !strings.HasPrefix(k, "projectcalico.org/") })
	changed := !maps.Equal(calicos, h.annot)
	h.annot = calicos
	return changed
}

func (h *fakeHost) SetEffective(eff calicoconfig.Effective) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	changed := len(h.eff) == 0 || !reflect.DeepEqual(h.eff[len(h.eff)-1], eff)
	h.eff = append(h.eff, eff)
	return changed
}

func (h *fakeHost) effective() []calicoconfig.Effective {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.eff)
}

func (h *fakeHost) begun() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.entered
}

func (h *fakeHost) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.passes
}

// fakeNode is a Node that records what is published to it. Like the real client it writes
// only what differs from what it wrote last.
type fakeNode struct {
	mu     sync.Mutex
	node   *nodestatus.Node
	watch  chan nodestatus.Node
	fail   int           // so many more Publish calls fail
	block  chan struct{} // when set, Publish waits for it to close (a hung API server)
	calls  int
	writes []nodestatus.Status
	events []event
	counts int
	// refreshed counts Refresh calls; publishedAt, the count when each Publish began.
	refreshed   int
	publishedAt []int
}

// newFakeNode returns a Node that is seen already when n is not nil.
func newFakeNode(n *nodestatus.Node) *fakeNode {
	return &fakeNode{node: n, watch: make(chan nodestatus.Node, 8)}
}

func (n *fakeNode) Watch(ctx context.Context) <-chan nodestatus.Node {
	out := make(chan nodestatus.Node)
	go func() {
		defer close(out)
		for {
			select {
			case <-ctx.Done():
				return
			case v := <-n.watch:
				n.mu.Lock()
				n.node = &v
				n.mu.Unlock()
				select {
				case out <- v:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out
}

func (n *fakeNode) Current() (nodestatus.Node, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.node == nil {
		return nodestatus.Node{}, false
	}
	return *n.node, true
}

func (n *fakeNode) Refresh(context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.refreshed++
	return nil
}

func (n *fakeNode) Publish(ctx context.Context, want nodestatus.Status) (int, error) {
	n.mu.Lock()
	block := n.block
	n.calls++
	n.publishedAt = append(n.publishedAt, n.refreshed)
	n.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.fail > 0 {
		n.fail--
		return 0, errors.New("the API server is away")
	}
	if len(n.writes) > 0 && n.writes[len(n.writes)-1] == want {
		return 0, nil
	}
	n.writes = append(n.writes, want)
	return 1, nil
}

func (n *fakeNode) Event(_ context.Context, warning bool, reason, message string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.events = append(n.events, event{warning: warning, reason: reason, detail: message})
	return nil
}

func (n *fakeNode) CountNodes(context.Context) (int64, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.counts++
	return 80, nil
}

func (n *fakeNode) snapshot() ([]nodestatus.Status, []event) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]nodestatus.Status(nil), n.writes...), append([]event(nil), n.events...)
}

// failing is how many more writes will fail.
func (n *fakeNode) failing() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.fail
}

func (n *fakeNode) publishCalls() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.calls
}

func (n *fakeNode) countCalls() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.counts
}

// fakeMetrics records the judged passes.
type fakeMetrics struct {
	mu       sync.Mutex
	observed []check.Report
	nodes    int64
}

func (m *fakeMetrics) Observe(rep check.Report, _ time.Duration, _ time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.observed = append(m.observed, rep)
}

func (m *fakeMetrics) SetClusterNodes(n int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.nodes = n
}

func (m *fakeMetrics) reports() []check.Report {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]check.Report(nil), m.observed...)
}

// queueTracker follows the queue through workqueue's metrics hooks, which the queue calls under
// its own lock: depth is the items waiting, gets−dones the jobs running.
type queueTracker struct {
	mu                 sync.Mutex
	depth, gets, dones int
}

type trackerGauge struct{ t *queueTracker }

func (g trackerGauge) Inc() { g.t.mu.Lock(); g.t.depth++; g.t.mu.Unlock() }
func (g trackerGauge) Dec() { g.t.mu.Lock(); g.t.depth--; g.t.gets++; g.t.mu.Unlock() }

type trackerDone struct{ t *queueTracker }

func (d trackerDone) Observe(float64) { d.t.mu.Lock(); d.t.dones++; d.t.mu.Unlock() }

type discard struct{}

func (discard) Inc()            {}
func (discard) Observe(float64) {}
func (discard) Set(float64)     {}

func (t *queueTracker) NewDepthMetric(string) workqueue.GaugeMetric     { return trackerGauge{t} }
func (t *queueTracker) NewAddsMetric(string) workqueue.CounterMetric    { return discard{} }
func (t *queueTracker) NewRetriesMetric(string) workqueue.CounterMetric { return discard{} }
func (t *queueTracker) NewLatencyMetric(string) workqueue.HistogramMetric {
	return discard{}
}
func (t *queueTracker) NewWorkDurationMetric(string) workqueue.HistogramMetric {
	return trackerDone{t}
}
func (t *queueTracker) NewUnfinishedWorkSecondsMetric(string) workqueue.SettableGaugeMetric {
	return discard{}
}
func (t *queueTracker) NewLongestRunningProcessorSecondsMetric(string) workqueue.SettableGaugeMetric {
	return discard{}
}

func (t *queueTracker) idle() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.depth == 0 && t.gets == t.dones
}

// fakeCalico delivers the states a test sends as the state of Calico's resources.
type fakeCalico chan calicoconfig.State

func (c fakeCalico) Watch(ctx context.Context) <-chan calicoconfig.State {
	out := make(chan calicoconfig.State)
	go func() {
		defer close(out)
		for {
			select {
			case <-ctx.Done():
				return
			case st := <-c:
				select {
				case out <- st:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out
}

// stepQueue is workqueue.Typed with AddAfter driven by loop.step. Like workqueue's delaying
// queue it keeps one wait per item, the earliest.
type stepQueue struct {
	*workqueue.Typed[job]
	clk     *testingclock.FakeClock
	mu      sync.Mutex
	waiting map[job]time.Time
}

func (q *stepQueue) AddAfter(j job, d time.Duration) {
	if q.ShuttingDown() {
		return
	}
	if d <= 0 {
		q.Add(j)
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	at := q.clk.Now().Add(d)
	if w, ok := q.waiting[j]; !ok || at.Before(w) {
		q.waiting[j] = at
	}
}

// delayed reports whether j waits to be added.
func (q *stepQueue) delayed(j job) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	_, ok := q.waiting[j]
	return ok
}

// due moves what has come due into the queue.
func (q *stepQueue) due() {
	q.mu.Lock()
	defer q.mu.Unlock()
	now := q.clk.Now()
	for j, at := range q.waiting {
		if !at.After(now) {
			delete(q.waiting, j)
			q.Add(j)
		}
	}
}

// loop is one agent under test.
type loop struct {
	t     *testing.T
	a     *Agent
	clk   *testingclock.FakeClock
	host  *fakeHost
	node  *fakeNode // nil: standalone
	obs   *fakeMetrics
	track *queueTracker
	queue *stepQueue
	stop  context.CancelFunc
	done  chan error
}

func newLoop(t *testing.T, host *fakeHost, node *fakeNode, cfg config.Config) *loop {
	t.Helper()
	return newLoopWith(t, host, node, nil, cfg)
}

// newLoopWith is newLoop following Calico's resources through calico.
func newLoopWith(t *testing.T, host *fakeHost, node *fakeNode, calico fakeCalico, cfg config.Config) *loop {
	t.Helper()
	if cfg.ResyncInterval == 0 {
		cfg.ResyncInterval = time.Hour
	}
	l := &loop{t: t, clk: testingclock.NewFakeClock(t0), host: host, node: node, obs: &fakeMetrics{}, track: &queueTracker{}}
	d := Deps{Passes: host, Metrics: l.obs, Clock: l.clk}
	if node != nil {
		d.Node = node
	}
	if calico != nil {
		d.Calico = calico
	}
	l.a = New(cfg, d)
	l.a.queue.ShutDown()
	l.queue = &stepQueue{
		Typed:   workqueue.NewTypedWithConfig(workqueue.TypedQueueConfig[job]{Name: "test", MetricsProvider: l.track, Clock: l.clk}),
		clk:     l.clk,
		waiting: map[job]time.Time{},
	}
	l.a.queue = l.queue
	return l
}

func (l *loop) run() {
	ctx, cancel := context.WithCancel(context.Background())
	l.stop, l.done = cancel, make(chan error, 1)
	go func() { l.done <- l.a.Run(ctx) }()
	l.t.Cleanup(func() {
		if err := l.shutdown(); err != nil {
			l.t.Error(err)
		}
	})
}

// shutdown ends Run's context and steps the clock past ShutdownGrace until Run returns.
func (l *loop) shutdown() error {
	l.stop()
	deadline := time.Now().Add(waitFor)
	for time.Now().Before(deadline) {
		select {
		case err := <-l.done:
			l.done <- err
			return err
		default:
		}
		l.clk.Step(ShutdownGrace)
		time.Sleep(100 * time.Microsecond)
	}
	return fmt.Errorf("run did not return within %s after its context ended", waitFor)
}

// step moves the clock on and what has come due into the queue.
func (l *loop) step(d time.Duration) {
	l.clk.Step(d)
	l.queue.due()
}

// wait waits for cond.
func (l *loop) wait(what string, cond func() bool) {
	l.t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			l.t.Fatalf("waited %s for %s", waitFor, what)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// until waits for cond, then for the queue to be idle.
func (l *loop) until(what string, cond func() bool) {
	l.t.Helper()
	l.wait(what, cond)
	l.idle()
}

// idle waits until no job is queued or running.
func (l *loop) idle() {
	l.t.Helper()
	deadline := time.Now().Add(waitFor)
	for !l.track.idle() {
		if time.Now().After(deadline) {
			l.t.Fatalf("the queue did not become idle within %s", waitFor)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

func (l *loop) passes(n int) {
	l.t.Helper()
	l.until(fmt.Sprintf("pass %d", n), func() bool { return l.host.count() >= n })
	if got := l.host.count(); got != n {
		l.t.Fatalf("%d passes, want %d", got, n)
	}
}

func (l *loop) published(n int) []nodestatus.Status {
	l.t.Helper()
	var got []nodestatus.Status
	l.until(fmt.Sprintf("%d writes", n), func() bool { got, _ = l.node.snapshot(); return len(got) >= n })
	if got, _ = l.node.snapshot(); len(got) != n {
		l.t.Fatalf("%d writes, want %d: %+v", len(got), n, got)
	}
	return got
}

func ready() check.Report {
	return check.Report{Ready: true, Entries: []check.Entry{
		{Name: "cidr/ipv4-pool", Result: check.Passed("no overlap")},
		{Name: "firewalld/running", Result: check.Passed("firewalld 2.1 is running")},
	}}
}

func collision() check.Report {
	return check.Report{Ready: false, Entries: []check.Entry{
		{Name: "cidr/ipv4-pool", Result: check.Failed("PodCIDROverlap", "pod CIDR overlaps ens33")},
		{Name: "firewalld/running", Result: check.Passed("firewalld 2.1 is running")},
	}}
}

// restarting is ready() with firewalld going away and coming back: settling.
func restarting() check.Report {
	return check.Report{Ready: false, Entries: []check.Entry{
		{Name: "cidr/ipv4-pool", Result: check.Passed("no overlap")},
		{Name: "firewalld/running", Result: check.Errored(errors.New("dbus: connection closed by user")).Settle(0)},
	}}
}

func readyNode() nodestatus.Node {
	return nodestatus.Node{InternalIPs: []netip.Addr{netip.MustParseAddr("192.168.79.128")}, Condition: &nodestatus.Condition{Type: nodestatus.ConditionType, Status: "True", Reason: "Prepared"}}
}

// Events during a pass make one more pass, not one each.
func TestLoopCoalescesEventsDuringAPass(t *testing.T) {
	gate := make(chan struct{})
	host := &fakeHost{gate: gate}
	l := newLoop(t, host, nil, config.Config{})
	l.run()
	l.wait("the first pass to begin", func() bool { return host.begun() == 1 })
	for range 10 {
		l.a.Poke()
	}
	gate <- struct{}{}
	l.wait("the second pass to begin", func() bool { return host.begun() == 2 })
	gate <- struct{}{}
	l.passes(2)
	if !l.a.Ready() {
		t.Error("not ready after passes that passed")
	}
}

func TestLoopRechecksWhenAPassAsks(t *testing.T) {
	host := &fakeHost{script: func(n int) check.Report {
		rep := ready()
		if n == 1 {
			rep.Entries[0].RecheckIn = 5 * time.Second // e.g. a veth coming up
		}
		return rep
	}}
	l := newLoop(t, host, nil, config.Config{ResyncInterval: 10 * time.Minute})
	l.run()
	l.passes(1)
	l.step(5*time.Second - time.Millisecond)
	l.idle()
	l.passes(1)
	l.step(time.Millisecond)
	l.passes(2)
	// No recheck asked for: the next pass is the resync's, ResyncInterval after the last one.
	l.step(10*time.Minute - time.Millisecond)
	l.idle()
	l.passes(2)
	l.step(time.Millisecond)
	l.passes(3)
}

// A failed apply is tried again soon, then less and less often.
func TestLoopRetriesAFailedApply(t *testing.T) {
	host := &fakeHost{script: func(n int) check.Report {
		rep := collision()
		if n <= 2 {
			rep.Entries[0].ApplyError = "save firewalld state: no space left on device"
		}
		return rep
	}}
	l := newLoop(t, host, nil, config.Config{})
	l.run()
	l.passes(1)
	l.step(750*time.Millisecond - time.Millisecond) // 1 s, cut by up to a quarter
	l.idle()
	l.passes(1)
	l.step(250*time.Millisecond + time.Millisecond)
	l.passes(2)
	l.step(1500*time.Millisecond - time.Millisecond) // then 2 s
	l.idle()
	l.passes(2)
	l.step(500*time.Millisecond + time.Millisecond)
	l.passes(3)
	// Applied at last: no more retries, only the resync.
	l.step(time.Hour - time.Millisecond)
	l.idle()
	l.passes(3)
}

func TestLoopPublishesAndRetriesWithBackoff(t *testing.T) {
	host := &fakeHost{}
	n := readyNode()
	node := newFakeNode(&n)
	node.fail = 2
	l := newLoop(t, host, node, config.Config{})
	l.run()
	l.until("the first write attempt", func() bool { return node.failing() == 1 })
	// The first retry comes after 0.75–1 s (1 s, cut by up to a quarter at random).
	l.step(750*time.Millisecond - time.Millisecond)
	l.idle()
	if node.failing() != 1 {
		t.Fatalf("retried before 750ms")
	}
	l.step(250*time.Millisecond + time.Millisecond)
	l.until("the second attempt", func() bool { return node.failing() == 0 })
	// The second after 1.5–2 s.
	l.step(1500*time.Millisecond - time.Millisecond)
	l.idle()
	if node.publishCalls() != 2 {
		t.Fatalf("retried before 1.5s")
	}
	l.step(500*time.Millisecond + time.Millisecond)
	got := l.published(1)
	if !got[0].Ready || got[0].Reason != "Prepared" {
		t.Errorf("published %+v, want ready, Prepared", got[0])
	}
	// The Node said ready before: no Event.
	if _, evs := node.snapshot(); len(evs) != 0 {
		t.Errorf("events %+v, want none", evs)
	}
	// Success resets the backoff: the next failure retries after 1 s again.
	node.mu.Lock()
	node.fail = 1
	node.mu.Unlock()
	host.mu.Lock()
	host.script = func(int) check.Report { return collision() }
	host.mu.Unlock()
	l.a.Poke()
	l.until("the write of the collision to fail", func() bool { return node.failing() == 0 })
	l.step(time.Second)
	got = l.published(2)
	if got[1].Ready || got[1].Reason != "PodCIDROverlap" {
		t.Errorf("published %+v, want not ready, PodCIDROverlap", got[1])
	}
	if _, evs := node.snapshot(); len(evs) != 1 || evs[0].reason != "CalicoPrepNotReady" || !evs[0].warning {
		t.Errorf("events %+v, want one Warning CalicoPrepNotReady", evs)
	}
}

// A write that hangs (the API server is stopped) holds up no pass: the host keeps being
// repaired, and the newest state is written once the API server answers.
func TestLoopPassesGoOnWhileAWriteHangs(t *testing.T) {
	host := &fakeHost{script: func(n int) check.Report {
		if n >= 2 {
			return collision()
		}
		return ready()
	}}
	node := newFakeNode(&nodestatus.Node{InternalIPs: []netip.Addr{netip.MustParseAddr("192.168.79.128")}})
	hung := make(chan struct{})
	node.block = hung
	l := newLoop(t, host, node, config.Config{})
	l.run()
	l.wait("the write to hang", func() bool { return node.publishCalls() == 1 })
	for n := 2; n <= 6; n++ {
		l.a.Poke()
		l.wait(fmt.Sprintf("pass %d while the write hangs", n), func() bool { return host.count() == n })
	}
	if got, _ := node.snapshot(); len(got) != 0 {
		t.Fatalf("written while hung: %+v", got)
	}
	close(hung)
	got := l.published(2)
	if !got[0].Ready || got[1].Ready {
		t.Errorf("writes %+v, want the hung one (ready), then the newest (not ready)", got)
	}
	// The Node said nothing before: an Event for each state written, none for the passes
	// that repeated the collision meanwhile.
	if _, evs := node.snapshot(); len(evs) != 2 || evs[0].reason != "CalicoPrepReady" || evs[1].reason != "CalicoPrepNotReady" {
		t.Errorf("events %+v, want CalicoPrepReady then CalicoPrepNotReady", evs)
	}
}

// A component that restarts and comes back as it was changes nothing: the passes while it
// settles keep its last judgement, so no write, no Event and no metric flips.
func TestLoopSettlingComponentKeepsItsJudgement(t *testing.T) {
	host := &fakeHost{script: func(n int) check.Report {
		if n == 2 || n == 3 {
			return restarting()
		}
		return ready()
	}}
	n := readyNode()
	node := newFakeNode(&n)
	l := newLoop(t, host, node, config.Config{})
	l.run()
	l.passes(1)
	for n := 2; n <= 4; n++ {
		l.a.Poke()
		l.passes(n)
		if !l.a.Ready() {
			t.Fatalf("pass %d: not ready while firewalld restarts", n)
		}
		if n < 4 {
			if e, _ := l.a.st.judged.Entry("firewalld/running"); e.Status != check.Pass {
				t.Errorf("firewalld/running judged %+v, want the pass from before the restart", e)
			}
		}
	}
	got, evs := node.snapshot()
	if len(got) != 1 || len(evs) != 0 {
		t.Errorf("writes %+v, events %+v: want the first write only", got, evs)
	}
	for i, rep := range l.obs.reports() {
		if !rep.Ready {
			t.Errorf("metrics saw pass %d not ready", i+1)
		}
	}
}

// A component that stays away is judged once settleFor has passed, without any event.
func TestLoopJudgesAComponentThatStaysAway(t *testing.T) {
	host := &fakeHost{script: func(n int) check.Report {
		if n >= 2 {
			return restarting()
		}
		return ready()
	}}
	l := newLoop(t, host, nil, config.Config{})
	l.run()
	l.passes(1)
	l.a.Poke()
	l.passes(2)
	l.step(settleFor - time.Millisecond)
	l.idle()
	l.passes(2)
	if !l.a.Ready() {
		t.Fatal("judged before settleFor")
	}
	l.step(time.Millisecond)
	l.passes(3)
	rep, _ := l.a.LastReport()
	if f, ok := rep.FirstFailure(); rep.Ready || !ok || f.Name != "firewalld/running" {
		t.Errorf("after settleFor: %+v, want not ready because of firewalld/running", rep)
	}
}

// At start there is nothing to keep: a settling failure holds the pass back (nothing judged,
// nothing written) until it settles or settleFor is up.
func TestLoopHoldsBackAStartWhileAComponentStarts(t *testing.T) {
	host := &fakeHost{script: func(n int) check.Report {
		if n == 1 {
			rep := restarting()
			rep.Entries[1].RecheckIn = 500 * time.Millisecond // e.g. firewalld still loading
			return rep
		}
		return ready()
	}}
	n := readyNode()
	node := newFakeNode(&n)
	l := newLoop(t, host, node, config.Config{})
	l.run()
	l.passes(1)
	if _, ok := l.a.LastReport(); ok {
		t.Fatal("a pass was judged while firewalld was starting")
	}
	if got, evs := node.snapshot(); len(got)+len(evs) != 0 {
		t.Fatalf("wrote %+v %+v while firewalld was starting", got, evs)
	}
	if len(l.obs.reports()) != 0 {
		t.Fatal("metrics saw a pass while firewalld was starting")
	}
	l.step(500*time.Millisecond - time.Millisecond)
	l.idle()
	l.passes(1)
	l.step(time.Millisecond)
	l.passes(2)
	if got := l.published(1); !got[0].Ready {
		t.Errorf("published %+v, want ready", got[0])
	}
	if _, evs := node.snapshot(); len(evs) != 0 {
		t.Errorf("events %+v: the Node said ready already", evs)
	}
}

func TestLoopFollowsTheNode(t *testing.T) {
	host := &fakeHost{}
	node := newFakeNode(nil)
	l := newLoop(t, host, node, config.Config{})
	l.run()
	l.passes(1) // before the Node is seen: nothing to write to
	if node.publishCalls() != 0 {
		t.Fatal("wrote before the Node was seen")
	}
	node.watch <- nodestatus.Node{InternalIPs: []netip.Addr{netip.MustParseAddr("192.168.79.128")}}
	l.passes(2)
	st := l.published(1)[0]
	if _, evs := node.snapshot(); len(evs) != 1 || evs[0].reason != "CalicoPrepReady" {
		t.Errorf("events %+v, want CalicoPrepReady: the Node said nothing before", evs)
	}
	// The Node as written (the watch's echo of the write) asks for nothing; someone removing
	// the label after it asks for a write and no pass.
	n := nodestatus.Node{
		InternalIPs: []netip.Addr{netip.MustParseAddr("192.168.79.128")},
		Labels:      map[string]string{nodestatus.LabelReady: "true"},
		Annotations: map[string]string{nodestatus.AnnotationReport: st.Report},
		Condition:   &nodestatus.Condition{Status: "True", Reason: st.Reason, Message: st.Message},
	}
	node.watch <- n
	drift := n
	drift.Labels = nil
	node.watch <- drift
	l.until("the write after the drift", func() bool { return node.publishCalls() == 2 })
	l.passes(2)
	// A new InternalIP can change autodetection: a pass.
	moved := n
	moved.InternalIPs = []netip.Addr{netip.MustParseAddr("192.168.79.129")}
	node.watch <- moved
	l.passes(3)
}

// No pass runs before Calico's resources are read, whatever asks; the first complete state
// starts the passes and a change of configuration asks for one.
func TestLoopWaitsForCalicosResources(t *testing.T) {
	host := &fakeHost{}
	calico := make(fakeCalico)
	l := newLoopWith(t, host, nil, calico, config.Config{})
	l.run()
	l.a.Poke()
	calico <- calicoconfig.State{} // not every watch has listed yet
	l.until("the first configuration", func() bool { return len(host.effective()) == 1 })
	if host.begun() != 0 {
		t.Fatal("a pass ran before Calico's resources were read")
	}
	calico <- calicoconfig.State{Synced: true}
	l.passes(1)
	if eff := host.effective(); !eff[1].Followed || !eff[1].Synced {
		t.Errorf("configuration %+v, want followed and synced", eff[1])
	}
	calico <- calicoconfig.State{Synced: true} // the same again: nothing to do
	l.until("the second state", func() bool { return len(host.effective()) == 3 })
	l.passes(1)
	calico <- calicoconfig.State{Synced: true, BGPListenPort: new(uint16(1179))}
	l.passes(2)
	l.step(calicoSyncWait) // the wait ended already: no extra pass
	l.passes(2)
}

// An API server that does not answer does not hold the node back for longer than calicoSyncWait.
func TestLoopStopsWaitingForCalicosResources(t *testing.T) {
	host := &fakeHost{}
	l := newLoopWith(t, host, nil, make(fakeCalico), config.Config{})
	l.run()
	l.until("the end of the wait to be set", func() bool { return l.queue.delayed(calicoWaitJob) })
	l.step(calicoSyncWait - time.Millisecond)
	l.idle()
	if host.begun() != 0 {
		t.Fatal("a pass ran before calicoSyncWait")
	}
	l.step(time.Millisecond)
	l.passes(1)
}

// calico-node's annotations feed autodetect/calico-agrees: a change asks for a pass; other
// annotations do not count (the fake host, like Host, says what changed).
func TestLoopFollowsCalicoNodesAnnotations(t *testing.T) {
	host := &fakeHost{}
	n := readyNode()
	node := newFakeNode(&n)
	l := newLoop(t, host, node, config.Config{})
	l.run()
	l.published(1)
	l.passes(1)
	n.Annotations = map[string]string{calico.AnnotationIPv4Address: "192.168.79.128/24"}
	node.watch <- n
	l.passes(2)
}

func TestLoopCountsNodesRarely(t *testing.T) {
	n := readyNode()
	node := newFakeNode(&n)
	l := newLoop(t, &fakeHost{}, node, config.Config{ResyncInterval: 10 * time.Minute})
	l.run()
	l.published(1)
	l.step(10*time.Minute - time.Millisecond)
	l.idle()
	if node.countCalls() != 0 {
		t.Fatal("counted within the first resync interval")
	}
	// Once within the first countInterval after it; 80 nodes is more than Calico's Typha
	// threshold, so the report gets the advice (a pass and a write).
	l.step(countInterval)
	l.until("the first count", func() bool { return node.countCalls() == 1 })
	got := l.published(2)
	if !strings.Contains(got[1].Report, "Typha") {
		t.Errorf("report after the count has no Typha advice: %s", got[1].Report)
	}
	if l.obs.nodes != 80 {
		t.Errorf("cluster nodes metric %d, want 80", l.obs.nodes)
	}
	// The next count comes no sooner than half of countInterval later, and no later than
	// one and a half.
	l.step(countInterval/2 - time.Millisecond)
	l.idle()
	if node.countCalls() != 1 {
		t.Fatalf("%d counts within half of countInterval", node.countCalls())
	}
	l.step(countInterval)
	l.until("the second count", func() bool { return node.countCalls() == 2 })
}

// After SIGTERM nothing new starts; the pass in progress has ShutdownGrace to finish.
func TestLoopShutdown(t *testing.T) {
	gate := make(chan struct{})
	host := &fakeHost{gate: gate}
	l := newLoop(t, host, nil, config.Config{})
	l.run()
	gate <- struct{}{}
	l.passes(1)
	l.a.Poke() // this pass waits at the gate
	l.wait("pass 2 to begin", func() bool { return host.begun() == 2 })
	l.a.Poke() // and this one would follow it
	l.stop()
	select {
	case <-l.done:
		t.Fatal("Run returned while a pass was in progress")
	case <-time.After(10 * time.Millisecond):
	}
	if err := l.shutdown(); err != nil { // steps past ShutdownGrace: the pass is cut off
		t.Fatal(err)
	}
	if host.count() != 2 || !errors.Is(host.ctxErr, context.Canceled) {
		t.Errorf("%d passes, the last ending with %v; want 2, the second cancelled", host.count(), host.ctxErr)
	}
	l.a.Poke() // after Run: ignored
}

func TestOnceWaitsForASettlingComponent(t *testing.T) {
	host := &fakeHost{script: func(n int) check.Report {
		if n < 3 {
			rep := restarting()
			rep.Entries[1].RecheckIn = 500 * time.Millisecond
			return rep
		}
		return ready()
	}}
	node := newFakeNode(nil)
	node.watch <- readyNode()
	l := newLoop(t, host, node, config.Config{})
	host.now = l.clk.Now
	type result struct {
		rep check.Report
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, err := l.a.Once(context.Background())
		done <- result{rep, err}
	}()
	var r result
	deadline := time.Now().Add(waitFor)
wait:
	for {
		select {
		case r = <-done:
			break wait
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("Once did not return")
		}
		l.step(100 * time.Millisecond)
		time.Sleep(100 * time.Microsecond)
	}
	if r.err != nil || !r.rep.Ready || host.count() != 3 {
		t.Fatalf("Once: %+v, %v after %d passes; want ready after 3", r.rep, r.err, host.count())
	}
	if host.at[1].Sub(host.at[0]) < 500*time.Millisecond || host.at[2].Sub(host.at[1]) < 500*time.Millisecond {
		t.Errorf("passes at %v: want 500ms apart, as the settling check asked", host.at)
	}
	if got, _ := node.snapshot(); len(got) != 1 || !got[0].Ready {
		t.Errorf("Once wrote %+v, want one ready status", got)
	}
	// The watch's first state may be a cache's: Once reads the Node again before it writes.
	node.mu.Lock()
	defer node.mu.Unlock()
	if !slices.Equal(node.publishedAt, []int{1}) {
		t.Errorf("Refresh calls before each Publish: %v, want [1]", node.publishedAt)
	}
}

func TestOnceFailsWhenTheWriteFails(t *testing.T) {
	node := newFakeNode(nil)
	node.fail = 1
	node.watch <- readyNode()
	l := newLoop(t, &fakeHost{}, node, config.Config{})
	rep, err := l.a.Once(context.Background())
	if err == nil || !rep.Ready {
		t.Fatalf("Once: %+v, %v; want the ready report and an error", rep, err)
	}
}

func TestSettle(t *testing.T) {
	since := func(ago time.Duration) map[string]settling {
		return map[string]settling{"firewalld/running": {since: t0.Add(-ago), reason: "VerifyError"}}
	}
	last := ready()
	last.Entries[1].Applied = true
	tests := []struct {
		name       string
		rep        check.Report
		last       *check.Report
		since      map[string]settling
		wantJudged bool
		wantReady  bool
		wantUntil  time.Duration
		wantEntry  string // firewalld/running's message
	}{
		{"nothing settles", collision(), &last, map[string]settling{}, true, false, 0, "firewalld 2.1 is running"},
		{"settling keeps the last judgement", restarting(), &last, since(0), true, true, settleFor, "firewalld 2.1 is running"},
		{"settling for a while", restarting(), &last, since(40 * time.Second), true, true, 20 * time.Second, "firewalld 2.1 is running"},
		{"settled too long: judged as it is", restarting(), &last, since(settleFor), true, false, 0, "dbus: connection closed by user"},
		{"nothing to keep: held back", restarting(), nil, since(0), false, false, settleFor, "dbus: connection closed by user"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, judged, until := settle(tt.rep, tt.last, tt.since, t0)
			e, _ := got.Entry("firewalld/running")
			if judged != tt.wantJudged || got.Ready != tt.wantReady || until != tt.wantUntil || e.Message != tt.wantEntry {
				t.Errorf("settle: judged %v ready %v until %v firewalld/running %q; want %v %v %v %q",
					judged, got.Ready, until, e.Message, tt.wantJudged, tt.wantReady, tt.wantUntil, tt.wantEntry)
			}
			if e.Applied {
				t.Error("a kept entry counts its apply again")
			}
		})
	}
	// The input is not changed.
	rep := restarting()
	settle(rep, &last, since(0), t0)
	if e, _ := rep.Entry("firewalld/running"); !e.Settling {
		t.Error("settle changed its input")
	}
}

// A check that has settled for long for one reason (networkd absent in auto mode, for hours)
// and then settles for another (a bus restart) gets the whole settleFor for the new one; the
// same reason keeps its clock.
func TestSettlingSinceRestartsOnANewReason(t *testing.T) {
	last := ready()
	since := map[string]settling{"firewalld/running": {since: t0.Add(-time.Hour), reason: "FirewalldNotRunning"}}
	newly := settlingSince(restarting(), since, t0)
	if len(newly) != 1 || since["firewalld/running"] != (settling{since: t0, reason: "VerifyError"}) {
		t.Fatalf("new reason: newly %v, since %+v; want the clock restarted now", newly, since)
	}
	if got, judged, _ := settle(restarting(), &last, since, t0.Add(time.Second)); !judged || !got.Ready {
		t.Errorf("new reason: judged %v ready %v; want the last judgement kept", judged, got.Ready)
	}
	if newly := settlingSince(restarting(), since, t0.Add(2*time.Second)); len(newly) != 0 || !since["firewalld/running"].since.Equal(t0) {
		t.Errorf("same reason: newly %v, since %+v; want the clock kept", newly, since)
	}
}

func TestMerge(t *testing.T) {
	var evs []event
	for i := range 7 {
		evs = append(evs, event{warning: i%2 == 0, reason: fmt.Sprint("R", i), detail: fmt.Sprint("d", i)})
	}
	if got := merge(evs[:1]); got != evs[0] {
		t.Errorf("one event: %+v", got)
	}
	got := merge(evs)
	if got.reason != "R6" || !got.warning || got.detail != "2 earlier changes; then d2; then d3; then d4; then d5; then d6" {
		t.Errorf("merge: %+v", got)
	}
}
