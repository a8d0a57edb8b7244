package nodestatus

import (
	"testing"

	"k8s.io/apimachinery/pkg/types"
)

func TestViewKeepsNewestVersion(t *testing.T) {
	node := func(uid, rv, label string) *nodeObject {
		return &nodeObject{Metadata: objectMeta{
			Name: "n", UID: types.UID(uid), ResourceVersion: rv, Labels: map[string]string{LabelReady: label},
		}}
	}
	tests := []struct {
		name      string
		have, got *nodeObject
		wantFresh bool
		wantLabel string
	}{
		{name: "first", got: node("a", "7", "true"), wantFresh: true, wantLabel: "true"},
		{name: "newer", have: node("a", "7", "false"), got: node("a", "8", "true"), wantFresh: true, wantLabel: "true"},
		{name: "same version again", have: node("a", "8", "true"), got: node("a", "8", "true"), wantFresh: true, wantLabel: "true"},
		{name: "watch event older than a write's response", have: node("a", "10", "true"), got: node("a", "9", "false"), wantLabel: "true"},
		{name: "longer is newer", have: node("a", "99", "false"), got: node("a", "100", "true"), wantFresh: true, wantLabel: "true"},
		{name: "not comparable: the arrival wins", have: node("a", "10", "false"), got: node("a", "x9", "true"), wantFresh: true, wantLabel: "true"},
		{name: "node recreated", have: node("a", "10", "false"), got: node("b", "3", "true"), wantFresh: true, wantLabel: "true"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var v view
			if tt.have != nil {
				v.set(tt.have)
			}
			n, fresh := v.set(tt.got)
			cur, _ := v.get()
			if fresh != tt.wantFresh || n.Labels[LabelReady] != tt.wantLabel || cur.Labels[LabelReady] != tt.wantLabel {
				t.Errorf("set: fresh %v, label %q (view %q); want fresh %v, label %q",
					fresh, n.Labels[LabelReady], cur.Labels[LabelReady], tt.wantFresh, tt.wantLabel)
			}
		})
	}
}
