// Package nodestatus tells the cluster whether this node is prepared for Calico: the label
// calico-prep.io/ready (for calico-node's nodeAffinity), the NodeCondition CalicoPrepReady, the
// compact report annotation and an Event at each transition. It also watches its own Node (for
// the InternalIP that kubernetes-internal-ip autodetection needs) and counts nodes for Typha advice.
//
// It talks to the API server through client-go's REST client over a minimal scheme and plain
// JSON bodies of its own small types (types.go) instead of the typed clientset and
// k8s.io/api: the clientset links every API group into the binary (an agent built with it idled
// at 26.6 MiB RSS against 17.4–17.9 MiB with the REST client, measured on 2 cores in 2026), and
// core/v1 alone adds 1.8 MB of binary.
package nodestatus

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/calico-prep/calico-prep/internal/kubeclient"
)

// Names calico-prep owns on the Node. Never under *.kubernetes.io.
const (
	// LabelReady is the live readiness: "true" while no check fails. For alerts and
	// kubectl wait, not for scheduling calico-node: the DaemonSet controller deletes a daemon
	// pod whose node stops matching its required node affinity, so gating calico-node on a
	// label that can turn false would evict it from a node at the first failed check.
	LabelReady = "calico-prep.io/ready"
	// LabelPrepared is set to "true" the first time the node is ready and never set back: it
	// gates calico-node's scheduling onto the node without ever evicting it.
	LabelPrepared    = "calico-prep.io/prepared"
	AnnotationReport = "calico-prep.io/report"
	ConditionType    = "CalicoPrepReady"
	FieldManager     = "calico-prep"
	// EventNamespace is where Events about Nodes live, as kubelet writes them.
	EventNamespace = "default"
)

// ErrStandalone means there is no kubeconfig and no in-cluster environment: the agent prepares
// the host and serves metrics without Node reporting.
var ErrStandalone = errors.New("no kubeconfig and not running in a cluster")

// LoadConfig returns the REST config from kubeconfig (a path, or a list of paths as KUBECONFIG
// allows) with its current context or the one named, else the in-cluster config, else
// ErrStandalone.
func LoadConfig(kubeconfig, kubeContext string) (*rest.Config, error) {
	if kubeconfig != "" {
		paths := filepath.SplitList(kubeconfig)
		// clientcmd skips missing files in a list; a mistyped path should say so instead.
		if !slices.ContainsFunc(paths, func(p string) bool { _, err := os.Stat(p); return err == nil }) {
			return nil, fmt.Errorf("load kubeconfig %q: no such file", kubeconfig)
		}
		rules := &clientcmd.ClientConfigLoadingRules{Precedence: paths}
		cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: kubeContext}).ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("load kubeconfig %q: %w", kubeconfig, err)
		}
		return cfg, nil
	}
	cfg, err := rest.InClusterConfig()
	if errors.Is(err, rest.ErrNotInCluster) {
		return nil, ErrStandalone
	}
	if err != nil {
		return nil, fmt.Errorf("load in-cluster config: %w", err)
	}
	return cfg, nil
}

// Client reads and writes one Node.
type Client struct {
	rc   rest.Interface
	node string
	log  *slog.Logger
	now  func() time.Time
	view view
}

// New returns a client for the named node.
func New(cfg *rest.Config, node string, log *slog.Logger) (*Client, error) {
	rc, err := kubeclient.New(cfg)
	if err != nil {
		return nil, err
	}
	return &Client{rc: rc, node: node, log: log, now: time.Now}, nil
}

// Node is what the agent needs to know of its Node object.
type Node struct {
	InternalIPs     []netip.Addr
	Labels          map[string]string
	Annotations     map[string]string
	Condition       *Condition // ours, nil when absent
	ResourceVersion string
}

func nodeFrom(n *nodeObject) Node {
	out := Node{InternalIPs: internalIPs(n.Status.Addresses), Labels: n.Metadata.Labels, Annotations: n.Metadata.Annotations, ResourceVersion: n.Metadata.ResourceVersion}
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == ConditionType {
			out.Condition = &n.Status.Conditions[i]
		}
	}
	return out
}
