package nodestatus

import (
	"net/netip"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// The parts of core/v1 objects that calico-prep reads and writes, as the API serves them in
// JSON. Not k8s.io/api/core/v1: that package alone adds 1.8 MB to the binary, its init builds
// documentation maps in memory on every node, and decoding a whole Node into it keeps fields
// (images, managedFields) the agent never reads.

type objectMeta struct {
	Name            string            `json:"name,omitempty"`
	Namespace       string            `json:"namespace,omitempty"`
	UID             types.UID         `json:"uid,omitempty"`
	ResourceVersion string            `json:"resourceVersion,omitempty"`
	Labels          map[string]string `json:"labels,omitempty"`
	Annotations     map[string]string `json:"annotations,omitempty"`
}

// nodeObject is a Node as far as the agent reads it.
type nodeObject struct {
	Metadata objectMeta `json:"metadata"`
	Status   struct {
		Addresses  []nodeAddress `json:"addresses"`
		Conditions []Condition   `json:"conditions"`
	} `json:"status"`
}

type nodeAddress struct {
	Type    string `json:"type"`
	Address string `json:"address"`
}

// internalIPs are the parsable InternalIP addresses, in the order the Node lists them.
func internalIPs(addrs []nodeAddress) []netip.Addr {
	var out []netip.Addr
	for _, a := range addrs {
		if ip, err := netip.ParseAddr(a.Address); a.Type == internalIP && err == nil {
			out = append(out, ip)
		}
	}
	return out
}

// internalIP is the address type of a Node's InternalIP.
const internalIP = "InternalIP"

// Condition is a NodeCondition.
type Condition struct {
	Type string `json:"type"`
	// Status is "True", "False" or "Unknown".
	Status             string      `json:"status"`
	LastHeartbeatTime  metav1.Time `json:"lastHeartbeatTime,omitempty"`
	LastTransitionTime metav1.Time `json:"lastTransitionTime,omitempty"`
	Reason             string      `json:"reason,omitempty"`
	Message            string      `json:"message,omitempty"`
}

// event is a core/v1 Event about a Node, as kubelet writes them.
type event struct {
	APIVersion          string      `json:"apiVersion"`
	Kind                string      `json:"kind"`
	Metadata            objectMeta  `json:"metadata"`
	InvolvedObject      objectRef   `json:"involvedObject"`
	Reason              string      `json:"reason"`
	Message             string      `json:"message"`
	Source              eventSource `json:"source"`
	FirstTimestamp      metav1.Time `json:"firstTimestamp"`
	LastTimestamp       metav1.Time `json:"lastTimestamp"`
	Count               int32       `json:"count"`
	Type                string      `json:"type"`
	ReportingController string      `json:"reportingComponent"`
	ReportingInstance   string      `json:"reportingInstance"`
}

type objectRef struct {
	APIVersion string    `json:"apiVersion"`
	Kind       string    `json:"kind"`
	Name       string    `json:"name"`
	UID        types.UID `json:"uid,omitempty"`
}

type eventSource struct {
	Component string `json:"component"`
	Host      string `json:"host"`
}
