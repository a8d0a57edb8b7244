package nodestatus

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/calico-prep/calico-prep/test/kubetest"
)

// TestListNodes lists real Nodes page by page: every node exactly once, with its InternalIPs,
// control-plane role and report, in as many requests as pages.
func TestListNodes(t *testing.T) {
	c := kube.Cluster(t)
	cs := c.Client(t)
	const total, limit = 57, 10
	want := map[string]NodeInfo{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, total)
	for i := range total {
		wg.Go(func() {
			n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{
				Name: fmt.Sprintf("list-%03d", i),
				// An unrelated large annotation, which ListNodes must skip.
				Annotations: map[string]string{"example.com/blob": strings.Repeat("x", 10000)},
				Labels:      map[string]string{},
			}}
			info := NodeInfo{Name: n.Name}
			if i%3 != 0 {
				info.Report = fmt.Sprintf(`{"v":1,"ready":true,"host":{"interfaces":[]},"n":%d}`, i)
				n.Annotations["calico-prep.io/report"] = info.Report
			}
			switch i % 10 {
			case 0:
				n.Labels["node-role.kubernetes.io/control-plane"] = ""
				info.ControlPlane = true
			case 5:
				n.Labels["node-role.kubernetes.io/master"] = ""
				info.ControlPlane = true
			}
			n.Status.Addresses = []corev1.NodeAddress{
				{Type: corev1.NodeHostName, Address: n.Name},
				{Type: corev1.NodeInternalIP, Address: fmt.Sprintf("10.0.0.%d", i+1)},
				{Type: corev1.NodeExternalIP, Address: fmt.Sprintf("203.0.113.%d", i+1)},
			}
			info.InternalIPs = []netip.Addr{netip.MustParseAddr(fmt.Sprintf("10.0.0.%d", i+1))}
			if i%4 == 0 {
				n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: fmt.Sprintf("fd00::%x", i+1)})
				info.InternalIPs = append(info.InternalIPs, netip.MustParseAddr(fmt.Sprintf("fd00::%x", i+1)))
			}
			if _, err := cs.CoreV1().Nodes().Create(t.Context(), n, metav1.CreateOptions{}); err != nil {
				errs <- err
				return
			}
			mu.Lock()
			want[n.Name] = info
			mu.Unlock()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("create node: %v", err)
	}

	client, err := New(c.Config(), "", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]NodeInfo{}
	if err := client.ListNodes(t.Context(), limit, func(n NodeInfo) error {
		if _, dup := got[n.Name]; dup {
			t.Errorf("node %s listed twice", n.Name)
		}
		got[n.Name] = n
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != total {
		t.Errorf("listed %d nodes, want %d", len(got), total)
	}
	for name, w := range want {
		g := got[name]
		if g.Name != w.Name || g.ControlPlane != w.ControlPlane || g.Report != w.Report || !slices.Equal(g.InternalIPs, w.InternalIPs) {
			t.Errorf("node %s:\n got %+v\nwant %+v", name, g, w)
		}
	}

	var lists []string
	for _, e := range c.AuditEvents(t, kubetest.AdminUser) {
		if e.UserAgent == "calico-prep" && e.Verb == "list" && e.Resource == "nodes" {
			lists = append(lists, e.RequestURI)
		}
	}
	if pages := (total + limit - 1) / limit; len(lists) != pages {
		t.Errorf("%d list requests, want one per page (%d): %q", len(lists), pages, lists)
	}

	stop := errors.New("stop")
	calls := 0
	err = client.ListNodes(t.Context(), limit, func(NodeInfo) error { calls++; return stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Errorf("an error from fn: ListNodes returned %v after %d calls, want it at once", err, calls)
	}
}

func TestDecodeNodeList(t *testing.T) {
	tests := []struct {
		name  string
		body  string
		names []string
		token string
		err   string
	}{
		{name: "metadata first", body: `{"kind":"NodeList","metadata":{"continue":"abc","resourceVersion":"5"},"items":[{"metadata":{"name":"a"}},{"metadata":{"name":"b"}}]}`, names: []string{"a", "b"}, token: "abc"},
		{name: "metadata last", body: `{"items":[{"metadata":{"name":"a"}}],"metadata":{"continue":"x"}}`, names: []string{"a"}, token: "x"},
		{name: "null items", body: `{"metadata":{},"items":null}`},
		{name: "empty", body: `{"items":[]}`},
		{name: "truncated", body: `{"items":[{"metadata":{"name":"a"}}`, names: []string{"a"}, err: "decode node"}, // the JSON error's wording differs between Go releases
		{name: "not an object", body: `[]`, err: `decode node list: got [, want "{"`},
		{name: "items not an array", body: `{"items":{}}`, err: "decode node list items: got {, want an array"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var names []string
			token, err := decodeNodeList(strings.NewReader(tt.body), func(n NodeInfo) error {
				names = append(names, n.Name)
				return nil
			})
			if tt.err != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.err) {
					t.Errorf("err = %v, want it to start with %q", err, tt.err)
				}
			} else if err != nil || token != tt.token {
				t.Errorf("token %q, err %v; want %q", token, err, tt.token)
			}
			if !slices.Equal(names, tt.names) {
				t.Errorf("names = %q, want %q", names, tt.names)
			}
		})
	}
}
