package check

import (
	"encoding/json"
	"reflect"
	"testing"
)

// FuzzReportJSON: any JSON that decodes into a Report encodes and decodes back to the same
// Report, and nothing panics.
func FuzzReportJSON(f *testing.F) {
	f.Add(`{"time":"2026-11-27T10:00:00Z","ready":false,"checks":[{"name":"cidr/ipv4-pool","status":"fail","reason":"PodCIDROverlap","message":"m","facts":{"pool":"192.168.0.0/16"}}]}`)
	f.Add(`{"ready":true,"checks":[{"name":"a/b","status":"pass","applied":true,"wouldApply":true,"applyError":"x"}]}`)
	f.Add(`{"checks":null}`)
	f.Fuzz(func(t *testing.T, s string) {
		var r Report
		if json.Unmarshal([]byte(s), &r) != nil {
			return
		}
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatalf("marshal %+v: %v", r, err)
		}
		var back Report
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("unmarshal own output %s: %v", b, err)
		}
		if !reflect.DeepEqual(normalize(r), normalize(back)) {
			t.Fatalf("round trip changed the report:\n%+v\n%+v", r, back)
		}
	})
}

// normalize makes empty and nil the same, as omitempty does.
func normalize(r Report) Report {
	if len(r.Entries) == 0 {
		r.Entries = nil
	}
	for i := range r.Entries {
		if len(r.Entries[i].Facts) == 0 {
			r.Entries[i].Facts = nil
		}
	}
	return r
}
