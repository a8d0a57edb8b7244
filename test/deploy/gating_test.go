package deploy

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	"sigs.k8s.io/yaml"

	"github.com/calico-prep/calico-prep/pkg/nodestatus"
)

// prometheusOperator is the prometheus-operator release whose CRDs validate the monitoring
// objects. The Go module proxy serves its main module, and the module holds the CRDs.
const prometheusOperator = "github.com/prometheus-operator/prometheus-operator@v0.85.0"

// installPrometheusOperatorCRDs installs the PodMonitor and PrometheusRule CRDs of a pinned
// prometheus-operator release into the test apiserver and waits until they serve.
func installPrometheusOperatorCRDs(t *testing.T) {
	t.Helper()
	c := kube.Cluster(t)
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(t.Context(), "go", "mod", "download", "-json", prometheusOperator)
	cmd.Dir = "/" // a plain download: neither this module's go.mod nor a workspace applies
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("go mod download %s: %v\n%s%s", prometheusOperator, err, stdout.String(), stderr.String())
	}
	var mod struct{ Dir string }
	if err := json.Unmarshal(stdout.Bytes(), &mod); err != nil || mod.Dir == "" {
		t.Fatalf("go mod download %s: no module directory in %q (%v)", prometheusOperator, stdout.String(), err)
	}
	for _, crd := range []string{"podmonitors", "prometheusrules"} {
		path := filepath.Join(mod.Dir, "example/prometheus-operator-crd/monitoring.coreos.com_"+crd+".yaml")
		// Server-side: the CRDs exceed the size of client-side apply's annotation.
		c.Kubectl(t, "apply", "--server-side", "--force-conflicts", "-f", path)
		c.Kubectl(t, "wait", "--for=condition=Established", "--timeout=60s", "crd/"+crd+".monitoring.coreos.com")
	}
}

// TestMonitoringObjectsAgainstCRDs validates the PodMonitor, PrometheusRule and dashboard
// ConfigMap, from kustomize and from the chart, against prometheus-operator's real CRDs.
func TestMonitoringObjectsAgainstCRDs(t *testing.T) {
	installPrometheusOperatorCRDs(t)
	c := kube.Cluster(t)
	ensureNamespace(t, c)
	for name, m := range map[string]string{
		"kustomize":        kustomize(t, "deploy/monitoring"),
		"helm":             helmTemplate(t, "--set", "monitoring.enabled=true"),
		"helm every value": helmTemplate(t, "-f", "test/deploy/testdata/values-all.yaml"),
	} {
		t.Run(name, func(t *testing.T) {
			objs := objects(t, m)
			find(t, objs, "PodMonitor", "calico-prep")
			find(t, objs, "PrometheusRule", "calico-prep")
			find(t, objs, "ConfigMap", "calico-prep-dashboard")
			dryRun(t, c, m)
			// The CRDs' schemas prune unknown fields silently; strict validation says so.
			out := c.Kubectl(t, "apply", "--dry-run=server", "--validate=strict", "-f", writeTemp(t, "m.yaml", m))
			if strings.Contains(out, "unknown field") {
				t.Fatalf("unknown fields: %s", out)
			}
		})
	}
}

// readinessAffinity is the node affinity every gating patch must carry: calico-node only on
// nodes whose calico-prep.io/prepared label is "true" (never the live ready label).
func readinessAffinity() *corev1.Affinity {
	return &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
		RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
			NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{{
				Key: nodestatus.LabelPrepared, Operator: corev1.NodeSelectorOpIn, Values: []string{"true"},
			}}}},
		},
	}}
}

// TestCalicoManifestGating builds the calico-manifest overlay over a calico.yaml and checks
// that it adds exactly the readiness affinity to calico-node; then the same patch, as the
// README's `kubectl patch` applies it, against a calico-node stored in the apiserver.
func TestCalicoManifestGating(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"kustomization.yaml", "calico-node-affinity.yaml"} {
		data := readFile(t, filepath.Join("deploy/gating/calico-manifest", f))
		if err := os.WriteFile(filepath.Join(dir, f), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	fixture := readFile(t, "test/deploy/testdata/calico.yaml")
	if err := os.WriteFile(filepath.Join(dir, "calico.yaml"), []byte(fixture), 0o600); err != nil {
		t.Fatal(err)
	}
	got := daemonSet(t, run(t, kubectlBin(t), "kustomize", dir), "calico-node")
	want := daemonSet(t, fixture, "calico-node")
	if !reflect.DeepEqual(got.Spec.Template.Spec.Affinity, readinessAffinity()) {
		t.Fatalf("overlay affinity %+v, want %+v", got.Spec.Template.Spec.Affinity, readinessAffinity())
	}
	got.Spec.Template.Spec.Affinity = nil
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("overlay changed more than the affinity:\n%+v\nwant\n%+v", got, want)
	}

	c := kube.Cluster(t)
	c.Kubectl(t, "apply", "-f", filepath.Join(dir, "calico.yaml"))
	out := c.Kubectl(t, "-n", "kube-system", "patch", "daemonset", "calico-node", "--dry-run=server", "-o", "json",
		"--patch-file", filepath.Join(repoRoot(t), "deploy/gating/calico-manifest/calico-node-affinity.yaml"))
	var patched appsv1.DaemonSet
	if err := json.Unmarshal([]byte(out), &patched); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(patched.Spec.Template.Spec.Affinity, readinessAffinity()) {
		t.Fatalf("kubectl patch: affinity %+v", patched.Spec.Template.Spec.Affinity)
	}
	// calico-node tolerates every NoSchedule taint: that is why gating uses affinity, and it
	// must stay so for the NodeReadinessRule's taint not to hold back calico-node.
	if !slices.ContainsFunc(patched.Spec.Template.Spec.Tolerations, func(tl corev1.Toleration) bool {
		return tl.Operator == corev1.TolerationOpExists && tl.Effect == corev1.TaintEffectNoSchedule && tl.Key == ""
	}) {
		t.Fatal("fixture lost calico-node's NoSchedule toleration")
	}
}

// installation is the part of the tigera-operator's Installation (operator.tigera.io/v1) that the
// gating example sets; the operator's API module is not served by the Go module proxy, so its
// path is spelled out here from the operator's API reference and decoded strictly.
type installation struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		CalicoNodeDaemonSet struct {
			Spec struct {
				Template struct {
					Spec struct {
						Affinity *corev1.Affinity `json:"affinity"`
					} `json:"spec"`
				} `json:"template"`
			} `json:"spec"`
		} `json:"calicoNodeDaemonSet"`
	} `json:"spec"`
}

func TestTigeraOperatorGating(t *testing.T) {
	var in installation
	if err := yaml.UnmarshalStrict([]byte(readFile(t, "deploy/gating/tigera-operator/installation.yaml")), &in); err != nil {
		t.Fatal(err)
	}
	if in.APIVersion != "operator.tigera.io/v1" || in.Kind != "Installation" || in.Metadata.Name != "default" {
		t.Fatalf("not the operator's Installation default: %+v", in.TypeMeta)
	}
	if got := in.Spec.CalicoNodeDaemonSet.Spec.Template.Spec.Affinity; !reflect.DeepEqual(got, readinessAffinity()) {
		t.Fatalf("Installation affinity %+v, want %+v", got, readinessAffinity())
	}
}

// nodeReadinessRule is readiness.node.x-k8s.io/v1alpha1 NodeReadinessRule's spec as
// kubernetes-sigs/node-readiness-controller defines it. Its module is not served by the Go
// module proxy, so the fields are spelled out here and decoded strictly, and the CRD's
// validation rules that the example could break are checked below.
type nodeReadinessRule struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        metav1.ObjectMeta `json:"metadata"`
	Spec            struct {
		Conditions []struct {
			Type           string                 `json:"type"`
			RequiredStatus corev1.ConditionStatus `json:"requiredStatus"`
			DefaultStatus  corev1.ConditionStatus `json:"defaultStatus,omitempty"`
		} `json:"conditions"`
		EnforcementMode string               `json:"enforcementMode"`
		Taint           corev1.Taint         `json:"taint"`
		NodeSelector    metav1.LabelSelector `json:"nodeSelector"`
		ConditionPolicy string               `json:"conditionPolicy,omitempty"`
		DryRun          bool                 `json:"dryRun,omitempty"`
	} `json:"spec"`
}

func TestNodeReadinessRule(t *testing.T) {
	var r nodeReadinessRule
	if err := yaml.UnmarshalStrict([]byte(readFile(t, "deploy/gating/node-readiness-controller/nodereadinessrule.yaml")), &r); err != nil {
		t.Fatal(err)
	}
	s := r.Spec
	taintName := regexp.MustCompile(`^readiness\.k8s\.io/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)
	sel, err := metav1.LabelSelectorAsSelector(&s.NodeSelector)
	checks := []struct {
		name string
		ok   bool
	}{
		{"kind", r.APIVersion == "readiness.node.x-k8s.io/v1alpha1" && r.Kind == "NodeReadinessRule" && r.Metadata.Name != ""},
		{"keyed on the agent's condition", len(s.Conditions) == 1 && s.Conditions[0].Type == nodestatus.ConditionType &&
			s.Conditions[0].RequiredStatus == corev1.ConditionTrue},
		{"enforcement mode continuous", s.EnforcementMode == "continuous"},
		{"taint key under readiness.k8s.io/ (the CRD's rule)", taintName.MatchString(s.Taint.Key) && len(strings.Split(s.Taint.Key, "/")[1]) <= 63},
		{"taint value at most 63 characters", len(s.Taint.Value) <= 63},
		{"taint effect NoSchedule", s.Taint.Effect == corev1.TaintEffectNoSchedule},
		{"non-empty valid node selector", err == nil && !sel.Empty()},
	}
	for _, ch := range checks {
		if !ch.ok {
			t.Errorf("NodeReadinessRule: want %s: %+v", ch.name, r)
		}
	}
	// The agent's own DaemonSet must not be held back by the taint it reports through.
	ds := daemonSet(t, kustomize(t, "deploy/base"), "calico-prep")
	tolerated := slices.ContainsFunc(ds.Spec.Template.Spec.Tolerations, func(tl corev1.Toleration) bool { return tl.ToleratesTaint(klog.Background(), &s.Taint, false) })
	if !tolerated {
		t.Errorf("calico-prep does not tolerate the rule's taint %v", s.Taint)
	}
}
