package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/calico-prep/calico-prep/test/testkit"
)

// podMonitor is the part of deploy/monitoring/podmonitor.yaml that decides what is scraped.
type podMonitor struct {
	Metadata struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
	Spec struct {
		Selector struct {
			MatchLabels map[string]string `json:"matchLabels"`
		} `json:"selector"`
		JobLabel            string `json:"jobLabel"`
		PodMetricsEndpoints []struct {
			Port        string           `json:"port"`
			Path        string           `json:"path"`
			Relabelings []map[string]any `json:"relabelings"`
		} `json:"podMetricsEndpoints"`
	} `json:"spec"`
}

// labelName is Prometheus's name of a Kubernetes label in discovery meta labels.
func labelName(k string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '_'
	}, k)
}

// scrapeConfig is the scrape configuration prometheus-operator generates from the PodMonitor:
// role pod in the PodMonitor's namespace, keep the pods matching its selector and the container
// port it names, job from its jobLabel, then its own relabelings. Only the interval is shorter,
// so that the test does not wait 30 s per scrape.
func scrapeConfig(t *testing.T, repo, apiServer, dir string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repo, "deploy/monitoring/podmonitor.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var pm podMonitor
	if err := yaml.Unmarshal(data, &pm); err != nil {
		t.Fatal(err)
	}
	if len(pm.Spec.PodMetricsEndpoints) != 1 {
		t.Fatalf("PodMonitor has %d endpoints; the test knows one", len(pm.Spec.PodMetricsEndpoints))
	}
	ep := pm.Spec.PodMetricsEndpoints[0]
	relabel := []any{
		map[string]any{"action": "drop", "source_labels": []string{"__meta_kubernetes_pod_phase"}, "regex": "(Failed|Succeeded)"},
	}
	var selector []string
	for k := range pm.Spec.Selector.MatchLabels {
		selector = append(selector, k)
	}
	sort.Strings(selector)
	for _, k := range selector {
		relabel = append(relabel, map[string]any{
			"action":        "keep",
			"source_labels": []string{"__meta_kubernetes_pod_label_" + labelName(k), "__meta_kubernetes_pod_labelpresent_" + labelName(k)},
			"regex":         "(" + pm.Spec.Selector.MatchLabels[k] + ");true",
		})
	}
	relabel = append(relabel,
		map[string]any{"action": "keep", "source_labels": []string{"__meta_kubernetes_pod_container_port_name"}, "regex": ep.Port},
		map[string]any{"source_labels": []string{"__meta_kubernetes_namespace"}, "target_label": "namespace"},
		map[string]any{"source_labels": []string{"__meta_kubernetes_pod_name"}, "target_label": "pod"},
		map[string]any{"source_labels": []string{"__meta_kubernetes_pod_container_name"}, "target_label": "container"},
		map[string]any{"target_label": "job", "replacement": pm.Metadata.Namespace + "/" + pm.Metadata.Name},
	)
	if pm.Spec.JobLabel != "" {
		relabel = append(relabel, map[string]any{
			"source_labels": []string{"__meta_kubernetes_pod_label_" + labelName(pm.Spec.JobLabel)},
			"target_label":  "job", "regex": "(.+)", "replacement": "${1}",
		})
	}
	relabel = append(relabel, map[string]any{"target_label": "endpoint", "replacement": ep.Port})
	for _, r := range ep.Relabelings {
		m := map[string]any{}
		for k, v := range r {
			// The CRD's camelCase fields are Prometheus's snake_case ones.
			switch k {
			case "sourceLabels":
				k = "source_labels"
			case "targetLabel":
				k = "target_label"
			}
			m[k] = v
		}
		relabel = append(relabel, m)
	}
	return map[string]any{
		"job_name":        fmt.Sprintf("podMonitor/%s/%s/0", pm.Metadata.Namespace, pm.Metadata.Name),
		"scrape_interval": "2s",
		"metrics_path":    ep.Path,
		"kubernetes_sd_configs": []any{map[string]any{
			"role":          "pod",
			"api_server":    apiServer,
			"namespaces":    map[string]any{"names": []string{pm.Metadata.Namespace}},
			"authorization": map[string]any{"credentials_file": filepath.Join(dir, "token")},
			"tls_config":    map[string]any{"ca_file": filepath.Join(dir, "ca.crt")},
		}},
		"relabel_configs": relabel,
	}
}

// prometheus is upstream Prometheus (hack/build-kube.sh: Debian's package has no Kubernetes
// discovery) running in the cluster's core namespace, which routes to every node.
type prometheus struct {
	core string
	addr string
	// dir holds prometheus and promtool.
	dir string
}

// promRBAC lets Prometheus's ServiceAccount discover pods.
const promRBAC = `apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: e2e-prometheus
rules:
  - apiGroups: [""]
    resources: [pods]
    verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: e2e-prometheus
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: e2e-prometheus
subjects:
  - kind: ServiceAccount
    name: prometheus
    namespace: monitoring
`

func startPrometheus(t *testing.T, c *Cluster, repo string) *prometheus {
	t.Helper()
	dir := t.TempDir()
	rbac := filepath.Join(dir, "rbac.yaml")
	if err := os.WriteFile(rbac, []byte(promRBAC), 0o644); err != nil {
		t.Fatal(err)
	}
	token := c.Kube.Token(t, "monitoring", "prometheus", "")
	c.Kube.Kubectl(t, "apply", "-f", rbac)
	rules, err := os.ReadFile(filepath.Join(repo, "deploy/helm/calico-prep/files/prometheus-rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := yaml.Marshal(map[string]any{
		"global":         map[string]any{"scrape_interval": "2s", "evaluation_interval": "1s"},
		"rule_files":     []string{filepath.Join(dir, "rules.yaml")},
		"scrape_configs": []any{scrapeConfig(t, repo, c.APIServer, dir)},
	})
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string][]byte{"token": []byte(token), "ca.crt": c.Kube.CAPEM(), "rules.yaml": rules, "prometheus.yml": cfg} {
		if err := os.WriteFile(filepath.Join(dir, name), content, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	p := &prometheus{core: c.CoreNetNS, addr: "127.0.0.1:9090", dir: c.kubeDir}
	out, err := exec.Command(filepath.Join(p.dir, "promtool"), "check", "config", filepath.Join(dir, "prometheus.yml")).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check config: %v\n%s\n%s", err, out, cfg)
	}
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command("nsenter", "--net="+c.CoreNetNS, "--", filepath.Join(p.dir, "prometheus"),
		"--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+p.addr)
	cmd.Stdout, cmd.Stderr = logf, logf
	proc, err := testkit.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("prometheus log:\n%s", testkit.Tail(filepath.Join(dir, "prometheus.log"), 30))
		}
		_ = proc.Stop(20 * time.Second)
	})
	testkit.Eventually(t, time.Minute, func() string {
		if proc.Exited() {
			t.Fatalf("prometheus: %s\n%s", proc.State(), testkit.Tail(filepath.Join(dir, "prometheus.log"), 30))
		}
		if _, err := p.get(t, "/-/ready"); err != nil {
			return err.Error()
		}
		return ""
	})
	return p
}

func (p *prometheus) get(t *testing.T, path string) ([]byte, error) {
	t.Helper()
	resp, err := httpIn(p.core, nil).Get("http://" + p.addr + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %s: %s", path, resp.Status, body)
	}
	return body, err
}

type promSample struct {
	Metric map[string]string `json:"metric"`
	Value  []any             `json:"value"`
}

func (p *prometheus) query(t *testing.T, q string) ([]promSample, error) {
	t.Helper()
	body, err := p.get(t, "/api/v1/query?query="+url.QueryEscape(q))
	if err != nil {
		return nil, err
	}
	var r struct {
		Data struct {
			Result []promSample `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("decode query result: %w: %s", err, body)
	}
	return r.Data.Result, nil
}

type promAlert struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	State       string            `json:"state"`
}

func (p *prometheus) alerts(t *testing.T) ([]promAlert, error) {
	t.Helper()
	body, err := p.get(t, "/api/v1/alerts")
	if err != nil {
		return nil, err
	}
	var r struct {
		Data struct {
			Alerts []promAlert `json:"alerts"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("decode alerts: %w: %s", err, body)
	}
	return r.Data.Alerts, nil
}

// ruleTest runs promtool's rule test: the series as scraped, held at 0, must not fire before
// the rule's 10 minutes and must fire after them, with the labels and annotations Prometheus gave
// the pending alert.
func (p *prometheus) ruleTest(t *testing.T, repo string, series map[string]string, pending promAlert) {
	t.Helper()
	var sel []string
	for k, v := range series {
		if k != "__name__" {
			sel = append(sel, k+"="+strconv.Quote(v))
		}
	}
	sort.Strings(sel)
	labels := map[string]string{}
	for k, v := range pending.Labels {
		if k != "alertname" {
			labels[k] = v
		}
	}
	dir := t.TempDir()
	rules, err := os.ReadFile(filepath.Join(repo, "deploy/helm/calico-prep/files/prometheus-rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	test, err := yaml.Marshal(map[string]any{
		"rule_files":          []string{"rules.yaml"},
		"evaluation_interval": "1m",
		"tests": []any{map[string]any{
			"interval":     "1m",
			"input_series": []any{map[string]any{"series": "calico_prep_ready{" + strings.Join(sel, ",") + "}", "values": "0x20"}},
			"alert_rule_test": []any{
				map[string]any{"eval_time": "9m", "alertname": "CalicoPrepNodeNotPrepared", "exp_alerts": []any{}},
				map[string]any{"eval_time": "11m", "alertname": "CalicoPrepNodeNotPrepared", "exp_alerts": []any{
					map[string]any{"exp_labels": labels, "exp_annotations": pending.Annotations},
				}},
			},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string][]byte{"rules.yaml": rules, "test.yaml": test} {
		if err := os.WriteFile(filepath.Join(dir, name), content, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(p.dir, "promtool"), "test", "rules", "test.yaml")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool test rules with the scraped series: %v\n%s\n%s", err, out, test)
	} else {
		t.Logf("promtool: CalicoPrepNodeNotPrepared fires after 10 minutes for %s", series["node"])
	}
}
