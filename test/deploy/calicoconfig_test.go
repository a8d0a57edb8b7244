package deploy

import (
	"context"
	"log/slog"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	"github.com/calico-prep/calico-prep/pkg/calicoconfig"
	"github.com/calico-prep/calico-prep/test/calicotest"
	"github.com/calico-prep/calico-prep/test/kubetest"
)

// TestRBACReadsCalicoConfigOnly: with deploy/base's RBAC, the agent's ServiceAccount reads all
// of Calico's configuration it follows (the client syncs, with no request refused), and can
// neither change any of it nor read anything beside it.
func TestRBACReadsCalicoConfigOnly(t *testing.T) {
	c := kubetest.Start(t) // its Calico resources would change what other tests' agents open
	applyBase(t, c)
	calicotest.Install(t, c, calicotest.V1)
	calicotest.Install(t, c, calicotest.V3)
	calicotest.Install(t, c, calicotest.Operator, "installations.operator.tigera.io")
	c.Kubectl(t, "create", "namespace", "calico-system")
	calicotest.Apply(t, c, `
apiVersion: crd.projectcalico.org/v1
kind: FelixConfiguration
metadata: {name: default}
spec: {vxlanPort: 8472}
---
apiVersion: crd.projectcalico.org/v1
kind: IPPool
metadata: {name: rbac-pool}
spec: {cidr: 10.244.0.0/16, vxlanMode: Always}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: calico-config, namespace: kube-system}
data: {calico_backend: vxlan}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: someone-elses, namespace: kube-system}
data: {secret: "no"}
---
apiVersion: v1
kind: Service
metadata: {name: calico-typha, namespace: calico-system}
spec: {ports: [{name: calico-typha, port: 5473}]}
`)
	cfg := agentRESTConfig(t, c, "")
	started := time.Now()

	// Everything the agent reads, it may read.
	client, err := calicoconfig.New(cfg, "rbac-node", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var last calicoconfig.State
	for st := range client.Watch(ctx) {
		last = st
		if st.Synced && st.Group == "crd.projectcalico.org/v1" && st.Typha != nil && st.CalicoBackend == "vxlan" && st.FelixDefault != nil {
			cancel()
		}
	}
	if !last.Synced || last.Typha == nil || last.CalicoBackend != "vxlan" || last.FelixDefault == nil {
		t.Fatalf("the agent's ServiceAccount did not read Calico's configuration: %+v", last)
	}
	user := "system:serviceaccount:" + agentNamespace + ":" + agentServiceAccount
	for _, ev := range c.AuditEvents(t, user) {
		if !ev.Time.Before(started) && ev.Code == 403 {
			t.Errorf("refused: %s %s", ev.Verb, ev.RequestURI)
		}
	}

	// Nothing of Calico's may it change, nor read beside what it follows.
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	gvr := func(group, version, resource string) schema.GroupVersionResource {
		return schema.GroupVersionResource{Group: group, Version: version, Resource: resource}
	}
	obj := func(apiVersion, kind, name, namespace string, spec map[string]any) *unstructured.Unstructured {
		u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": apiVersion, "kind": kind, "spec": spec}}
		u.SetName(name)
		u.SetNamespace(namespace)
		return u
	}
	felix := dyn.Resource(gvr("crd.projectcalico.org", "v1", "felixconfigurations"))
	patch := []byte(`{"spec":{"vxlanPort":4789}}`)
	for _, tc := range []struct {
		name string
		do   func(context.Context) error
	}{
		{"patch FelixConfiguration default", func(ctx context.Context) error {
			_, err := felix.Patch(ctx, "default", types.MergePatchType, patch, metav1.PatchOptions{})
			return err
		}},
		{"create a FelixConfiguration (v3 CRDs)", func(ctx context.Context) error {
			_, err := dyn.Resource(gvr("projectcalico.org", "v3", "felixconfigurations")).Create(ctx,
				obj("projectcalico.org/v3", "FelixConfiguration", "node.rbac-node", "", map[string]any{}), metav1.CreateOptions{})
			return err
		}},
		{"delete an IPPool", func(ctx context.Context) error {
			return dyn.Resource(gvr("crd.projectcalico.org", "v1", "ippools")).Delete(ctx, "rbac-pool", metav1.DeleteOptions{})
		}},
		{"create a BGPConfiguration", func(ctx context.Context) error {
			_, err := dyn.Resource(gvr("crd.projectcalico.org", "v1", "bgpconfigurations")).Create(ctx,
				obj("crd.projectcalico.org/v1", "BGPConfiguration", "default", "", map[string]any{"listenPort": 1179}), metav1.CreateOptions{})
			return err
		}},
		{"create the Installation", func(ctx context.Context) error {
			_, err := dyn.Resource(gvr("operator.tigera.io", "v1", "installations")).Create(ctx,
				obj("operator.tigera.io/v1", "Installation", "default", "", map[string]any{}), metav1.CreateOptions{})
			return err
		}},
		{"patch calico-config", func(ctx context.Context) error {
			_, err := dyn.Resource(gvr("", "v1", "configmaps")).Namespace("kube-system").Patch(ctx, "calico-config", types.MergePatchType,
				[]byte(`{"data":{"calico_backend":"bird"}}`), metav1.PatchOptions{})
			return err
		}},
		{"delete Typha's Service", func(ctx context.Context) error {
			return dyn.Resource(gvr("", "v1", "services")).Namespace("calico-system").Delete(ctx, "calico-typha", metav1.DeleteOptions{})
		}},
		{"get calico-config (only list and watch are granted)", func(ctx context.Context) error {
			_, err := dyn.Resource(gvr("", "v1", "configmaps")).Namespace("kube-system").Get(ctx, "calico-config", metav1.GetOptions{})
			return err
		}},
		{"list every ConfigMap in kube-system", func(ctx context.Context) error {
			_, err := dyn.Resource(gvr("", "v1", "configmaps")).Namespace("kube-system").List(ctx, metav1.ListOptions{})
			return err
		}},
		{"list another ConfigMap by name", func(ctx context.Context) error {
			_, err := dyn.Resource(gvr("", "v1", "configmaps")).Namespace("kube-system").List(ctx, metav1.ListOptions{FieldSelector: "metadata.name=someone-elses"})
			return err
		}},
		{"list every Service", func(ctx context.Context) error {
			_, err := dyn.Resource(gvr("", "v1", "services")).List(ctx, metav1.ListOptions{})
			return err
		}},
		{"list Secrets", func(ctx context.Context) error {
			_, err := dyn.Resource(gvr("", "v1", "secrets")).Namespace("kube-system").List(ctx, metav1.ListOptions{})
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.do(t.Context()); !apierrors.IsForbidden(err) {
				t.Errorf("got %v, want 403 Forbidden", err)
			}
		})
	}
	if u, err := felix.Get(t.Context(), "default", metav1.GetOptions{}); err == nil {
		t.Errorf("get FelixConfiguration default: allowed (%s), want only list and watch", u.GetName())
	}
}
