package firewalld

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/calico-prep/calico-prep/pkg/config"
)

func TestStateRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "var", "lib", "calico-prep")
	st, err := loadState(dir)
	if err != nil || !st.empty() {
		t.Fatalf("loadState of a missing directory = %+v, %v; want empty, nil", st, err)
	}
	bgp := Rule{Port: config.Port{From: 179, To: 179, Protocol: "tcp"}}
	ipip := Rule{IPProtocol: "ipencap"}
	o := st.rule("public", bgp)
	o.Permanent = true
	st.setRule(o)
	o.Runtime = true
	st.setRule(o) // replaces, not appends
	p := st.rule("public", ipip)
	p.Runtime = true
	st.setRule(p)
	st.Zones = []string{ForwardingZone}
	if err := st.save(dir); err != nil {
		t.Fatal(err)
	}
	got, err := loadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := state{
		Rules: []ownedRule{
			{Zone: "public", Port: "179", Protocol: "tcp", Runtime: true, Permanent: true},
			{Zone: "public", IPProtocol: "ipencap", Runtime: true},
		},
		Zones: []string{ForwardingZone},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("loaded %+v, want %+v", got, want)
	}
	if r := got.rule("internal", bgp); r.Runtime || r.Permanent {
		t.Errorf("a rule recorded in zone public is owned in zone internal: %+v", r)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("state directory holds %d entries, want only %s (no temp files left)", len(entries), stateFile)
	}

	// A rule that owns no layer is forgotten; an empty state removes the file.
	for _, r := range append([]ownedRule(nil), got.Rules...) {
		r.Runtime, r.Permanent = false, false
		got.setRule(r)
	}
	got.Zones = nil
	// A packaged zone to restore is still something to clean up.
	got.Packaged = []packagedZone{{Zone: "public", Settings: map[string]string{"short": `"Public"`}}}
	if err := got.save(dir); err != nil {
		t.Fatal(err)
	}
	if again, err := loadState(dir); err != nil || !reflect.DeepEqual(again.Packaged, got.Packaged) {
		t.Errorf("state with only a packaged zone loaded as %+v, %v; want packaged zones %+v", again, err, got.Packaged)
	}
	got.Packaged = nil
	if err := got.save(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, stateFile)); !os.IsNotExist(err) {
		t.Errorf("empty state left the file: %v", err)
	}
}

func TestLoadStateCorrupt(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, stateFile), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := loadState(dir); err == nil {
		t.Error("loadState of a corrupt file succeeded")
	}
}
