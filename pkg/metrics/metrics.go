// Package metrics exposes the agent's reports as Prometheus metrics under calico_prep_.
//
// The per-check series are built from the last report at scrape time (a collector, as
// node_exporter does), so a check that disappears leaves no stale series and a scrape never sees
// half a pass. Counters and the duration histogram accumulate across passes.
package metrics

import (
	"net/http"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/calico-prep/calico-prep/pkg/calico"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/calico-prep/calico-prep/pkg/check"
)

const namespace = "calico_prep"

var statuses = []check.Status{check.Pass, check.Fail, check.NotApplicable, check.Disabled}

// Metrics holds the agent's collectors and its registry.
type Metrics struct {
	registry *prometheus.Registry

	reconcileDuration prometheus.Histogram
	reconcileTotal    *prometheus.CounterVec
	applyTotal        *prometheus.CounterVec
	clusterNodes      prometheus.Gauge

	mu   sync.Mutex
	last *check.Report
	when time.Time

	ready, checkStatus, fwRule, nmDevice, networkdLink, linkUp, lastReconcile *prometheus.Desc
}

// New registers every collector on a fresh registry.
func New(version string) *Metrics {
	m := &Metrics{
		registry: prometheus.NewRegistry(),
		reconcileDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "reconcile_duration_seconds",
			Help:    "Duration of one reconcile pass (verify, apply, verify).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		reconcileTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "reconcile_total",
			Help: "Reconcile passes by result: ready or not_ready.",
		}, []string{"result"}),
		applyTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "apply_total",
			Help: "Changes applied to the host by check and result: success or error. A steadily rising success count means something keeps undoing the preparation.",
		}, []string{"check", "result"}),
		clusterNodes: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "cluster_nodes",
			Help: "Nodes in the cluster at the last count (for Typha advice); 0 when unknown.",
		}),
		ready: prometheus.NewDesc(namespace+"_ready",
			"1 when the node is prepared for Calico (no check failing), else 0.", nil, nil),
		checkStatus: prometheus.NewDesc(namespace+"_check_status",
			"1 for the current status of each check (pass, fail, not-applicable, disabled), 0 for the others.", []string{"check", "status"}, nil),
		fwRule: prometheus.NewDesc(namespace+"_firewalld_rule_present",
			"1 when a firewalld rule Calico needs is present in the zone, by configuration (runtime or permanent).", []string{"zone", "rule", "config"}, nil),
		nmDevice: prometheus.NewDesc(namespace+"_networkmanager_device_unmanaged",
			"1 when NetworkManager leaves a Calico device unmanaged; workload veths are aggregated as cali*.", []string{"device"}, nil),
		networkdLink: prometheus.NewDesc(namespace+"_networkd_link_unmanaged",
			"1 when systemd-networkd leaves a Calico link unmanaged; workload veths are aggregated as cali*.", []string{"link"}, nil),
		linkUp: prometheus.NewDesc(namespace+"_link_up",
			"1 when a Calico link exists and is up; workload veths are aggregated as cali*.", []string{"link"}, nil),
		lastReconcile: prometheus.NewDesc(namespace+"_last_reconcile_timestamp_seconds",
			"Unix time at which the last reconcile pass finished.", nil, nil),
	}
	m.registry.MustRegister(
		m.reconcileDuration, m.reconcileTotal, m.applyTotal, m.clusterNodes,
		reportCollector{m},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: namespace, Name: "build_info",
			Help:        "Build of the running agent; always 1.",
			ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()},
		}, func() float64 { return 1 }),
	)
	return m
}

// Observe records one finished pass.
func (m *Metrics) Observe(rep check.Report, took time.Duration, finished time.Time) {
	m.reconcileDuration.Observe(took.Seconds())
	result := "not_ready"
	if rep.Ready {
		result = "ready"
	}
	m.reconcileTotal.WithLabelValues(result).Inc()
	for _, e := range rep.Entries {
		switch {
		case e.Applied:
			m.applyTotal.WithLabelValues(e.Name, "success").Inc()
		case e.ApplyError != "":
			m.applyTotal.WithLabelValues(e.Name, "error").Inc()
		}
	}
	m.mu.Lock()
	m.last, m.when = &rep, finished
	m.mu.Unlock()
}

// SetClusterNodes records the node count of the last Typha-advice count.
func (m *Metrics) SetClusterNodes(n int64) { m.clusterNodes.Set(float64(n)) }

// Handler serves the registry in the Prometheus exposition format, uncompressed: the page is a
// few kilobytes scraped over the node's own network, and each gzip encoder promhttp keeps
// for reuse holds about a megabyte of heap between scrapes (2.7 MiB of the idle agent's 7).
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{Registry: m.registry, DisableCompression: true})
}

// Registry is for tests and for gathering without HTTP.
func (m *Metrics) Registry() *prometheus.Registry { return m.registry }

// reportCollector turns the last report into const metrics at scrape time.
type reportCollector struct{ m *Metrics }

func (c reportCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.m.ready, c.m.checkStatus, c.m.fwRule, c.m.nmDevice, c.m.networkdLink, c.m.linkUp, c.m.lastReconcile} {
		ch <- d
	}
}

func (c reportCollector) Collect(ch chan<- prometheus.Metric) {
	m := c.m
	m.mu.Lock()
	rep, when := m.last, m.when
	m.mu.Unlock()
	if rep == nil {
		return // no pass yet: absent rather than a misleading 0
	}
	ch <- prometheus.MustNewConstMetric(m.ready, prometheus.GaugeValue, boolValue(rep.Ready))
	ch <- prometheus.MustNewConstMetric(m.lastReconcile, prometheus.GaugeValue, float64(when.UnixNano())/1e9)

	devices := map[string]bool{}
	networkdLinks := map[string]bool{}
	linksUp := map[string]bool{}
	for _, e := range rep.Entries {
		for _, s := range statuses {
			ch <- prometheus.MustNewConstMetric(m.checkStatus, prometheus.GaugeValue, boolValue(e.Status == s), e.Name, string(s))
		}
		if rule := e.Facts[check.FactRule]; rule != "" && e.Status != check.Disabled {
			zone := e.Facts[check.FactZone]
			ch <- prometheus.MustNewConstMetric(m.fwRule, prometheus.GaugeValue, boolValue(e.Facts[check.FactRuntime] == "true"), zone, rule, "runtime")
			ch <- prometheus.MustNewConstMetric(m.fwRule, prometheus.GaugeValue, boolValue(e.Facts[check.FactPermanent] == "true"), zone, rule, "permanent")
		}
		for k, v := range e.Facts {
			if dev, ok := strings.CutPrefix(k, check.FactUnmanagedPrefix); ok {
				and(devices, aggregate(dev), v == "true")
			}
			if link, ok := strings.CutPrefix(k, check.FactNetworkdUnmanagedPrefix); ok {
				and(networkdLinks, aggregate(link), v == "true")
			}
		}
		if link := e.Facts[check.FactLink]; link != "" {
			and(linksUp, aggregate(link), e.Facts[check.FactUp] == "true")
		}
	}
	for dev, ok := range devices {
		ch <- prometheus.MustNewConstMetric(m.nmDevice, prometheus.GaugeValue, boolValue(ok), dev)
	}
	for link, ok := range networkdLinks {
		ch <- prometheus.MustNewConstMetric(m.networkdLink, prometheus.GaugeValue, boolValue(ok), link)
	}
	for link, ok := range linksUp {
		ch <- prometheus.MustNewConstMetric(m.linkUp, prometheus.GaugeValue, boolValue(ok), link)
	}
}

// aggregate keeps label cardinality bounded: one series for all workload veths.
func aggregate(name string) string {
	if strings.HasPrefix(name, calico.WorkloadPrefix) {
		return calico.WorkloadPrefix + "*"
	}
	return name
}

// and folds v into m[k] so that an aggregate is 1 only when every member is.
func and(m map[string]bool, k string, v bool) {
	if old, seen := m[k]; seen {
		v = v && old
	}
	m[k] = v
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
