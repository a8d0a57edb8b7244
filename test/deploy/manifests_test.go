package deploy

import (
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/calico-prep/calico-prep/pkg/calico"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/calico-prep/calico-prep/pkg/config"
	"github.com/calico-prep/calico-prep/test/kubetest"
)

// ensureNamespace creates the agent's namespace for real, so that the namespaced objects of a
// server-side dry run have somewhere to go (a dry-run Namespace is not kept).
func ensureNamespace(t testing.TB, c *kubetest.Cluster) {
	t.Helper()
	c.Kubectl(t, "apply", "-f", filepath.Join(repoRoot(t), "deploy/base/namespace.yaml"))
}

// dryRun asks the apiserver to accept every object of manifest without keeping any.
func dryRun(t testing.TB, c *kubetest.Cluster, manifest string) {
	t.Helper()
	c.Kubectl(t, "apply", "--dry-run=server", "-f", writeTemp(t, "manifest.yaml", manifest))
}

func TestManifestsAcceptedByAPIServer(t *testing.T) {
	c := kube.Cluster(t)
	ensureNamespace(t, c)
	cases := []struct {
		name     string
		manifest func(t *testing.T) string
		kinds    []string // the kinds it must hold, so a broken render cannot pass empty
	}{
		{"kustomize base", func(t *testing.T) string { return kustomize(t, "deploy/base") },
			[]string{"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
				"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "DaemonSet"}},
		{"kustomize cleanup", func(t *testing.T) string { return kustomize(t, "deploy/cleanup") },
			[]string{"DaemonSet"}},
		{"helm defaults", func(t *testing.T) string { return helmTemplate(t) },
			[]string{"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
				"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "DaemonSet"}},
		{"helm every value", func(t *testing.T) string {
			return helmTemplate(t, "-f", "test/deploy/testdata/values-all.yaml", "--set", "monitoring.enabled=false")
		}, []string{"DaemonSet"}},
		{"helm without admission policy", func(t *testing.T) string {
			return helmTemplate(t, "--set", "admissionPolicy.enabled=false")
		}, []string{"DaemonSet"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := tc.manifest(t)
			var kinds []string
			for _, o := range objects(t, m) {
				kinds = append(kinds, o.GetKind())
			}
			for _, k := range tc.kinds {
				if !slices.Contains(kinds, k) {
					t.Fatalf("render holds no %s (holds %v)", k, kinds)
				}
			}
			dryRun(t, c, m)
		})
	}
}

// TestPodNeedsPrivilegedNamespace shows why the namespace carries the privileged Pod Security
// label: the agent's pod (host network, host paths) is admitted there and refused where
// baseline is enforced.
func TestPodNeedsPrivilegedNamespace(t *testing.T) {
	c := kube.Cluster(t)
	ensureNamespace(t, c)
	c.Kubectl(t, "apply", "-f", filepath.Join(repoRoot(t), "deploy/base/serviceaccount.yaml"))
	ds := daemonSet(t, kustomize(t, "deploy/base"), "calico-prep")
	pod := func(ns string) string {
		p := corev1.Pod{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
			ObjectMeta: ds.Spec.Template.ObjectMeta,
			Spec:       ds.Spec.Template.Spec,
		}
		p.Name, p.Namespace = "calico-prep-probe", ns
		data, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
	c.Kubectl(t, "apply", "--dry-run=server", "-f", writeTemp(t, "pod.json", pod("calico-prep")))

	baseline := "calico-prep-baseline"
	c.Kubectl(t, "apply", "-f", writeTemp(t, "baseline.yaml", `apiVersion: v1
kind: Namespace
metadata:
  name: `+baseline+`
  labels:
    pod-security.kubernetes.io/enforce: baseline
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: calico-prep
  namespace: `+baseline+`
`))
	_, err := c.TryKubectl(t, "apply", "--dry-run=server", "-f", writeTemp(t, "pod.json", pod(baseline)))
	if err == nil || !strings.Contains(err.Error(), "violates PodSecurity") || !strings.Contains(err.Error(), "host namespaces") {
		t.Fatalf("pod in a baseline namespace: want a PodSecurity refusal naming host namespaces, got %v", err)
	}
}

// TestHelmLint runs helm lint --strict; INFO lines (a missing icon) are allowed, warnings are not.
func TestHelmLint(t *testing.T) {
	for _, args := range [][]string{
		nil,
		{"--set", "monitoring.enabled=true"},
		{"-f", "test/deploy/testdata/values-all.yaml"},
	} {
		t.Run(strings.Join(append([]string{"defaults"}, args...), " "), func(t *testing.T) {
			out := run(t, helmBin(t), append([]string{"lint", "--strict", "--kube-version", kubeVersion, "deploy/helm/calico-prep"}, args...)...)
			if strings.Contains(out, "[WARNING]") || strings.Contains(out, "[ERROR]") || !strings.Contains(out, "0 chart(s) failed") {
				t.Fatalf("helm lint:\n%s", out)
			}
		})
	}
}

// helmOnlyLabels are the labels only a Helm release carries.
var helmOnlyLabels = []string{"helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/version"}

// normalize keys objects by kind, namespace and name, without Helm's own labels.
func normalize(t testing.TB, objs []*unstructured.Unstructured) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	for _, o := range objs {
		o = o.DeepCopy()
		strip := func(fields ...string) {
			labels, _, _ := unstructured.NestedStringMap(o.Object, fields...)
			if labels == nil {
				return
			}
			for _, l := range helmOnlyLabels {
				delete(labels, l)
			}
			if err := unstructured.SetNestedStringMap(o.Object, labels, fields...); err != nil {
				t.Fatal(err)
			}
		}
		strip("metadata", "labels")
		strip("spec", "template", "metadata", "labels")
		key := fmt.Sprintf("%s %s %s/%s", o.GetAPIVersion(), o.GetKind(), o.GetNamespace(), o.GetName())
		if _, dup := out[key]; dup {
			t.Fatalf("%s rendered twice", key)
		}
		out[key] = o.Object
	}
	return out
}

// TestHelmMatchesKustomize renders the chart with default values and compares it with the
// kustomize base, object by object; the chart leaves the Namespace to `helm install
// --create-namespace` (a chart that holds its own namespace cannot record its release there).
func TestHelmMatchesKustomize(t *testing.T) {
	cases := []struct {
		name      string
		kustomize []string
		helm      []string
	}{
		{"defaults", []string{"deploy/base"}, nil},
		{"monitoring", []string{"deploy/base", "deploy/monitoring"}, []string{"--set", "monitoring.enabled=true"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var kobjs []*unstructured.Unstructured
			for _, dir := range tc.kustomize {
				for _, o := range objects(t, kustomize(t, dir)) {
					if o.GetKind() != "Namespace" {
						kobjs = append(kobjs, o)
					}
				}
			}
			want := normalize(t, kobjs)
			got := normalize(t, objects(t, helmTemplate(t, tc.helm...)))
			if !slices.Equal(slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want))) {
				t.Fatalf("helm renders\n  %s\nkustomize renders\n  %s",
					strings.Join(slices.Sorted(maps.Keys(got)), "\n  "), strings.Join(slices.Sorted(maps.Keys(want)), "\n  "))
			}
			for key, w := range want {
				if !reflect.DeepEqual(got[key], w) {
					g, _ := yaml.Marshal(got[key])
					k, _ := yaml.Marshal(w)
					t.Errorf("%s differs:\nhelm:\n%s\nkustomize:\n%s", key, g, k)
				}
			}
		})
	}
}

// agentConfig parses a container's args and env with the agent's own configuration parser, the
// way `agent run` does. hostRoot stands in for --host-root, which must exist here.
func agentConfig(t testing.TB, c corev1.Container, nodeName, hostRoot string) (config.Config, map[string]string) {
	t.Helper()
	fs := flag.NewFlagSet("agent run", flag.ContinueOnError)
	load := config.Flags(fs)
	// The flags `agent run` has beside the configuration (cmd/agent's hostFlags).
	fs.String("log-format", "text", "")
	fs.String("log-level", "info", "")
	fs.String("o", "table", "")
	args := slices.Clone(c.Args)
	for i, a := range args {
		if strings.HasPrefix(a, "--host-root=") {
			args[i] = "--host-root=" + hostRoot
		}
	}
	if err := fs.Parse(args); err != nil {
		t.Fatalf("parse args %q: %v", c.Args, err)
	}
	if fs.NArg() != 0 {
		t.Fatalf("args %q: positional arguments %q", c.Args, fs.Args())
	}
	env := containerEnv(t, c, nodeName)
	cfg, err := load(func(k string) string { return env[k] })
	if err != nil {
		t.Fatalf("configuration from args %q and env %v: %v", c.Args, env, err)
	}
	return cfg, env
}

// containerEnv resolves a container's env as kubelet would on node nodeName.
func containerEnv(t testing.TB, c corev1.Container, nodeName string) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName":
			env[e.Name] = nodeName
		default:
			t.Fatalf("env %s: cannot resolve %+v", e.Name, e.ValueFrom)
		}
	}
	return env
}

func agentContainer(t testing.TB, ds *appsv1.DaemonSet) corev1.Container {
	t.Helper()
	for _, c := range ds.Spec.Template.Spec.Containers {
		if c.Name == "agent" {
			return c
		}
	}
	t.Fatal("DaemonSet has no container agent")
	return corev1.Container{}
}

// TestDaemonSetSettings pins what the issue asks of the DaemonSet and parses its args and env
// with the agent's configuration parser.
func TestDaemonSetSettings(t *testing.T) {
	ds := daemonSet(t, kustomize(t, "deploy/base"), "calico-prep")
	spec := ds.Spec.Template.Spec
	c := agentContainer(t, ds)
	sc := c.SecurityContext

	checks := []struct {
		name string
		ok   bool
	}{
		{"hostNetwork", spec.HostNetwork},
		{"priorityClassName system-node-critical", spec.PriorityClassName == "system-node-critical"},
		{"tolerates every taint", slices.ContainsFunc(spec.Tolerations, func(tl corev1.Toleration) bool {
			return tl.Operator == corev1.TolerationOpExists && tl.Key == "" && tl.Effect == ""
		})},
		{"rolling update", ds.Spec.UpdateStrategy.Type == appsv1.RollingUpdateDaemonSetStrategyType},
		{"runs as root", sc != nil && sc.RunAsUser != nil && *sc.RunAsUser == 0},
		{"not privileged", sc.Privileged != nil && !*sc.Privileged},
		{"no privilege escalation", sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation},
		{"read-only root filesystem", sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem},
		{"drops every capability, adds none", sc.Capabilities != nil && slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) &&
			len(sc.Capabilities.Add) == 0},
		{"RuntimeDefault seccomp", sc.SeccompProfile != nil && sc.SeccompProfile.Type == corev1.SeccompProfileTypeRuntimeDefault},
		{"liveness on /healthz", c.LivenessProbe != nil && c.LivenessProbe.HTTPGet != nil && c.LivenessProbe.HTTPGet.Path == "/healthz"},
		{"readiness on /readyz", c.ReadinessProbe != nil && c.ReadinessProbe.HTTPGet != nil && c.ReadinessProbe.HTTPGet.Path == "/readyz"},
		{"memory request 24Mi", c.Resources.Requests.Memory().Equal(resource.MustParse("24Mi"))},
		{"memory limit 64Mi", c.Resources.Limits.Memory().Equal(resource.MustParse("64Mi"))},
		{"cpu request 10m", c.Resources.Requests.Cpu().Equal(resource.MustParse("10m"))},
		{"scrape annotation", ds.Spec.Template.Annotations["prometheus.io/scrape"] == "true" && ds.Spec.Template.Annotations["prometheus.io/port"] == "9476"},
	}
	for _, ch := range checks {
		if !ch.ok {
			t.Errorf("DaemonSet: want %s", ch.name)
		}
	}

	mounts := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = m
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		volumes[v.Name] = v
	}
	wantMounts := []struct {
		path, host string
		readOnly   bool
		hostType   corev1.HostPathType
	}{
		{"/run/dbus", "/run/dbus", true, ""},
		{"/etc/NetworkManager/conf.d", "/etc/NetworkManager/conf.d", false, corev1.HostPathDirectoryOrCreate},
		{"/etc/systemd", "/etc/systemd", true, ""},
		{"/etc/systemd/network", "/etc/systemd/network", false, corev1.HostPathDirectoryOrCreate},
		{"/etc/systemd/networkd.conf.d", "/etc/systemd/networkd.conf.d", false, corev1.HostPathDirectoryOrCreate},
		{"/host/run/systemd/network", "/run/systemd/network", true, ""},
		{"/host/usr/lib/systemd", "/usr/lib/systemd", true, ""},
		{"/var/lib/calico-prep", "/var/lib/calico-prep", false, corev1.HostPathDirectoryOrCreate},
		{"/host/proc", "/proc", true, ""},
		{"/host/sys", "/sys", true, ""},
		{"/host/lib/modules", "/lib/modules", true, ""},
		{"/host/boot", "/boot", true, ""},
		{"/host/var/lib/calico", "/var/lib/calico", true, ""},
	}
	if len(c.VolumeMounts) != len(wantMounts) {
		t.Errorf("DaemonSet mounts %d volumes, want %d", len(c.VolumeMounts), len(wantMounts))
	}
	for _, w := range wantMounts {
		m, ok := mounts[w.path]
		if !ok {
			t.Errorf("no mount at %s", w.path)
			continue
		}
		v := volumes[m.Name]
		if v.HostPath == nil || v.HostPath.Path != w.host || m.ReadOnly != w.readOnly {
			t.Errorf("mount %s: want host path %s read-only %v, got %+v read-only %v", w.path, w.host, w.readOnly, v.HostPath, m.ReadOnly)
			continue
		}
		if got := ptrValue(v.HostPath.Type); got != w.hostType {
			t.Errorf("mount %s: host path type %q, want %q", w.path, got, w.hostType)
		}
	}

	// The env block holds exactly what the agent reads: every variable its configuration asks
	// for (KUBECONFIG aside: in a pod the in-cluster config is used), plus the bus address.
	asked := map[string]bool{}
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	load := config.Flags(fs)
	_, _ = load(func(k string) string { asked[k] = true; return "" })
	delete(asked, "KUBECONFIG")
	var envNames []string
	for _, e := range c.Env {
		envNames = append(envNames, e.Name)
	}
	want := append(slices.Collect(maps.Keys(asked)), "DBUS_SYSTEM_BUS_ADDRESS")
	sort.Strings(want)
	if got := slices.Sorted(slices.Values(envNames)); !slices.Equal(got, want) {
		t.Errorf("env block %v, want the variables the agent reads %v", got, want)
	}

	cfg, env := agentConfig(t, c, "node-a", t.TempDir())
	if env["DBUS_SYSTEM_BUS_ADDRESS"] != "unix:path=/run/dbus/system_bus_socket" {
		t.Errorf("DBUS_SYSTEM_BUS_ADDRESS %q does not point into the /run/dbus mount", env["DBUS_SYSTEM_BUS_ADDRESS"])
	}
	if !slices.Contains(c.Args, "--host-root=/host") {
		t.Errorf("args %q: want --host-root=/host, where the host's directories are mounted", c.Args)
	}
	port := c.Ports[0].ContainerPort
	if cfg.MetricsBindAddress != fmt.Sprintf(":%d", port) || cfg.MetricsBindAddress != config.DefaultMetricsBindAddress {
		t.Errorf("metrics on %q, container port %d, default %q: want all three to agree", cfg.MetricsBindAddress, port, config.DefaultMetricsBindAddress)
	}
	if cfg.NodeName != "node-a" || cfg.PodCIDR != netip.MustParsePrefix("192.168.0.0/16") ||
		cfg.Encapsulation != calico.EncapIPIP || !cfg.BGP || cfg.Typha || cfg.WireGuard ||
		cfg.StateDir != "/var/lib/calico-prep" || cfg.NetworkManagerConfDir != "/etc/NetworkManager/conf.d" ||
		cfg.NetworkdConfDir != "/etc/systemd/network" || cfg.Networkd != config.ModeAuto || !cfg.NetworkdKeepForeignRoutes ||
		cfg.Kubeconfig != "" {
		t.Errorf("configuration from the DaemonSet: %+v", cfg)
	}
}

func ptrValue[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// TestHelmValuesReachTheAgent sets every value an operator changes and checks the agent's
// configuration parser, and the pod spec, see each of them.
func TestHelmValuesReachTheAgent(t *testing.T) {
	m := helmTemplate(t, "-f", "test/deploy/testdata/values-all.yaml")
	ds := daemonSet(t, m, "calico-prep")
	spec := ds.Spec.Template.Spec
	c := agentContainer(t, ds)
	cfg, env := agentConfig(t, c, "node-b", t.TempDir())

	checks := []struct {
		name string
		ok   bool
	}{
		{"image", c.Image == "registry.example/calico-prep:v9.9.9" && c.ImagePullPolicy == corev1.PullAlways},
		{"pod CIDR", cfg.PodCIDR == netip.MustParsePrefix("10.244.0.0/16")},
		{"IPv6 pool", cfg.PodCIDRv6 == netip.MustParsePrefix("fd00:10:244::/56")},
		{"encapsulation from the pool variables", cfg.Encapsulation == calico.EncapVXLAN},
		{"backend vxlan: no BGP", !cfg.BGP},
		{"Typha", cfg.Typha},
		{"WireGuard", cfg.WireGuard},
		{"Felix's ports", cfg.Ports.VXLAN == 8472 && cfg.Ports.WireGuard == 51830 && cfg.Ports.WireGuardv6 == 51831},
		{"Calico's resources not followed", cfg.CalicoConfig == config.ModeOff},
		{"autodetection", cfg.IPAutodetectionMethod == "interface=eth.*" && cfg.IP6AutodetectionMethod == "can-reach=2001:db8::1"},
		{"firewalld", cfg.Firewalld == config.ModeOn && cfg.FirewalldZone == "internal" && !cfg.FirewalldForwarding && !cfg.FirewalldOpenMetrics &&
			fmt.Sprint(cfg.FirewalldExtraPorts) == "[2379/tcp 6443/tcp]"},
		{"NetworkManager", cfg.NetworkManager == config.ModeOff && slices.Equal(cfg.NetworkManagerExtraUnmanaged, []string{"flannel*"})},
		{"networkd", cfg.Networkd == config.ModeOn && !cfg.NetworkdKeepForeignRoutes},
		{"service CIDR", fmt.Sprint(cfg.ServiceCIDRs) == "[10.96.0.0/12]"},
		{"kubeadm podSubnet", fmt.Sprint(cfg.KubeadmSubnets) == "[10.244.0.0/16]"},
		{"disabled checks", cfg.DisableChecks.String() == "kernel"},
		{"resync", cfg.ResyncInterval.String() == "5m0s"},
		{"metrics port", cfg.MetricsBindAddress == ":9477" && c.Ports[0].ContainerPort == 9477 &&
			ds.Spec.Template.Annotations["prometheus.io/port"] == "9477"},
		{"extra args", slices.Contains(c.Args, "--node-internal-ip=10.0.0.7") && slices.Contains(c.Args, "--log-level=debug")},
		{"extra env", env["GOMAXPROCS"] == "1"},
		{"tolerations", len(spec.Tolerations) == 1 && spec.Tolerations[0].Key == "dedicated"},
		{"node selector", spec.NodeSelector["node-role.example/calico"] == "true"},
		{"priority class", spec.PriorityClassName == "system-cluster-critical"},
		{"resources", c.Resources.Limits.Memory().Equal(resource.MustParse("128Mi")) && c.Resources.Requests.Cpu().Equal(resource.MustParse("20m"))},
		{"pod annotations", ds.Spec.Template.Annotations["example/owner"] == "network-team"},
		{"update strategy", ds.Spec.UpdateStrategy.RollingUpdate.MaxUnavailable.String() == "1"},
	}
	for _, ch := range checks {
		if !ch.ok {
			t.Errorf("values-all.yaml: %s did not reach the DaemonSet or the agent (config %+v)", ch.name, cfg)
		}
	}
	objs := objects(t, m)
	for _, kind := range []string{"PodMonitor", "PrometheusRule"} {
		if find(t, objs, kind, "calico-prep").GetLabels()["release"] != "kube-prometheus-stack" {
			t.Errorf("%s lacks monitoring.labels", kind)
		}
	}
	if find(t, objs, "ConfigMap", "calico-prep-dashboard").GetLabels()["grafana_dashboard"] != "1" {
		t.Error("dashboard ConfigMap lacks dashboardLabels")
	}
}

func readFile(t testing.TB, rel string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
