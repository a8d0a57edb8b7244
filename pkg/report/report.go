// Package report defines the compact per-node report that the agent writes into the Node's
// calico-prep.io/report annotation: what calico-prep saw and did on the node, for operators
// reading `kubectl get node -o yaml` and for `agent plan`, which re-evaluates Calico's
// settings against every node's network.
//
// The report changes only when the node changes: it carries no timestamps, and it leaves out
// what churns with pods (workload veths, Calico's block routes), so a steady node causes no
// API writes.
package report

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/calico-prep/calico-prep/pkg/calico"

	"github.com/calico-prep/calico-prep/pkg/autodetect"
	"github.com/calico-prep/calico-prep/pkg/check"
	"github.com/calico-prep/calico-prep/pkg/host"
)

// Version is the schema version; readers reject reports with a newer one.
const Version = 1

// Node is the report of one node.
type Node struct {
	V     int  `json:"v"`
	Ready bool `json:"ready"`
	// Failing lists the failing checks in order; the first names the NodeCondition.
	Failing  []Failure `json:"failing,omitempty"`
	Disabled []string  `json:"disabled,omitempty"`
	// Autodetect holds, per IP family in use, what the configured method picks.
	Autodetect []autodetect.Result `json:"autodetect,omitempty"`
	// Pools are the pod CIDRs the node was checked against.
	Pools []netip.Prefix `json:"pools,omitempty"`
	// Firewall is what calico-prep keeps open in firewalld, e.g. "public: 179/tcp".
	Firewall []string `json:"firewall,omitempty"`
	// Unmanaged are the Calico devices NetworkManager leaves unmanaged.
	Unmanaged []string `json:"unmanaged,omitempty"`
	// NetworkdUnmanaged are the Calico links systemd-networkd leaves unmanaged.
	NetworkdUnmanaged []string `json:"networkdUnmanaged,omitempty"`
	// Advice holds recommendations that are not failures (e.g. Typha above 50 nodes). It
	// changes only when the recommendation does, not with every change in the node count.
	Advice []string `json:"advice,omitempty"`
	// Warnings name settings given explicitly that disagree with Calico's resources, and
	// Calico configurations that cannot work (check calico/config).
	Warnings []string `json:"warnings,omitempty"`
	// Host is the node's network without Calico's own interfaces and routes.
	Host host.Snapshot `json:"host"`
	// Truncated says Host was cut to keep the annotation small (see MaxSize).
	Truncated bool `json:"truncated,omitempty"`
}

// MaxSize bounds the annotation. All annotations of an object share 256 KiB, and every node
// writes its report again when it changes.
const MaxSize = 64 << 10

// Failure is one failing check.
type Failure struct {
	Check   string `json:"check"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

// FromChecks fills what a pass says from its entries: Ready, Failing and Disabled, the
// firewalld rules calico-prep keeps and the tunnel devices NetworkManager and systemd-networkd
// leave unmanaged.
func (n *Node) FromChecks(rep check.Report) {
	n.Ready = rep.Ready
	n.Failing, n.Disabled, n.Firewall, n.Unmanaged, n.NetworkdUnmanaged = nil, nil, nil, nil, nil
	for _, e := range rep.Entries {
		switch e.Status {
		case check.Fail:
			n.Failing = append(n.Failing, Failure{Check: e.Name, Reason: e.Reason, Message: e.Message})
		case check.Disabled:
			n.Disabled = append(n.Disabled, e.Name)
		case check.Pass:
			if rule, zone := e.Facts[check.FactRule], e.Facts[check.FactZone]; rule != "" {
				n.Firewall = append(n.Firewall, zone+": "+rule)
			}
			for k, v := range e.Facts {
				// Workload veths come and go with pods; the report names only the tunnel devices.
				if dev, ok := strings.CutPrefix(k, check.FactUnmanagedPrefix); ok && v == "true" && !strings.HasPrefix(dev, calico.WorkloadPrefix) {
					n.Unmanaged = append(n.Unmanaged, dev)
				}
				if dev, ok := strings.CutPrefix(k, check.FactNetworkdUnmanagedPrefix); ok && v == "true" && !strings.HasPrefix(dev, calico.WorkloadPrefix) {
					n.NetworkdUnmanaged = append(n.NetworkdUnmanaged, dev)
				}
			}
		}
	}
	slices.Sort(n.Unmanaged)
	slices.Sort(n.NetworkdUnmanaged)
}

// IsCalicoInterface reports whether name is an interface Calico creates: workload veths and
// its tunnel devices. They appear and vanish with pods and Calico itself, so the report and the
// plan leave them out.
func IsCalicoInterface(name string) bool { return calico.IsInterface(name) }

// isServiceInterface reports whether name is a dummy interface that holds service addresses:
// kube-proxy's kube-ipvs0 (every ClusterIP in IPVS mode) and node-local-dns. Their addresses
// change with every Service, which would make every node rewrite its report.
func isServiceInterface(name string) bool {
	return strings.HasPrefix(name, "kube-ipvs") || strings.HasPrefix(name, "nodelocaldns")
}

// HostOf returns the part of a snapshot worth reporting: interfaces that have addresses,
// without Calico's and without service dummies, and routes that are not Calico's (via its
// interfaces or installed by BIRD or Felix for its blocks).
func HostOf(s host.Snapshot) host.Snapshot {
	var out host.Snapshot
	for _, i := range s.Interfaces {
		if len(i.Addrs) == 0 || IsCalicoInterface(i.Name) || isServiceInterface(i.Name) {
			continue
		}
		out.Interfaces = append(out.Interfaces, i)
	}
	for _, r := range s.Routes {
		if IsCalicoInterface(r.Dev) || isServiceInterface(r.Dev) || r.Protocol == "bird" || r.Protocol == "80" {
			continue
		}
		out.Routes = append(out.Routes, r)
	}
	return out
}

// Encode returns the compact JSON of the annotation, at most MaxSize bytes: a node with a huge
// routing table reports its interfaces without routes, and if that is still too big, no host
// network at all, marked Truncated (agent plan then treats the node as unknown).
func (n Node) Encode() (string, error) {
	n.V = Version
	for _, cut := range []func(*Node){
		func(*Node) {},
		func(n *Node) { n.Host.Routes, n.Truncated = nil, true },
		func(n *Node) { n.Host, n.Truncated = host.Snapshot{}, true },
	} {
		cut(&n)
		b, err := json.Marshal(n)
		if err != nil {
			return "", fmt.Errorf("encode report: %w", err)
		}
		if len(b) <= MaxSize {
			return string(b), nil
		}
	}
	return "", fmt.Errorf("encode report: larger than %d bytes without the host network", MaxSize)
}

// Decode parses an annotation value.
func Decode(s string) (Node, error) {
	var n Node
	if err := json.Unmarshal([]byte(s), &n); err != nil {
		return Node{}, fmt.Errorf("decode report: %w", err)
	}
	if n.V < 1 || n.V > Version {
		return Node{}, fmt.Errorf("decode report: unsupported version %d", n.V)
	}
	return n, nil
}
