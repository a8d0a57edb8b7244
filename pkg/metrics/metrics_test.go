package metrics

import (
	"bytes"
	"flag"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"

	"github.com/calico-prep/calico-prep/pkg/check"
)

var update = flag.Bool("update", false, "rewrite golden files")

func sampleReport() check.Report {
	fw := func(name, rule string, runtime, permanent bool, st check.Status) check.Entry {
		r := check.Result{Status: st, Reason: "X", Message: "m"}.With(check.FactZone, "public").With(check.FactRule, rule)
		r = r.With(check.FactRuntime, map[bool]string{true: "true", false: "false"}[runtime]).With(check.FactPermanent, map[bool]string{true: "true", false: "false"}[permanent])
		return check.Entry{Name: name, Result: r}
	}
	nm := check.Passed("all unmanaged").With(check.FactUnmanagedPrefix+"tunl0", "true").
		With(check.FactUnmanagedPrefix+"cali1234567890a", "true").With(check.FactUnmanagedPrefix+"cali0987654321b", "false")
	return check.Report{
		Time:  time.Unix(1_800_000_000, 0).UTC(),
		Ready: false,
		Entries: []check.Entry{
			fw("firewalld/port-179-tcp", "179/tcp", true, true, check.Pass),
			fw("firewalld/protocol-ipencap", "ipencap", true, false, check.Fail),
			{Name: "networkmanager/unmanaged", Result: nm, Applied: true},
			{Name: "networkd/unmanaged", Result: check.Failed("LinkManaged", "m").With(check.FactNetworkdUnmanagedPrefix+"vxlan.calico", "true").
				With(check.FactNetworkdUnmanagedPrefix+"cali1234567890a", "false")},
			{Name: "links/tunl0", Result: check.Passed("up").With(check.FactLink, "tunl0").With(check.FactUp, "true")},
			{Name: "kernel/module/ipip", Result: check.Result{Status: check.Disabled}},
			{Name: "cidr/ipv4-pool", Result: check.Failed("PodCIDROverlap", "overlap"), ApplyError: ""},
		},
	}
}

// TestExpositionGolden pins names, labels, help texts and values of the calico_prep_ series.
func TestExpositionGolden(t *testing.T) {
	m := New("v0.0.0-test")
	m.Observe(sampleReport(), 42*time.Millisecond, time.Unix(1_800_000_000, 0))
	m.SetClusterNodes(51)
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, f := range fams {
		// build_info carries the Go version, which changes with the toolchain.
		if strings.HasPrefix(f.GetName(), namespace+"_") && f.GetName() != namespace+"_build_info" {
			if err := enc.Encode(f); err != nil {
				t.Fatal(err)
			}
		}
	}
	golden := "testdata/exposition.golden"
	if *update {
		if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), want) {
		t.Fatalf("exposition differs from %s (run with -update after checking):\n%s", golden, buf.String())
	}
}

// TestPromtoolCheckMetrics lints the real HTTP output, Go and process collectors included.
func TestPromtoolCheckMetrics(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool (Debian package prometheus) is needed: hack/install-deps.sh installs it")
	}
	m := New("v0.0.0-test")
	m.Observe(sampleReport(), 42*time.Millisecond, time.Now())
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/metrics", nil)
	req.Header.Set("Accept-Encoding", "gzip") // as Prometheus asks; the agent answers plain text
	m.Handler().ServeHTTP(rec, req)
	if enc := rec.Header().Get("Content-Encoding"); enc != "" {
		t.Errorf("Content-Encoding %q, want none", enc)
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = rec.Body
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}

func TestNoSeriesBeforeFirstPass(t *testing.T) {
	fams, err := New("v").Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == namespace+"_ready" {
			t.Fatal("calico_prep_ready exported before any pass")
		}
	}
}
