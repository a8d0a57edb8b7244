package e2e

import (
	"context"
	"flag"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/calico-prep/calico-prep/pkg/nodestatus"
)

// The daemon's figures, measured from outside as the tests observe it. They report custom
// metrics (b.ReportMetric) and no ns/op, which would mean nothing here; hack/bench.sh runs
// them with the repetitions each needs and prints the figures.

// idleFor is how long BenchmarkIdleFootprint leaves the agent alone; hack/bench.sh asks for
// the 10 minutes of issue #6, the default keeps a plain `go test -bench .` short.
var idleFor = flag.Duration("idle", time.Minute, "how long BenchmarkIdleFootprint watches the idle agent")

// scrapeEvery is Prometheus' usual scrape interval: an idle agent in a cluster is scraped.
const scrapeEvery = 15 * time.Second

// BenchmarkNetlinkToCondition is the time from a netlink change on the node (an address that
// collides with the pod CIDR added, then removed; the time is taken when the kernel has
// applied it) to a watch on the apiserver seeing the NodeCondition and the label say so. Each
// iteration measures both directions.
func BenchmarkNetlinkToCondition(b *testing.B) {
	e := setup(b, kube.Cluster(b), "e2e-bench-latency")
	w := e.watchNode()
	a := startAgent(b, e.node, e.agentArgs()...)
	w.waitFor(b, wait, "condition True", conditionIs(corev1.ConditionTrue, "Prepared", ""))
	a.settle(b)

	var toFalse, toTrue []time.Duration
	// The agent's API client allows 5 requests/s with bursts of 10 and a transition costs 3
	// (label and annotation, condition, Event): changes in quick succession queue behind it.
	// The pause lets the bucket refill, so each sample is one change on a calm node.
	pause := func() {
		b.StopTimer()
		time.Sleep(time.Second)
		b.StartTimer()
	}
	for b.Loop() {
		changed := e.uplinkAddr(true, collisionAddr)
		s := w.waitFor(b, wait, "label and condition false", statusIs(false, "PodCIDROverlap", collisionMessage))
		toFalse = append(toFalse, s.at.Sub(changed))
		pause()
		changed = e.uplinkAddr(false, collisionAddr)
		s = w.waitFor(b, wait, "label and condition true", statusIs(true, "Prepared", ""))
		toTrue = append(toTrue, s.at.Sub(changed))
		pause()
	}
	all := append(slices.Clone(toFalse), toTrue...)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(len(all)), "samples")
	b.ReportMetric(ms(quantile(all, 0.5)), "median-ms")
	b.ReportMetric(ms(quantile(all, 0.99)), "p99-ms")
	b.ReportMetric(ms(quantile(toFalse, 0.5)), "to-false-median-ms")
	b.ReportMetric(ms(quantile(toTrue, 0.5)), "to-true-median-ms")
}

// BenchmarkStartToReady starts the agent on a node it has already prepared and measures the
// time from the fork to /readyz answering 200, and the API requests of the start.
//   - restart: the Node already says prepared, as after a DaemonSet rollout or a reboot.
//   - fresh-status: the Node carries none of calico-prep's label, annotation and condition
//     (a node prepared before the agent first ran there); also the time to the condition
//     True seen by a watch.
func BenchmarkStartToReady(b *testing.B) {
	e := setup(b, kube.Cluster(b), "e2e-bench-start")
	w := e.watchNode()
	first := startAgent(b, e.node, e.agentArgs()...)
	w.waitFor(b, wait, "condition True", conditionIs(corev1.ConditionTrue, "Prepared", ""))
	first.waitHTTP("/readyz", 200)
	if err := first.Stop(10 * time.Second); err != nil {
		b.Fatal(err)
	}

	for _, fresh := range []bool{false, true} {
		name := map[bool]string{false: "restart", true: "fresh-status"}[fresh]
		b.Run(name, func(b *testing.B) {
			var toReady, toCondition []time.Duration
			var requests []int
			for b.Loop() {
				b.StopTimer()
				if fresh {
					e.clearStatus(b)
					w.waitFor(b, wait, "condition cleared", func(n *corev1.Node) bool { return condition(n) == nil })
				}
				b.StartTimer()
				a := startAgent(b, e.node, e.agentArgs()...)
				ready := a.pollReady(b)
				b.StopTimer()
				toReady = append(toReady, ready.Sub(a.started))
				if fresh {
					s := w.waitFor(b, wait, "label and condition true", statusIs(true, "Prepared", ""))
					toCondition = append(toCondition, s.at.Sub(a.started))
				}
				a.settle(b)
				requests = append(requests, len(e.requests(b, a.started)))
				if err := a.Stop(10 * time.Second); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(ms(quantile(toReady, 0.5)), "readyz-median-ms")
			b.ReportMetric(ms(slices.Max(toReady)), "readyz-max-ms")
			if fresh {
				b.ReportMetric(ms(quantile(toCondition, 0.5)), "condition-median-ms")
				b.ReportMetric(ms(slices.Max(toCondition)), "condition-max-ms")
			}
			b.ReportMetric(float64(slices.Max(requests)), "requests/start")
		})
	}
}

// BenchmarkIdleFootprint leaves a prepared agent alone for -idle (scraped every 15 s, with
// the shipped resync interval of 10 minutes) and reports its resident memory at the end, its
// CPU time over the idle period and its API requests, at startup and while idle.
func BenchmarkIdleFootprint(b *testing.B) {
	syms := buildSymbolTwin(b)
	e := setup(b, kube.Cluster(b), "e2e-bench-idle")
	w := e.watchNode()
	a := startAgent(b, e.node, e.agentArgs("--resync-interval=10m")...)
	w.waitFor(b, wait, "condition True", conditionIs(corev1.ConditionTrue, "Prepared", ""))
	a.settle(b)
	startup := e.requests(b, a.started)

	before, err := a.usage()
	if err != nil {
		b.Fatal(err)
	}
	quiet := time.Now()
	for time.Since(quiet) < *idleFor {
		time.Sleep(min(scrapeEvery, *idleFor-time.Since(quiet)))
		if _, _, err := a.get(context.Background(), "/metrics"); err != nil {
			b.Fatal(err)
		}
	}
	after, err := a.usage()
	if err != nil {
		b.Fatal(err)
	}
	took := time.Since(quiet)
	res, err := measureResidency(a.Pid, agentBin, syms)
	if err != nil {
		b.Fatal(err)
	}
	res.print(os.Stdout, 15)
	// The Go runtime's view of the anonymous part, from the agent's own metrics.
	heap := a.metric(b, "go_memstats_heap_inuse_bytes")
	heapSys := a.metric(b, "go_memstats_heap_sys_bytes") - a.metric(b, "go_memstats_heap_released_bytes")
	goSys := a.metric(b, "go_memstats_sys_bytes")
	idle := e.requests(b, quiet)
	b.Logf("startup requests: %s", describeRequests(startup))
	b.Logf("idle requests in %s: %s", took.Round(time.Second), describeRequests(idle))

	b.ReportMetric(0, "ns/op")
	b.ReportMetric(took.Minutes(), "idle-min")
	b.ReportMetric(float64(after.rssKiB)/1024, "rss-MiB")
	b.ReportMetric(float64(after.hwmKiB)/1024, "peak-rss-MiB")
	b.ReportMetric(float64(after.anonKiB)/1024, "anon-rss-MiB")
	b.ReportMetric(float64(after.rssKiB-after.anonKiB)/1024, "file-rss-MiB")
	b.ReportMetric(float64(res.section(".text"))/(1<<20), "text-rss-MiB")
	b.ReportMetric(float64(res.section(".rodata"))/(1<<20), "rodata-rss-MiB")
	b.ReportMetric(float64(res.section(".gopclntab"))/(1<<20), "pclntab-rss-MiB")
	b.ReportMetric(heap/(1<<20), "heap-inuse-MiB")
	b.ReportMetric(heapSys/(1<<20), "heap-retained-MiB")
	b.ReportMetric(goSys/(1<<20), "go-sys-MiB")
	b.ReportMetric(ms(after.cpu-before.cpu), "idle-cpu-ms")
	b.ReportMetric(100*float64(after.cpu-before.cpu)/float64(took), "idle-cpu-%")
	b.ReportMetric(float64(after.threads), "threads")
	b.ReportMetric(float64(len(startup)), "startup-requests")
	b.ReportMetric(float64(len(idle)), "idle-requests")
	b.ReportMetric(float64(len(idle))*float64(time.Hour)/float64(took), "requests/hour")
}

// pollReady polls /readyz every millisecond until it answers 200 and returns when it did.
func (a *agentProc) pollReady(t testing.TB) time.Time {
	t.Helper()
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		code, _, err := a.get(context.Background(), "/readyz")
		if err == nil && code == 200 {
			return time.Now()
		}
		if a.Exited() {
			t.Fatalf("agent exited (%s):\n%s", a.State(), a.logTail(20))
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("/readyz not 200 after %s:\n%s", wait, a.logTail(20))
	return time.Time{}
}

// clearStatus removes calico-prep's label, annotation and condition from the Node.
func (e *env) clearStatus(t testing.TB) {
	t.Helper()
	ctx := context.Background()
	nodes := e.admin.CoreV1().Nodes()
	meta := fmt.Sprintf(`{"metadata":{"labels":{%q:null},"annotations":{%q:null}}}`, nodestatus.LabelReady, nodestatus.AnnotationReport)
	if _, err := nodes.Patch(ctx, e.name, types.MergePatchType, []byte(meta), metav1.PatchOptions{}); err != nil {
		t.Fatalf("clear label and annotation: %v", err)
	}
	status := fmt.Sprintf(`{"status":{"conditions":[{"type":%q,"$patch":"delete"}]}}`, nodestatus.ConditionType)
	if _, err := nodes.Patch(ctx, e.name, types.StrategicMergePatchType, []byte(status), metav1.PatchOptions{}, "status"); err != nil {
		t.Fatalf("clear condition: %v", err)
	}
}

// quantile is the q-quantile of ds by the nearest-rank method.
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.999999) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
