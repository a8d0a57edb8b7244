package plan

import (
	"testing"

	"github.com/calico-prep/calico-prep/pkg/plan/plantest"
)

// BenchmarkMake5000 is the plan's own share of `agent plan` on 5,000 nodes, without the API
// server: pool search and every candidate method evaluated on every node, both families.
func BenchmarkMake5000(b *testing.B) {
	nodes := nodesOf(plantest.Cluster("node", 5000))
	opts := defaultOptions()
	opts.IPv6 = true
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Make(b.Context(), nodes, opts); err != nil {
			b.Fatal(err)
		}
	}
}
