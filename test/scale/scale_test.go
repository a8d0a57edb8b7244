package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"os"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/calico-prep/calico-prep/pkg/nodestatus"
	"github.com/calico-prep/calico-prep/test/kubetest"
)

// TestScale measures a fleet of hollow agents against a real kube-apiserver and etcd: the start
// on new Nodes, the idle fleet, the API server hung and restarted while nodes change, and the
// start on Nodes already prepared. The suite runs it with 20 agents; for the README's figures:
//
//	go test ./test/scale -run TestScale -v -timeout 2h -nodes=1000 -idle=2m -hang=30s
var (
	fleetSize = flag.Int("nodes", 20, "agents in TestScale")
	idleFor   = flag.Duration("idle", 10*time.Second, "how long TestScale watches the idle fleet")
	hangFor   = flag.Duration("hang", 10*time.Second, "how long TestScale stops and restarts the API server")
)

// within bounds each wait for the fleet; the goals are 30 s.
const within = 5 * time.Minute

func TestScale(t *testing.T) {
	c := kubetest.Start(t)
	ctx := t.Context()
	n := *fleetSize
	o := options{kubeconfig: c.Kubeconfig, nodes: n, createNodes: true, prefix: "scale-", resync: 10 * time.Minute}
	f, err := newFleet(c.Config(), o)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.createNodes(ctx); err != nil {
		t.Fatal(err)
	}
	var rows []row
	add := func(figure string, value any, goal string) {
		rows = append(rows, row{figure, fmt.Sprint(value), goal})
		t.Logf("%-70s %12v  %s", figure, value, goal)
	}

	// 1. Every agent starts at once on a Node without calico-prep's status.
	api0 := apiRequests(t, f)
	began := time.Now()
	f.start(ctx)
	t.Cleanup(f.stop)
	ready := waitFor(t, f, f.names, true, "every Node ready")
	quiet(t, f)
	api1 := apiRequests(t, f)
	startPeak := f.stats.peak(began, time.Now())
	add("Nodes CalicoPrepReady=True after the agents start (s)", secs(ready), "<= 30")
	add("Node requests per agent at start (API server)", nodeRequests(api1.minus(api0), n), "<= 3")
	add("all requests per agent at start (agents)", float64(f.stats.total())/float64(n), "")
	add("start burst: busiest second (requests)", startPeak, "")
	// Watches beyond one per agent: the API server closes a watch whose client does not take
	// its events in time, and the agent watches again.
	add("  Node watches the API server closed as unresponsive", api1.minus(api0)["terminated watchers of nodes"], "")
	t.Logf("agents' requests at start, by verb: %v", f.stats.byVerb())
	t.Logf("the API server's count at start: %v", api1.minus(api0))

	// 2. Idle: no writes, no requests but the open watches.
	idleFrom := time.Now()
	time.Sleep(*idleFor)
	api2 := apiRequests(t, f)
	add(fmt.Sprintf("writes while idle for %s (API server)", *idleFor), writes(api2.minus(api1)), "0")
	add(fmt.Sprintf("requests while idle for %s (agents)", *idleFor), f.stats.between(idleFrom, time.Now()), "0")

	// 3. The API server hangs; meanwhile a tenth of the nodes fail a check (a write is due).
	// Once it answers, each of them must say so.
	changed := f.names[:max(1, n/10)]
	c.PauseAPIServer(t)
	for i := range changed {
		f.hosts[i].failUntil.Store(time.Now().Add(time.Hour).UnixNano())
		f.agents[i].Poke()
	}
	time.Sleep(*hangFor)
	c.ResumeAPIServer(t)
	back := time.Now()
	told := waitFor(t, f, changed, false, "the changed nodes not ready after the hang")
	quiet(t, f)
	add(fmt.Sprintf("API server hung %s: changes on the Nodes after it answers (s)", *hangFor), secs(told), "<= 30")
	add("  burst at its return: busiest second (requests)", f.stats.peak(back, time.Now()), fmt.Sprintf("<= %d (2x start)", 2*startPeak))
	t.Logf("agents' requests so far, by verb: %v", f.stats.byVerb())

	// 4. The API server restarts; meanwhile the nodes recover. Every agent watches again and
	// writes what changed; then someone removes the ready label from a tenth of the Nodes,
	// and the agents put it back.
	c.StopAPIServer(t)
	for i := range changed {
		f.hosts[i].failUntil.Store(0)
		f.agents[i].Poke()
	}
	time.Sleep(*hangFor)
	watches := f.stats.byVerb()["watch"]
	c.StartAPIServer(t)
	back = time.Now()
	recovered := waitFor(t, f, f.names, true, "every Node ready after the restart")
	for i := range changed {
		patch := fmt.Sprintf(`{"metadata":{"labels":{%q:null}}}`, nodestatus.LabelReady)
		if _, err := f.admin.CoreV1().Nodes().Patch(ctx, changed[i], types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	repaired := waitLabels(t, f, changed)
	quiet(t, f)
	add(fmt.Sprintf("API server restarted after %s: every Node right again (s)", *hangFor), secs(recovered), "<= 30")
	add("  watches made again (agents)", f.stats.byVerb()["watch"]-watches, fmt.Sprintf("%d", n))
	add("  labels removed after the restart, put back (s)", secs(repaired), "<= 30")
	add("  burst at its return: busiest second (requests)", f.stats.peak(back, time.Now()), fmt.Sprintf("<= %d (2x start)", 2*startPeak))
	t.Logf("agents' requests so far, by verb: %v", f.stats.byVerb())

	// 5. Every agent starts again on Nodes it prepared (a DaemonSet rollout).
	f.stop()
	g, err := newFleet(c.Config(), o)
	if err != nil {
		t.Fatal(err)
	}
	api3 := apiRequests(t, g)
	g.start(ctx)
	t.Cleanup(g.stop)
	quietFor(t, g, 10*time.Second)
	api4 := apiRequests(t, g)
	add("Node requests per agent at a restart on prepared Nodes (API server)", nodeRequests(api4.minus(api3), n), "1")
	add("all requests per agent at that restart (agents)", float64(g.stats.total())/float64(n), "1")
	s := g.summary(time.Since(began))
	add("heap per agent in this process (KiB)", s.HeapPerAgent/1024, "")

	if out := os.Getenv("SCALE_TABLE"); out != "" {
		b, _ := json.MarshalIndent(rows, "", "  ")
		if err := os.WriteFile(out, b, 0o644); err != nil {
			t.Error(err)
		}
	}
}

type row struct{ Figure, Value, Goal string }

// apiRequests reads the API server's request counts, less the harness's own Node requests
// so far (as "harness nodes").
func apiRequests(t *testing.T, f *fleet) requestCounts {
	t.Helper()
	r, err := f.apiserverRequests(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	r["harness nodes"] = float64(f.own.nodes.Load())
	return r
}

func waitFor(t *testing.T, f *fleet, names []string, ready bool, what string) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), within)
	defer cancel()
	took, err := f.waitReady(ctx, names, ready)
	if err != nil {
		t.Fatalf("%s: not within %s", what, within)
	}
	return took
}

// waitLabels waits until every named Node has its ready label again.
func waitLabels(t *testing.T, f *fleet, names []string) time.Duration {
	t.Helper()
	began := time.Now()
	for time.Since(began) < within {
		list, err := f.admin.CoreV1().Nodes().List(t.Context(), metav1.ListOptions{})
		if err == nil {
			missing := 0
			for _, n := range list.Items {
				if strings.HasPrefix(n.Name, f.o.prefix) && n.Labels[nodestatus.LabelReady] == "" && contains(names, n.Name) {
					missing++
				}
			}
			if missing == 0 {
				return time.Since(began)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("labels not put back within %s", within)
	return 0
}

func contains(names []string, name string) bool {
	for _, n := range names {
		if n == name {
			return true
		}
	}
	return false
}

// quiet waits until the agents have sent nothing for 5 s.
func quiet(t *testing.T, f *fleet) { quietFor(t, f, 5*time.Second) }

func quietFor(t *testing.T, f *fleet, d time.Duration) {
	t.Helper()
	began := time.Now()
	last, since := f.stats.total(), time.Now()
	for time.Since(since) < d {
		if time.Since(began) > within {
			t.Fatalf("the agents kept sending requests for %s", within)
		}
		time.Sleep(250 * time.Millisecond)
		if n := f.stats.total(); n != last {
			last, since = n, time.Now()
		}
	}
}

// nodeRequests is the API server's count of Node requests per agent: those it finished and the
// watches it holds open, less the harness's own.
func nodeRequests(delta map[string]float64, n int) string {
	var sum float64
	for k, v := range delta {
		if strings.HasPrefix(k, "nodes ") || strings.HasPrefix(k, "nodes/") {
			sum += v
		}
	}
	sum -= delta["harness nodes"]
	return fmt.Sprintf("%.2f", sum/float64(n))
}

// writes sums the API server's counts of writing verbs; open watches and the watches it closed
// are not requests of their own.
func writes(delta map[string]float64) float64 {
	var sum float64
	for k, v := range delta {
		switch k[strings.LastIndexByte(k, ' ')+1:] {
		case "POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION":
			sum += v
		}
	}
	return sum
}

func secs(d time.Duration) string { return fmt.Sprintf("%.1f", d.Seconds()) }

// The API server's counters by resource and verb: ended requests, open watches and watches it
// closed for being slow; other resources are left out.
func TestParseRequestTotal(t *testing.T) {
	text := `# HELP apiserver_request_total Counter of apiserver requests.
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="nodes",scope="resource",subresource="",verb="PATCH",version="v1"} 7
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="nodes",scope="resource",subresource="status",verb="PATCH",version="v1"} 5
apiserver_request_total{code="409",component="apiserver",dry_run="",group="",resource="nodes",scope="resource",subresource="status",verb="PATCH",version="v1"} 1
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="pods",scope="namespace",subresource="",verb="LIST",version="v1"} 9
apiserver_longrunning_requests{component="apiserver",group="",resource="nodes",scope="resource",subresource="",verb="WATCH",version="v1"} 3
apiserver_terminated_watchers_total{group="",resource="nodes"} 2
apiserver_terminated_watchers_total{group="",resource="pods"} 4
`
	want := requestCounts{"nodes PATCH": 7, "nodes/status PATCH": 6, "nodes WATCH open": 3, "terminated watchers of nodes": 2}
	if got := parseRequestTotal(text); !maps.Equal(got, want) {
		t.Fatalf("parseRequestTotal = %v, want %v", got, want)
	}
}
