package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	"github.com/calico-prep/calico-prep/test/calicotest"
	"github.com/calico-prep/calico-prep/test/kubetest"
)

// BenchmarkFelixConfigurationToPort is the time from a change of FelixConfiguration default's
// vxlanPort (taken just before the patch is sent to the apiserver) to firewalld on the node
// having the new port open: at runtime (firewalld's PortAdded signal) and permanently (the
// zone's Updated signal that follows). Each iteration flips the port and waits until the old
// one is closed again before the next.
func BenchmarkFelixConfigurationToPort(b *testing.B) {
	c := kubetest.Start(b)
	calicotest.Install(b, c, calicotest.V1)
	calicotest.Apply(b, c, `
apiVersion: crd.projectcalico.org/v1
kind: FelixConfiguration
metadata: {name: default}
spec: {vxlanPort: 4790}
`)
	e := setup(b, c, "e2e-bench-felix")
	fw := dialBus(b, e.node)
	zone := fw.defaultZone(b)
	w := e.watchNode()
	a := startAgentEnv(b, e.node, calicoEnv, e.calicoArgs()...)
	w.waitFor(b, wait, "condition True", conditionIs(corev1.ConditionTrue, "Prepared", ""))
	fw.waitPorts(b, zone, []port{{"4790", "udp"}}, nil)
	a.settle(b)

	signals := make(chan *dbus.Signal, 64)
	fw.conn.Signal(signals)
	for _, m := range []struct{ iface, member string }{{fwName + ".zone", "PortAdded"}, {fwName + ".zone", "PortRemoved"}, {fwName + ".config.zone", "Updated"}} {
		if err := fw.conn.AddMatchSignal(dbus.WithMatchInterface(m.iface), dbus.WithMatchMember(m.member)); err != nil {
			b.Fatal(err)
		}
	}
	dyn, err := dynamic.NewForConfig(c.Config())
	if err != nil {
		b.Fatal(err)
	}
	felix := dyn.Resource(schema.GroupVersionResource{Group: "crd.projectcalico.org", Version: "v1", Resource: "felixconfigurations"})
	// await returns when the signal that match accepts arrives.
	await := func(what string, match func(*dbus.Signal) bool) time.Time {
		deadline := time.After(wait)
		for {
			select {
			case s := <-signals:
				if match(s) {
					return time.Now()
				}
			case <-deadline:
				b.Fatalf("no %s within %s", what, wait)
			}
		}
	}
	portSignal := func(member, port string) func(*dbus.Signal) bool {
		return func(s *dbus.Signal) bool {
			return s.Name == fwName+".zone."+member && len(s.Body) >= 3 && s.Body[0] == zone && s.Body[1] == port && s.Body[2] == "udp"
		}
	}
	permanent := func(s *dbus.Signal) bool { return s.Name == fwName+".config.zone.Updated" }

	var toRuntime, toPermanent []time.Duration
	ports := []string{"4790", "8472"}
	for i := 0; b.Loop(); i++ {
		from, to := ports[i%2], ports[(i+1)%2]
		patch := fmt.Appendf(nil, `{"spec":{"vxlanPort":%s}}`, to)
		start := time.Now()
		if _, err := felix.Patch(context.Background(), "default", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			b.Fatal(err)
		}
		rt := await("PortAdded "+to, portSignal("PortAdded", to))
		perm := await("permanent zone update", permanent)
		toRuntime = append(toRuntime, rt.Sub(start))
		toPermanent = append(toPermanent, perm.Sub(start))
		b.StopTimer()
		await("PortRemoved "+from, portSignal("PortRemoved", from))
		a.settle(b)
		for len(signals) > 0 {
			<-signals
		}
		b.StartTimer()
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(len(toRuntime)), "samples")
	b.ReportMetric(ms(quantile(toRuntime, 0.5)), "runtime-median-ms")
	b.ReportMetric(ms(quantile(toRuntime, 0.99)), "runtime-p99-ms")
	b.ReportMetric(ms(quantile(toPermanent, 0.5)), "permanent-median-ms")
	b.ReportMetric(ms(quantile(toPermanent, 0.99)), "permanent-p99-ms")
}
