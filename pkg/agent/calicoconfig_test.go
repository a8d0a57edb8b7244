package agent

import (
	"flag"
	"log/slog"
	"slices"
	"testing"

	"github.com/calico-prep/calico-prep/pkg/calicoconfig"
	"github.com/calico-prep/calico-prep/pkg/check"
	"github.com/calico-prep/calico-prep/pkg/config"
	"github.com/calico-prep/calico-prep/pkg/firewalld"
)

func names(cs []check.Check) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

// TestSetEffectiveChecks: the checks follow the effective configuration; stale rules are
// closed only once the daemon has given the host a complete configuration.
func TestSetEffectiveChecks(t *testing.T) {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	load := config.Flags(fs)
	if err := fs.Parse([]string{"--node-name=n", "--firewalld=on", "--encapsulation=vxlan", "--bgp=false"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := load(func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	h := &Host{cfg: cfg, log: slog.New(slog.DiscardHandler), kernel: kernelChecks(cfg), calico: calicoconfig.FromFlags(cfg)}
	h.checks = h.buildChecks()
	has := func(name string) bool { return slices.Contains(names(h.checks), name) }
	if has(firewalld.StaleCheckName) || has(calicoconfig.CheckName) {
		t.Errorf("before the daemon's configuration: %v", names(h.checks))
	}

	notSynced := calicoconfig.Resolve(cfg, calicoconfig.State{Group: "crd.projectcalico.org/v1"}, true)
	if !h.SetEffective(notSynced) || has(firewalld.StaleCheckName) || !has(calicoconfig.CheckName) || names(h.checks)[0] != calicoconfig.CheckName {
		t.Errorf("with Calico's resources not read: %v", names(h.checks))
	}
	if h.SetEffective(notSynced) {
		t.Error("the same configuration again counts as a change")
	}
	v := uint16(8472)
	synced := calicoconfig.Resolve(cfg, calicoconfig.State{Synced: true, Group: "crd.projectcalico.org/v1",
		FelixDefault: &calicoconfig.Felix{VXLANPort: &v}}, true)
	if !h.SetEffective(synced) || !has(firewalld.StaleCheckName) || !has("firewalld/port-8472-udp") || has("firewalld/port-4789-udp") {
		t.Errorf("with Calico's resources read: %v", names(h.checks))
	}
}

func TestMetricsPort(t *testing.T) {
	for bind, want := range map[string]uint16{":9476": 9476, "0.0.0.0:9000": 9000, "127.0.0.1:9476": 0, "[::1]:9476": 0, "localhost:1": 0, "": 0} {
		if got := metricsPort(bind); got != want {
			t.Errorf("metricsPort(%q) = %d, want %d", bind, got, want)
		}
	}
}
