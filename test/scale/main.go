// Command scale runs N hollow agents in one process against an API server: each is the real
// daemon loop (pkg/agent) with the real Node client (pkg/nodestatus) on a connection of its
// own, as on separate machines, over a fake host whose checks pass (or, for a fraction of the
// nodes, fail for a while). It measures what the agents cost the API server.
//
//	go run ./test/scale --kubeconfig=FILE --nodes=N [--create-nodes] [--prefix=scale-]
//
// It prints one line when every Node says CalicoPrepReady=True and a JSON summary on SIGTERM or
// SIGINT: the agents' requests by verb and bytes as they saw them, the API server's own request
// counts (its /metrics), and the heap per agent. The kubeconfig must allow what the agents do
// (watch, patch and patch the status of the Nodes, create Events) and, with --create-nodes,
// creating Nodes; an admin kubeconfig does.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/calico-prep/calico-prep/pkg/agent"
	"github.com/calico-prep/calico-prep/pkg/calicoconfig"
	"github.com/calico-prep/calico-prep/pkg/check"
	"github.com/calico-prep/calico-prep/pkg/config"
	"github.com/calico-prep/calico-prep/pkg/nodestatus"
	"github.com/calico-prep/calico-prep/pkg/report"
)

func main() {
	var o options
	flag.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig of the API server (required)")
	flag.IntVar(&o.nodes, "nodes", 0, "number of agents, one per Node (required)")
	flag.BoolVar(&o.createNodes, "create-nodes", false, "create the Nodes that do not exist")
	flag.StringVar(&o.prefix, "prefix", "scale-", "Node names are PREFIX0, PREFIX1, …")
	flag.Float64Var(&o.failFraction, "fail-fraction", 0, "fraction of the nodes whose checks fail at first")
	flag.DurationVar(&o.failFor, "fail-for", 30*time.Second, "how long those checks fail")
	flag.DurationVar(&o.resync, "resync", 10*time.Minute, "the agents' --resync-interval")
	flag.Parse()
	if err := o.validate(); err != nil {
		fmt.Fprintln(os.Stderr, "scale:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "scale:", err)
		os.Exit(1)
	}
}

type options struct {
	kubeconfig   string
	nodes        int
	createNodes  bool
	prefix       string
	failFraction float64
	failFor      time.Duration
	resync       time.Duration
}

func (o options) validate() error {
	switch {
	case o.kubeconfig == "":
		return errors.New("--kubeconfig is required")
	case o.nodes < 1:
		return fmt.Errorf("invalid --nodes %d: want at least 1", o.nodes)
	case o.failFraction < 0 || o.failFraction > 1:
		return fmt.Errorf("invalid --fail-fraction %v: want 0 to 1", o.failFraction)
	case o.resync < 10*time.Second:
		return fmt.Errorf("invalid --resync %s: want at least 10s", o.resync)
	}
	return nil
}

// run starts the fleet, reports when it is ready and writes the summary when ctx ends.
func run(ctx context.Context, o options, out io.Writer) error {
	restCfg, err := clientcmd.BuildConfigFromFlags("", o.kubeconfig)
	if err != nil {
		return fmt.Errorf("load kubeconfig %q: %w", o.kubeconfig, err)
	}
	f, err := newFleet(restCfg, o)
	if err != nil {
		return err
	}
	if o.createNodes {
		if err := f.createNodes(ctx); err != nil {
			return err
		}
	}
	before, err := f.apiserverRequests(ctx)
	if err != nil {
		return err
	}
	started := time.Now()
	f.start(ctx)
	if took, err := f.waitReady(ctx, f.names, true); err == nil {
		fmt.Fprintf(out, "all %d nodes CalicoPrepReady=True %.1fs after the agents started\n", o.nodes, took.Seconds())
	}
	<-ctx.Done()
	after, err := f.apiserverRequests(context.WithoutCancel(ctx))
	s := f.summary(time.Since(started))
	if err == nil {
		s.APIServer = after.minus(before)
	}
	f.stop()
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(s)
}

// fleet is N hollow agents and the admin client that watches them.
type fleet struct {
	o      options
	cfg    *rest.Config
	admin  kubernetes.Interface
	names  []string
	hosts  []*host
	agents []*agent.Agent
	stats  *stats // the agents' requests
	own    *stats // the harness's

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newFleet(cfg *rest.Config, o options) (*fleet, error) {
	adminCfg := rest.CopyConfig(cfg)
	adminCfg.QPS, adminCfg.Burst = 500, 1000
	// What the harness itself asks the API server is told apart from the agents' requests.
	own := newStats()
	adminCfg.WrapTransport = own.wrap
	admin, err := kubernetes.NewForConfig(adminCfg)
	if err != nil {
		return nil, err
	}
	f := &fleet{o: o, cfg: cfg, admin: admin, stats: newStats(), own: own}
	for i := range o.nodes {
		f.names = append(f.names, fmt.Sprintf("%s%d", o.prefix, i))
		h := &host{}
		if float64(i) < o.failFraction*float64(o.nodes) {
			h.failUntil.Store(time.Now().Add(o.failFor).UnixNano())
		}
		f.hosts = append(f.hosts, h)
	}
	return f, nil
}

// nodeIP is the InternalIP of the i-th Node: 10.0.0.0/8 holds 16 million.
func nodeIP(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
}

// createNodes creates the Nodes that do not exist yet, as kubelets would register them.
func (f *fleet) createNodes(ctx context.Context) error {
	work := make(chan int)
	errs := make(chan error, f.o.nodes)
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for i := range work {
				n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: f.names[i]}}
				created, err := f.admin.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
				if apierrors.IsAlreadyExists(err) {
					continue
				}
				if err != nil {
					errs <- fmt.Errorf("create node %q: %w", f.names[i], err)
					continue
				}
				created.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: nodeIP(i).String()}}
				if _, err := f.admin.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
					errs <- fmt.Errorf("set the address of node %q: %w", f.names[i], err)
				}
			}
		})
	}
	for i := range f.o.nodes {
		work <- i
	}
	close(work)
	wg.Wait()
	close(errs)
	return errors.Join(collect(errs)...)
}

func collect(errs <-chan error) []error {
	var out []error
	for err := range errs {
		out = append(out, err)
	}
	return out
}

// start starts every agent at once, as a DaemonSet rollout on a new cluster does.
func (f *fleet) start(ctx context.Context) {
	ctx, f.cancel = context.WithCancel(ctx)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	for i, name := range f.names {
		c := rest.CopyConfig(f.cfg)
		c.QPS, c.Burst = 0, 0 // the agent's own defaults
		// A proxy function makes client-go give this client a transport (and connection) of
		// its own instead of sharing one cached for equal TLS settings.
		c.Proxy = func(*http.Request) (*url.URL, error) { return nil, nil }
		c.WrapTransport = f.stats.wrap
		node, err := nodestatus.New(c, name, log)
		if err != nil {
			panic(err) // the same config worked for the admin client
		}
		cfg := config.Config{NodeName: name, ResyncInterval: f.o.resync}
		a := agent.New(cfg, agent.Deps{Passes: f.hosts[i], Node: node, Log: log})
		f.agents = append(f.agents, a)
		f.wg.Go(func() { _ = a.Run(ctx) })
	}
}

func (f *fleet) stop() {
	if f.cancel != nil {
		f.cancel()
	}
	f.wg.Wait()
}

// waitReady waits until every named Node's condition says ready (or not), watching all Nodes
// with one admin watch, and returns how long that took.
func (f *fleet) waitReady(ctx context.Context, names []string, ready bool) (time.Duration, error) {
	began := time.Now()
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	status := map[bool]corev1.ConditionStatus{true: corev1.ConditionTrue, false: corev1.ConditionFalse}[ready]
	for ctx.Err() == nil {
		list, err := f.admin.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			time.Sleep(time.Second)
			continue
		}
		pending := map[string]bool{}
		for n := range want {
			pending[n] = true
		}
		update := func(n *corev1.Node) {
			if !want[n.Name] {
				return
			}
			for _, c := range n.Status.Conditions {
				if c.Type == nodestatus.ConditionType && c.Status == status {
					delete(pending, n.Name)
					return
				}
			}
			pending[n.Name] = true
		}
		for i := range list.Items {
			update(&list.Items[i])
		}
		if len(pending) == 0 {
			return time.Since(began), nil
		}
		w, err := f.admin.CoreV1().Nodes().Watch(ctx, metav1.ListOptions{ResourceVersion: list.ResourceVersion})
		if err != nil {
			continue
		}
		for ev := range w.ResultChan() {
			n, ok := ev.Object.(*corev1.Node)
			if !ok || ev.Type == watch.Error {
				break
			}
			update(n)
			if len(pending) == 0 {
				w.Stop()
				return time.Since(began), nil
			}
		}
		w.Stop()
	}
	return 0, ctx.Err()
}

// host is a node whose checks pass, or fail until failUntil.
type host struct {
	failUntil atomic.Int64 // unix nanoseconds
	ips       atomic.Pointer[[]netip.Addr]
}

func (h *host) Pass(context.Context, check.Runner) (check.Report, report.Node) {
	rep := check.Report{Ready: true, Entries: []check.Entry{
		{Name: "kernel/version", Result: check.Passed("kernel 6.12 is new enough")},
		{Name: "cidr/ipv4-pool", Result: check.Passed("pod CIDR 10.244.0.0/16 overlaps nothing")},
	}}
	if time.Now().UnixNano() < h.failUntil.Load() {
		rep.Ready = false
		rep.Entries[1].Result = check.Failed("PodCIDROverlap", "pod CIDR 10.244.0.0/16 overlaps ens33 address 10.244.5.1/24")
	}
	var desc report.Node
	desc.Pools = []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}
	if ips := h.ips.Load(); ips != nil && len(*ips) > 0 {
		desc.Host.Interfaces = append(desc.Host.Interfaces, hostInterface((*ips)[0]))
	}
	return rep, desc
}

func (h *host) SetInternalIPs(ips []netip.Addr) bool {
	old := h.ips.Swap(&ips)
	return old == nil || fmt.Sprint(*old) != fmt.Sprint(ips)
}

// SetCalicoNode and SetEffective change nothing: the hollow host has neither calico-node nor
// Calico's resources.
func (h *host) SetCalicoNode(map[string]string) bool     { return false }
func (h *host) SetEffective(calicoconfig.Effective) bool { return false }

// summary is what run prints at the end.
type summary struct {
	Nodes   int     `json:"nodes"`
	Seconds float64 `json:"seconds"`
	// Requests are the agents' requests as they sent them, by verb (watch, get, patch,
	// create), and Bytes what went over their connections (bodies only).
	Requests         map[string]int64 `json:"requests"`
	RequestsPerAgent float64          `json:"requestsPerAgent"`
	BytesSent        int64            `json:"bytesSent"`
	BytesReceived    int64            `json:"bytesReceived"`
	// PeakRequestsPerSecond is the busiest second of the agents' requests.
	PeakRequestsPerSecond int64 `json:"peakRequestsPerSecond"`
	// APIServer is apiserver_request_total's growth for nodes and events, by verb.
	APIServer map[string]float64 `json:"apiserver,omitempty"`
	// HeapPerAgent is this process's heap in use divided by the agents.
	HeapPerAgent uint64 `json:"heapPerAgentBytes"`
	Goroutines   int    `json:"goroutines"`
}

func (f *fleet) summary(took time.Duration) summary {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	s := summary{Nodes: f.o.nodes, Seconds: took.Seconds(), Requests: map[string]int64{}, Goroutines: runtime.NumGoroutine()}
	var total int64
	for verb, n := range f.stats.byVerb() {
		s.Requests[verb] = n
		total += n
	}
	s.RequestsPerAgent = float64(total) / float64(f.o.nodes)
	s.BytesSent, s.BytesReceived = f.stats.sent.Load(), f.stats.received.Load()
	s.PeakRequestsPerSecond = f.stats.peak(time.Time{}, time.Now())
	s.HeapPerAgent = ms.HeapInuse / uint64(f.o.nodes)
	return s
}

// requestCounts is apiserver_request_total summed by verb, for nodes and events.
type requestCounts map[string]float64

func (r requestCounts) minus(before requestCounts) map[string]float64 {
	out := map[string]float64{}
	for k, v := range r {
		if d := v - before[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}

// apiserverRequests reads the API server's /metrics.
func (f *fleet) apiserverRequests(ctx context.Context) (requestCounts, error) {
	body, err := f.admin.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("read the API server's metrics: %w", err)
	}
	return parseRequestTotal(string(body)), nil
}

// parseRequestTotal sums apiserver_request_total by resource and verb for nodes and events,
// e.g. "nodes PATCH". The API server counts a watch there when it ends; the watches open now
// (apiserver_longrunning_requests) are "nodes WATCH open", and the watches it closed because
// their client did not take the events in time (apiserver_terminated_watchers_total) are
// "terminated watchers of nodes".
func parseRequestTotal(text string) requestCounts {
	out := requestCounts{}
	for line := range strings.SplitSeq(text, "\n") {
		open, terminated := false, false
		rest, ok := strings.CutPrefix(line, "apiserver_request_total{")
		if !ok {
			rest, open = strings.CutPrefix(line, "apiserver_longrunning_requests{")
		}
		if !ok && !open {
			rest, terminated = strings.CutPrefix(line, "apiserver_terminated_watchers_total{")
		}
		if !ok && !open && !terminated {
			continue
		}
		labels, value, ok := strings.Cut(rest, "} ")
		if !ok {
			continue
		}
		l := map[string]string{}
		for kv := range strings.SplitSeq(labels, ",") {
			k, v, _ := strings.Cut(kv, "=")
			l[k] = strings.Trim(v, `"`)
		}
		if l["resource"] != "nodes" && l["resource"] != "events" {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(value, &v); err != nil {
			continue
		}
		key := l["resource"] + " " + l["verb"]
		if l["subresource"] != "" {
			key = l["resource"] + "/" + l["subresource"] + " " + l["verb"]
		}
		switch {
		case open:
			key += " open"
		case terminated:
			key = "terminated watchers of " + l["resource"]
		}
		out[key] += v
	}
	return out
}
