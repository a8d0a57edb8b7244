package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/calico-prep/calico-prep/pkg/plan"
	"github.com/calico-prep/calico-prep/test/calicotest"
	"github.com/calico-prep/calico-prep/test/kubetest"
)

// TestPlanReadsTheCluster: without --service-cidr, --kubeadm-pod-subnet and --pod-cidr, agent
// plan takes them from kubeadm's ClusterConfiguration and, with Calico installed, from its
// enabled IP pool and its encapsulation; each is named on stderr; a flag still wins.
func TestPlanReadsTheCluster(t *testing.T) {
	c := kubetest.Start(t)
	createNodes(t, c, planHosts(4), true)
	calicotest.Install(t, c, calicotest.V1)
	calicotest.Apply(t, c, `
apiVersion: v1
kind: ConfigMap
metadata: {name: kubeadm-config, namespace: kube-system}
data:
  ClusterConfiguration: |
    apiVersion: kubeadm.k8s.io/v1beta4
    kind: ClusterConfiguration
    networking:
      podSubnet: 10.32.0.0/12
      serviceSubnet: 10.96.0.0/12
---
apiVersion: crd.projectcalico.org/v1
kind: IPPool
metadata: {name: default-ipv4-ippool}
spec: {cidr: 10.40.0.0/16, vxlanMode: Always}
---
apiVersion: crd.projectcalico.org/v1
kind: IPPool
metadata: {name: retired}
spec: {cidr: 10.41.0.0/16, ipipMode: Always, disabled: true}
`)
	env := map[string]string{"KUBECONFIG": c.Kubeconfig}
	decode := func(out string) plan.Plan {
		t.Helper()
		var p plan.Plan
		if err := json.Unmarshal([]byte(out), &p); err != nil {
			t.Fatalf("decode plan: %v\n%s", err, out)
		}
		return p
	}

	out, stderr, code := runArgs(t, env, "plan", "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{
		"agent: plan: service CIDR 10.96.0.0/12 from kube-system/kubeadm-config",
		"agent: plan: kubeadm podSubnet 10.32.0.0/12 from kube-system/kubeadm-config",
		"agent: plan: pod CIDR 10.40.0.0/16 from IPPool default-ipv4-ippool (Calico is installed): the plan checks it on every node",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	p := decode(out)
	if len(p.Pools) != 1 || p.Pools[0].CIDR.String() != "10.40.0.0/16" || p.Encapsulation != "vxlan" || p.BGP {
		t.Errorf("plan pools %+v, encapsulation %s, BGP %t: want Calico's pool, VXLAN without BGP", p.Pools, p.Encapsulation, p.BGP)
	}

	// The flags win.
	out, stderr, code = runArgs(t, env, "plan", "-o", "json", "--pod-cidr=10.44.0.0/16", "--service-cidr=10.100.0.0/16")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if strings.Contains(stderr, "from IPPool") || strings.Contains(stderr, "service CIDR") {
		t.Errorf("stderr with the flags given:\n%s", stderr)
	}
	if p := decode(out); len(p.Pools) != 1 || p.Pools[0].CIDR.String() != "10.44.0.0/16" || p.Encapsulation != "ipip" {
		t.Errorf("plan with --pod-cidr: pools %+v, encapsulation %s", p.Pools, p.Encapsulation)
	}
}
