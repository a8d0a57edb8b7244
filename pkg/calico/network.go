package calico

// Encapsulation is how Calico carries pod traffic between nodes.
type Encapsulation string

const (
	EncapIPIP  Encapsulation = "ipip"
	EncapVXLAN Encapsulation = "vxlan"
	EncapNone  Encapsulation = "none"
)

// DefaultIPv4Pool is calico-node's IPv4 pool when neither CALICO_IPV4POOL_CIDR nor kubeadm's
// podSubnet says otherwise.
const DefaultIPv4Pool = "192.168.0.0/16"

// Ports and protocols between nodes, from Calico's network requirements
// (https://docs.tigera.io/calico/latest/getting-started/kubernetes/requirements#network-requirements)
// and Felix's defaults (https://docs.tigera.io/calico/latest/reference/resources/felixconfig).
const (
	BGPPort = 179
	// IPIPProtocol is IP protocol 4 by its /etc/protocols name; "ipip" there is protocol 94.
	IPIPProtocol    = "ipencap"
	VXLANPort       = 4789 // Felix's vxlanPort
	VXLANVNI        = 4096 // Felix's vxlanVNI
	TyphaPort       = 5473
	WireGuardPort   = 51820 // Felix's wireguardListeningPort
	WireGuardv6Port = 51821 // Felix's wireguardListeningPortV6
)

// Features are the networking choices that decide what must be open between nodes.
type Features struct {
	BGP           bool
	Encapsulation Encapsulation
	Typha         bool
	WireGuard     bool
	// IPv6 is true when Calico has an IPv6 pool (WireGuard then listens on its IPv6 port too).
	IPv6 bool
}

// Opening is one port, or one whole IP protocol, that Calico's nodes exchange traffic on.
type Opening struct {
	// Port and Protocol ("tcp", "udp") name a port; IPProtocol names an IP protocol instead.
	Port       uint16
	Protocol   string
	IPProtocol string
	// For names the Calico feature that needs it, e.g. "BGP".
	For string
}

// Openings returns what features need open between nodes, in a stable order.
func Openings(f Features) []Opening {
	var out []Opening
	if f.BGP {
		out = append(out, Opening{Port: BGPPort, Protocol: "tcp", For: "BGP"})
	}
	switch f.Encapsulation {
	case EncapIPIP:
		out = append(out, Opening{IPProtocol: IPIPProtocol, For: "IPIP encapsulation"})
	case EncapVXLAN:
		out = append(out, Opening{Port: VXLANPort, Protocol: "udp", For: "VXLAN encapsulation"})
	}
	if f.Typha {
		out = append(out, Opening{Port: TyphaPort, Protocol: "tcp", For: "Typha"})
	}
	if f.WireGuard {
		out = append(out, Opening{Port: WireGuardPort, Protocol: "udp", For: "WireGuard"})
		if f.IPv6 {
			out = append(out, Opening{Port: WireGuardv6Port, Protocol: "udp", For: "WireGuard over IPv6"})
		}
	}
	return out
}

// Typha sizing for the Kubernetes datastore
// (https://docs.tigera.io/calico/latest/getting-started/kubernetes/self-managed-onprem/onpremises):
// above TyphaThreshold nodes use Typha, at least one replica per 200 nodes, at least 3, at most 20.
const TyphaThreshold = 50

// TyphaReplicas returns Calico's recommended Typha replica count for a cluster of nodes.
func TyphaReplicas(nodes int64) int64 { return min(max((nodes+199)/200, 3), 20) }
