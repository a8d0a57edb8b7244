package calicoconfig_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/calico-prep/calico-prep/pkg/calicoconfig"
	"github.com/calico-prep/calico-prep/test/calicotest"
	"github.com/calico-prep/calico-prep/test/kubetest"
)

// wait bounds the waits for a watch to deliver; deliveries take milliseconds, a loaded machine
// running other test binaries beside this one may take seconds.
const wait = 60 * time.Second

// follower collects the states a Watch delivers.
type follower struct {
	mu   sync.Mutex
	last *calicoconfig.State
	ch   chan struct{}
}

func follow(t *testing.T, c *kubetest.Cluster, node string) *follower {
	t.Helper()
	client, err := calicoconfig.New(c.Config(), node, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &follower{ch: make(chan struct{})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for st := range client.Watch(ctx) {
			f.mu.Lock()
			f.last = &st
			close(f.ch)
			f.ch = make(chan struct{})
			f.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return f
}

// await waits until the newest state satisfies cond ("" when it does, else what is wrong).
func (f *follower) await(t *testing.T, what string, cond func(calicoconfig.State) string) calicoconfig.State {
	t.Helper()
	deadline := time.After(wait)
	for {
		f.mu.Lock()
		last, ch := f.last, f.ch
		f.mu.Unlock()
		why := "no state yet"
		if last != nil {
			if why = cond(*last); why == "" {
				return *last
			}
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("%s: not within %s: %s", what, wait, why)
		}
	}
}

func synced(group string, more func(calicoconfig.State) string) func(calicoconfig.State) string {
	return func(st calicoconfig.State) string {
		switch {
		case !st.Synced:
			return "not synced"
		case st.Group != group:
			return fmt.Sprintf("group %q, want %q", st.Group, group)
		case more != nil:
			return more(st)
		}
		return ""
	}
}

func port(p *uint16) string {
	if p == nil {
		return "unset"
	}
	return fmt.Sprint(*p)
}

// TestWatchFollowsCalicosResources runs the client against a real apiserver while Calico's
// CRDs arrive: none at first (synced, no group), then projectcalico.org/v3 as CRDs, whose
// resources are followed live (the per-node FelixConfiguration beside the default, pools,
// BGP, an invalid value that keeps the last valid version), then crd.projectcalico.org/v1,
// which is preferred, then the operator's Installation, Typha's Service and calico-config.
func TestWatchFollowsCalicosResources(t *testing.T) {
	c := kubetest.Start(t)
	f := follow(t, c, "node-a")

	f.await(t, "synced without Calico", synced("", nil))

	calicotest.Install(t, c, calicotest.V3)
	f.await(t, "the v3 group once its CRDs are established", synced("projectcalico.org/v3", nil))

	calicotest.Apply(t, c, `
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: default}
spec: {vxlanPort: 8472, wireguardEnabled: true, prometheusMetricsEnabled: true}
---
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: node.node-a}
spec: {vxlanPort: 4790}
---
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: node.node-b}
spec: {vxlanPort: 4791}
---
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec: {listenPort: 1179}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pool-a}
spec: {cidr: 10.244.0.0/16, vxlanMode: Always}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pool-off}
spec: {cidr: 10.245.0.0/16, disabled: true}
`)
	f.await(t, "v3 resources", synced("projectcalico.org/v3", func(st calicoconfig.State) string {
		switch {
		case st.FelixDefault == nil || port(st.FelixDefault.VXLANPort) != "8472" || st.FelixDefault.WireGuard == nil || !*st.FelixDefault.WireGuard:
			return fmt.Sprintf("FelixConfiguration default %+v", st.FelixDefault)
		case st.FelixNode == nil || port(st.FelixNode.VXLANPort) != "4790":
			return fmt.Sprintf("FelixConfiguration node.node-a %+v (node.node-b must not be read)", st.FelixNode)
		case port(st.BGPListenPort) != "1179":
			return "BGP listen port " + port(st.BGPListenPort)
		case len(st.Pools) != 2:
			return fmt.Sprintf("pools %+v", st.Pools)
		}
		return ""
	}))

	// An invalid value changes nothing: the last valid version stays, and the problem is named.
	calicotest.Apply(t, c, `
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: default}
spec: {vxlanPort: 70000, wireguardEnabled: false, prometheusMetricsEnabled: true}
`)
	st := f.await(t, "the invalid port reported", synced("projectcalico.org/v3", func(st calicoconfig.State) string {
		if len(st.Problems) == 0 {
			return "no problem reported"
		}
		return ""
	}))
	if want := `FelixConfiguration "default": spec.vxlanPort: 70000 is not a port (want 1-65535); keeping its previous version`; st.Problems[0] != want {
		t.Errorf("problem = %q, want %q", st.Problems[0], want)
	}
	if port(st.FelixDefault.VXLANPort) != "8472" || !*st.FelixDefault.WireGuard {
		t.Errorf("FelixConfiguration default after an invalid update = %+v, want the previous version (8472, WireGuard on)", st.FelixDefault)
	}

	// crd.projectcalico.org/v1 is what manifest and operator installs serve: preferred.
	calicotest.Install(t, c, calicotest.V1)
	f.await(t, "the v1 group preferred", synced("crd.projectcalico.org/v1", func(st calicoconfig.State) string {
		if st.FelixDefault != nil || len(st.Pools) != 0 || len(st.Problems) != 0 {
			return fmt.Sprintf("still v3's resources: felix %+v pools %+v problems %q", st.FelixDefault, st.Pools, st.Problems)
		}
		return ""
	}))
	calicotest.Apply(t, c, `
apiVersion: crd.projectcalico.org/v1
kind: IPPool
metadata: {name: default-ipv4-ippool}
spec: {cidr: 10.250.0.0/16, ipipMode: Always}
`)
	f.await(t, "v1 pool", synced("crd.projectcalico.org/v1", func(st calicoconfig.State) string {
		if len(st.Pools) != 1 || st.Pools[0].CIDR.String() != "10.250.0.0/16" || st.Pools[0].Encapsulation != "ipip" {
			return fmt.Sprintf("pools %+v", st.Pools)
		}
		return ""
	}))

	// The operator's Installation, Typha's Service, calico.yaml's calico-config.
	calicotest.Install(t, c, calicotest.Operator, "installations.operator.tigera.io")
	c.Kubectl(t, "create", "namespace", "calico-system")
	calicotest.Apply(t, c, `
apiVersion: operator.tigera.io/v1
kind: Installation
metadata: {name: default}
spec:
  nodeMetricsPort: 9191
  typhaMetricsPort: 9193
  calicoNetwork:
    bgp: Disabled
    linuxDataplane: BPF
    nodeAddressAutodetectionV4: {interface: "ens.*"}
---
apiVersion: v1
kind: Service
metadata: {name: calico-typha, namespace: calico-system}
spec:
  ports: [{name: calico-typha, port: 5473, targetPort: 5474}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: calico-config, namespace: kube-system}
data: {calico_backend: vxlan}
`)
	st = f.await(t, "operator, Typha, calico-config", synced("crd.projectcalico.org/v1", func(st calicoconfig.State) string {
		switch {
		case st.Installation == nil || st.Installation.Method4 != "interface=ens.*" || st.Installation.BGP == nil || *st.Installation.BGP:
			return fmt.Sprintf("installation %+v", st.Installation)
		case st.Typha == nil || st.Typha.Port != 5474 || st.Typha.Namespace != "calico-system":
			return fmt.Sprintf("typha %+v", st.Typha)
		case st.CalicoBackend != "vxlan":
			return "calico_backend " + st.CalicoBackend
		}
		return ""
	}))
	if port(st.Installation.NodeMetricsPort) != "9191" || port(st.Installation.TyphaMetricsPort) != "9193" || st.Installation.Dataplane != "BPF" {
		t.Errorf("installation = %+v", st.Installation)
	}

	// Calico removed: its resources are gone, the agent is back on its flags.
	calicotest.Uninstall(t, c, calicotest.V1)
	f.await(t, "back to v3 once v1's CRDs are deleted", synced("projectcalico.org/v3", nil))
	calicotest.Uninstall(t, c, calicotest.V3)
	f.await(t, "no group once every Calico CRD is deleted", synced("", func(st calicoconfig.State) string {
		if st.Pools != nil || st.FelixDefault != nil {
			return fmt.Sprintf("stale resources: pools %+v felix %+v", st.Pools, st.FelixDefault)
		}
		return ""
	}))
}

// TestWatchRequests counts the client's requests in the apiserver's audit log: with Calico's
// resources present, one watch per resource (single-object watches where one object is meant)
// where the apiserver streams a watch's initial state, else a list and a watch; then, while
// nothing changes, none at all.
func TestWatchRequests(t *testing.T) {
	for _, tt := range []struct {
		name  string
		args  []string
		verbs []string
	}{
		{"watch-list", nil, []string{"watch"}},
		// The first watch, of the CRDs, learns that the apiserver refuses watch-list; every
		// other one lists and watches from the start.
		{"list and watch (WatchList off, as before Kubernetes 1.32)", []string{"--feature-gates=WatchList=false"}, []string{"list", "watch"}},
	} {
		t.Run(tt.name, func(t *testing.T) { testWatchRequests(t, tt.args, tt.verbs) })
	}
}

func testWatchRequests(t *testing.T, apiserverArgs, verbs []string) {
	refused := len(verbs) - 1 // the refused watch-list of the CRDs, without WatchList
	c := kubetest.StartWith(t, kubetest.Options{APIServerArgs: apiserverArgs})
	calicotest.Install(t, c, calicotest.V1)
	calicotest.Install(t, c, calicotest.Operator, "installations.operator.tigera.io")
	calicotest.Apply(t, c, `
apiVersion: crd.projectcalico.org/v1
kind: FelixConfiguration
metadata: {name: default}
spec: {vxlanPort: 8472}
---
apiVersion: crd.projectcalico.org/v1
kind: IPPool
metadata: {name: default-ipv4-ippool}
spec: {cidr: 10.250.0.0/16, vxlanMode: Always}
`)
	requests := func(since time.Time) map[string]int {
		out := map[string]int{}
		seen := map[string]bool{}
		for _, ev := range c.AuditEvents(t, kubetest.AdminUser) {
			if ev.Time.Before(since) || ev.UserAgent != "calico-prep" || seen[ev.AuditID] {
				continue
			}
			seen[ev.AuditID] = true
			what := ev.Verb + " " + ev.Resource
			if ev.Name != "" {
				what += "/" + ev.Name
			}
			if ev.Namespace != "" {
				what += " in " + ev.Namespace
			}
			if ev.Code == http.StatusTooManyRequests {
				// A CRD's watch cache answers 429 until it is initialized, just after the
				// CRD is created; the client retries a second later.
				continue
			}
			if ev.Code >= 400 {
				what += fmt.Sprintf(" (%d)", ev.Code)
			}
			out[what]++
		}
		return out
	}
	start := time.Now()
	f := follow(t, c, "node-a")
	f.await(t, "synced", synced("crd.projectcalico.org/v1", nil))
	want := map[string]int{}
	for _, r := range []string{"customresourcedefinitions", "services/calico-typha", "configmaps/calico-config in kube-system",
		"felixconfigurations/default", "felixconfigurations/node.node-a", "bgpconfigurations/default", "ippools", "installations/default"} {
		for _, v := range verbs {
			want[v+" "+r] = 1
		}
	}
	if refused > 0 {
		want["watch customresourcedefinitions (422)"] = refused
	}
	var got map[string]int
	deadline := time.Now().Add(wait)
	for { // a watch is logged when its response starts, which may be just after the state
		if got = requests(start); fmt.Sprint(got) == fmt.Sprint(want) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("requests at start:\n got %v\nwant %v", got, want)
	}
	t.Logf("%d requests at start", len(got))

	quiet := time.Now()
	time.Sleep(5 * time.Second)
	if idle := requests(quiet); len(idle) > 0 {
		t.Errorf("requests while nothing changed: %v", idle)
	}
}
