package plan

import (
	"bytes"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/calico-prep/calico-prep/test/fixtures"

	"github.com/calico-prep/calico-prep/pkg/plan/plantest"
	"github.com/calico-prep/calico-prep/pkg/report"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/render")

// TestWriteGolden renders two plans in every format and compares with the golden files:
// the seed guide's single node, and a mixed cluster whose plan is partial (one node without a
// report) with an IPv6 pool and WireGuard. Run with -update after a deliberate change.
func TestWriteGolden(t *testing.T) {
	seedRep := report.Node{V: report.Version, Ready: true, Host: report.HostOf(fixtures.SeedHost(t))}
	seed := []Node{{Name: "seed", InternalIPs: []netip.Addr{netip.MustParseAddr("192.168.79.128")}, ControlPlane: true, Report: &seedRep}}

	mixed := nodesOf(plantest.Cluster("w", 12))
	mixed = append(mixed, Node{Name: "new-node", InternalIPs: []netip.Addr{netip.MustParseAddr("10.0.9.9")}})
	mixedOpts := defaultOptions()
	mixedOpts.IPv6, mixedOpts.WireGuard = true, true

	for _, tc := range []struct {
		name  string
		nodes []Node
		opts  Options
	}{
		{"seed", seed, defaultOptions()},
		{"mixed", mixed, mixedOpts},
	} {
		p, err := Make(t.Context(), tc.nodes, tc.opts)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		for _, format := range Formats {
			t.Run(tc.name+"/"+format, func(t *testing.T) {
				var b bytes.Buffer
				if err := Write(&b, format, p); err != nil {
					t.Fatal(err)
				}
				golden := filepath.Join("testdata", "render", tc.name+"."+format+".golden")
				if *update {
					if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(golden, b.Bytes(), 0o644); err != nil {
						t.Fatal(err)
					}
				}
				want, err := os.ReadFile(golden)
				if err != nil {
					t.Fatalf("%v (run go test -run TestWriteGolden -update to create it)", err)
				}
				if !bytes.Equal(b.Bytes(), want) {
					t.Errorf("%s differs from %s:\n%s", format, golden, b.String())
				}
			})
		}
	}
}
