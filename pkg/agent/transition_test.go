package agent

import (
	"testing"

	"github.com/calico-prep/calico-prep/pkg/check"
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
