package deploy

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// ruleGroups returns the PrometheusRule's spec (its rule groups) as a Prometheus rule file.
func ruleGroups(t testing.TB) string {
	t.Helper()
	rule := find(t, objects(t, kustomize(t, "deploy/monitoring")), "PrometheusRule", "calico-prep")
	data, err := yaml.Marshal(rule.Object["spec"])
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// TestAlertRules checks the PrometheusRule's rules with promtool (syntax, templates) and runs
// promtool's unit tests of them: each alert fires on the series it is about and stays quiet on
// healthy ones.
func TestAlertRules(t *testing.T) {
	dir := t.TempDir()
	rules := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(rules, []byte(ruleGroups(t)), 0o600); err != nil {
		t.Fatal(err)
	}
	out := run(t, "promtool", "check", "rules", rules)
	if !strings.Contains(out, "SUCCESS: 6 rules found") {
		t.Fatalf("promtool check rules:\n%s", out)
	}
	// The chart's copy of the rules is the same file promtool checked.
	chart, err := yaml.YAMLToJSON([]byte(readFile(t, "deploy/helm/calico-prep/files/prometheus-rules.yaml")))
	if err != nil {
		t.Fatal(err)
	}
	kust, err := yaml.YAMLToJSON([]byte(ruleGroups(t)))
	if err != nil {
		t.Fatal(err)
	}
	if string(chart) != string(kust) {
		t.Fatal("deploy/helm/calico-prep/files/prometheus-rules.yaml differs from deploy/monitoring/prometheusrule.yaml")
	}
	tests := filepath.Join(dir, "alerts_test.yaml")
	if err := os.WriteFile(tests, []byte(readFile(t, "test/deploy/testdata/alerts_test.yaml")), 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, "promtool", "test", "rules", tests)
}

// dashboard is the part of the Grafana dashboard the tests read.
type dashboard struct {
	Title  string `json:"title"`
	UID    string `json:"uid"`
	Panels []struct {
		Title   string `json:"title"`
		Type    string `json:"type"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

func readDashboard(t testing.TB) dashboard {
	t.Helper()
	raw := readFile(t, "deploy/monitoring/grafana-dashboard.json")
	if raw != readFile(t, "deploy/helm/calico-prep/files/grafana-dashboard.json") {
		t.Fatal("the chart's dashboard differs from deploy/monitoring/grafana-dashboard.json")
	}
	var d dashboard
	if err := json.Unmarshal([]byte(raw), &d); err != nil {
		t.Fatal(err)
	}
	return d
}

// dashboardQueries returns every panel query with Grafana's variables replaced by what they
// expand to for all nodes over a short range.
func dashboardQueries(t testing.TB) map[string]string {
	t.Helper()
	d := readDashboard(t)
	out := map[string]string{}
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			q := strings.NewReplacer(`$node`, `.*`, `$__rate_interval`, `1m`).Replace(tg.Expr)
			out[p.Title] = q
		}
	}
	return out
}

var metricName = regexp.MustCompile(`\bcalico_prep_[a-z0-9_]+`)

// TestQueriesUseAgentMetrics checks that every calico_prep_ series the alerts and the dashboard
// query is one the agent exposes (pkg/metrics's golden exposition), and that the dashboard
// has the panels the issue asks for.
func TestQueriesUseAgentMetrics(t *testing.T) {
	golden := readFile(t, "pkg/metrics/testdata/exposition.golden")
	exposed := map[string]bool{}
	for _, line := range strings.Split(golden, "\n") {
		if f := strings.Fields(line); len(f) >= 4 && f[0] == "#" && f[1] == "TYPE" {
			exposed[f[2]] = true
			if f[3] == "histogram" {
				for _, s := range []string{"_bucket", "_sum", "_count"} {
					exposed[f[2]+s] = true
				}
			}
		}
	}
	if len(exposed) == 0 {
		t.Fatal("no metrics in the golden exposition")
	}
	queries := dashboardQueries(t)
	for i, m := range metricName.FindAllString(ruleGroups(t), -1) {
		queries["rule "+string(rune('a'+i))] = m
	}
	var used []string
	for where, q := range queries {
		for _, m := range metricName.FindAllString(q, -1) {
			used = append(used, m)
			if !exposed[m] {
				t.Errorf("%s queries %s, which the agent does not expose", where, m)
			}
		}
	}
	for _, m := range []string{"calico_prep_ready", "calico_prep_check_status", "calico_prep_apply_total"} {
		if !slices.Contains(used, m) {
			t.Errorf("nothing queries %s", m)
		}
	}
	d := readDashboard(t)
	var titles []string
	for _, p := range d.Panels {
		titles = append(titles, p.Title)
	}
	for _, want := range []string{"Readiness by node", "Failing checks", "Re-applies"} {
		if !slices.Contains(titles, want) {
			t.Errorf("dashboard has no panel %q (has %q)", want, titles)
		}
	}
	if d.UID != "calico-prep" || d.Title == "" {
		t.Errorf("dashboard uid %q title %q", d.UID, d.Title)
	}
}
