package autodetect

import (
	"context"
	"testing"

	"github.com/calico-prep/calico-prep/pkg/calico"
	"github.com/calico-prep/calico-prep/pkg/check"
	"github.com/calico-prep/calico-prep/pkg/host"
)

// TestAgreeCheck: calico-node's annotated choice against the prediction on a two-NIC node, the
// classic case where calico-node took the other interface.
func TestAgreeCheck(t *testing.T) {
	snap := host.Snapshot{Interfaces: []host.Interface{
		nic(1, "lo", "127.0.0.1/8"),
		nic(2, "ens33", "192.168.79.128/24"),
		nic(3, "ens34", "10.0.0.5/24"),
		{Index: 4, Name: "tunl0", Type: "ipip", Up: true},
		nic(5, "vxlan.calico", "10.244.7.0/32"),
	}}
	snapshot := func(context.Context) (host.Snapshot, error) { return snap, nil }
	for _, tt := range []struct {
		name, method string
		annotations  map[string]string
		status       check.Status
		reason, msg  string
	}{
		{name: "not annotated yet", method: "first-found", status: check.NotApplicable, reason: "CalicoNodeNotAnnotated",
			msg: "calico-node has not annotated the Node with the address it chose"},
		{name: "agrees", method: "interface=ens33",
			annotations: map[string]string{calico.AnnotationIPv4Address: "192.168.79.128/24", calico.AnnotationVXLANTunnelAddr: "10.244.7.0"},
			status:      check.Pass,
			msg:         "calico-node chose 192.168.79.128/24 on ens33, as interface=ens33 predicts; vxlan.calico has tunnel address 10.244.7.0"},
		// first-found walks the interfaces from the highest index down: ens34 on this node.
		{name: "the other NIC", method: "first-found",
			annotations: map[string]string{calico.AnnotationIPv4Address: "192.168.79.128/24"},
			status:      check.Fail, reason: "CalicoAddressMismatch",
			msg: "calico-node chose 192.168.79.128/24 (ens33), but first-found (IP_AUTODETECTION_METHOD) predicts 10.0.0.5/24 (ens34): calico-node was configured with another method, or this host's interfaces changed since it started"},
		{name: "an address this node does not have", method: "interface=ens33",
			annotations: map[string]string{calico.AnnotationIPv4Address: "172.16.0.9/16"},
			status:      check.Fail, reason: "CalicoAddressMismatch",
			msg: "calico-node chose 172.16.0.9/16 (on no interface of this node), but interface=ens33 (IP_AUTODETECTION_METHOD) predicts 192.168.79.128/24 (ens33): calico-node was configured with another method, or this host's interfaces changed since it started"},
		{name: "tunnel address missing from tunl0", method: "interface=ens33",
			annotations: map[string]string{calico.AnnotationIPv4Address: "192.168.79.128/24", calico.AnnotationIPIPTunnelAddr: "10.244.7.1"},
			status:      check.Fail, reason: "CalicoAddressMismatch",
			msg: "calico-node annotated tunnel address 10.244.7.1, but tunl0 has no address"},
		{name: "tunnel device absent: not checked", method: "interface=ens33",
			annotations: map[string]string{calico.AnnotationIPv4Address: "192.168.79.128/24", calico.AnnotationVXLANv6TunnelAddr: "fd00::1"},
			status:      check.Pass, msg: "calico-node chose 192.168.79.128/24 on ens33, as interface=ens33 predicts"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := NewAgreeCheck([]FamilyMethod{{Family: 4, Method: mustMethod(t, tt.method), From: "IP_AUTODETECTION_METHOD"}}, snapshot, nil,
				func() CalicoChoice { return ChoiceFromAnnotations(tt.annotations) })
			r := c.Verify(context.Background())
			if r.Status != tt.status || r.Reason != tt.reason && tt.reason != "" || r.Message != tt.msg {
				t.Errorf("got %s %s %q\nwant %s %s %q", r.Status, r.Reason, r.Message, tt.status, tt.reason, tt.msg)
			}
		})
	}
}
