package agent

import (
	"fmt"
	"testing"

	"github.com/calico-prep/calico-prep/pkg/check"
	"github.com/calico-prep/calico-prep/pkg/nodestatus"
)

func rep(ready bool, entries ...check.Entry) check.Report {
	return check.Report{Ready: ready, Entries: entries}
}

func entry(name string, st check.Status, msg string) check.Entry {
	return check.Entry{Name: name, Result: check.Result{Status: st, Message: msg}}
}

func TestTransition(t *testing.T) {
	yes, no := true, false
	overlap := entry("cidr/ipv4-pool", check.Fail, "pod CIDR 192.168.0.0/16 overlaps ens33 address 192.168.79.128/24")
	clean := entry("cidr/ipv4-pool", check.Pass, "no overlap")
	portMissing := entry("firewalld/port-179-tcp", check.Fail, "179/tcp missing")
	portOpen := entry("firewalld/port-179-tcp", check.Pass, "179/tcp open")
	tests := []struct {
		name       string
		prevReady  *bool
		prev       *check.Report
		now        check.Report
		wantReason string // "" = no event
		wantDetail string
	}{
		{name: "first pass, unknown before, ready", now: rep(true, clean), wantReason: "CalicoPrepReady", wantDetail: "node is prepared for Calico"},
		{name: "first pass, unknown before, not ready", now: rep(false, overlap), wantReason: "CalicoPrepNotReady",
			wantDetail: "node is not prepared for Calico: pod CIDR 192.168.0.0/16 overlaps ens33 address 192.168.79.128/24"},
		{name: "restart on a ready node: the condition already says so", prevReady: &yes, now: rep(true, clean)},
		{name: "fixed: not ready to ready is one event", prevReady: &no, prev: &check.Report{Entries: []check.Entry{overlap}}, now: rep(true, clean), wantReason: "CalicoPrepReady", wantDetail: "node is prepared for Calico"},
		{name: "steady", prevReady: &no, prev: &check.Report{Entries: []check.Entry{overlap, portOpen}}, now: rep(false, overlap, portOpen)},
		{name: "a second check fails while not ready", prevReady: &no, prev: &check.Report{Entries: []check.Entry{overlap, portOpen}}, now: rep(false, overlap, portMissing),
			wantReason: "CalicoPrepCheckChanged", wantDetail: "firewalld/port-179-tcp fails"},
		{name: "not-applicable to pass is no flip", prevReady: &yes, prev: &check.Report{Entries: []check.Entry{entry("links/tunl0", check.NotApplicable, "")}}, now: rep(true, entry("links/tunl0", check.Pass, ""))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := transition(tt.prevReady, tt.prev, tt.now)
			if tt.wantReason == "" {
				if ev != nil {
					t.Fatalf("unexpected event %+v", *ev)
				}
				return
			}
			if ev == nil || ev.reason != tt.wantReason || ev.detail != tt.wantDetail {
				t.Fatalf("event %+v, want %s: %s", ev, tt.wantReason, tt.wantDetail)
			}
			if ev.warning == tt.now.Ready {
				t.Fatalf("warning=%v for ready=%v", ev.warning, tt.now.Ready)
			}
		})
	}
}

// The Node between the two writes of one publish (label new, condition old, or the other way
// round) is calico-prep's own doing; a change to either part that it did not write is drift.
func TestDrifted(t *testing.T) {
	ready := nodestatus.Status{Ready: true, Reason: "Prepared", Message: "node is prepared for Calico", Report: `{"ready":true}`}
	overlap := nodestatus.Status{Ready: false, Reason: "PodCIDROverlap", Message: "overlap", Report: `{}`}
	node := func(meta, cond nodestatus.Status) nodestatus.Node {
		st := map[bool]string{true: "True", false: "False"}[cond.Ready]
		return nodestatus.Node{
			Labels:      map[string]string{nodestatus.LabelReady: fmt.Sprint(meta.Ready)},
			Annotations: map[string]string{nodestatus.AnnotationReport: meta.Report},
			Condition:   &nodestatus.Condition{Type: nodestatus.ConditionType, Status: st, Reason: cond.Reason, Message: cond.Message},
		}
	}
	a := &Agent{}
	a.st.published, a.st.inflight = &overlap, &ready
	for _, tt := range []struct {
		name string
		n    nodestatus.Node
		want bool
	}{
		{"as published", node(overlap, overlap), false},
		{"as the write in progress makes it", node(ready, ready), false},
		{"label written, condition not yet", node(ready, overlap), false},
		{"condition written, label not yet", node(overlap, ready), false},
		{"label removed", func() nodestatus.Node { n := node(ready, ready); n.Labels = nil; return n }(), true},
		{"condition removed", func() nodestatus.Node { n := node(ready, ready); n.Condition = nil; return n }(), true},
		{"condition rewritten", func() nodestatus.Node { n := node(ready, ready); n.Condition.Message = "x"; return n }(), true},
	} {
		if got := a.drifted(tt.n); got != tt.want {
			t.Errorf("%s: drifted = %v, want %v", tt.name, got, tt.want)
		}
	}
	if !(&Agent{}).drifted(node(ready, ready)) {
		t.Error("nothing published or in flight: a Node status is drift")
	}
}
