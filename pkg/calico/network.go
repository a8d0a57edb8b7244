package calico

import "slices"

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
	// FelixMetricsPort is Felix's prometheusMetricsPort, served when prometheusMetricsEnabled.
	FelixMetricsPort = 9091
	// TyphaMetricsPort is Typha's default Prometheus port (TYPHA_PROMETHEUSMETRICSPORT).
	TyphaMetricsPort = 9093
)

// Ports are the ports Calico's nodes listen on; a zero field means Calico's default.
type Ports struct {
	BGP, VXLAN, Typha, WireGuard, WireGuardv6 uint16
}

// OrDefaults returns p with every zero field set to Calico's default.
func (p Ports) OrDefaults() Ports {
	or := func(v, d uint16) uint16 {
		if v == 0 {
			return d
		}
		return v
	}
	return Ports{
		BGP: or(p.BGP, BGPPort), VXLAN: or(p.VXLAN, VXLANPort), Typha: or(p.Typha, TyphaPort),
		WireGuard: or(p.WireGuard, WireGuardPort), WireGuardv6: or(p.WireGuardv6, WireGuardv6Port),
	}
}

// Features are the networking choices that decide what must be open between nodes.
type Features struct {
	BGP           bool
	Encapsulation Encapsulation
	// OtherEncapsulations are used by some IP pools besides Encapsulation (pools may differ,
	// e.g. while migrating from IP-in-IP to VXLAN).
	OtherEncapsulations []Encapsulation
	Typha               bool
	WireGuard           bool
	// IPv6 is true when Calico has an IPv6 pool: with WireGuard (calico-node's environment
	// has one switch for both families), WireGuard then listens on its IPv6 port too.
	IPv6 bool
	// WireGuardv6 is WireGuard over IPv6 on its own (Felix's wireguardEnabledV6).
	WireGuardv6 bool
	// Ports override Calico's default ports.
	Ports Ports
	// FelixMetricsPort and TyphaMetricsPort are opened for Prometheus when not zero.
	FelixMetricsPort, TyphaMetricsPort uint16
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
	p := f.Ports.OrDefaults()
	var out []Opening
	if f.BGP {
		out = append(out, Opening{Port: p.BGP, Protocol: "tcp", For: "BGP"})
	}
	encaps := append([]Encapsulation{f.Encapsulation}, f.OtherEncapsulations...)
	if slices.Contains(encaps, EncapIPIP) {
		out = append(out, Opening{IPProtocol: IPIPProtocol, For: "IPIP encapsulation"})
	}
	if slices.Contains(encaps, EncapVXLAN) {
		out = append(out, Opening{Port: p.VXLAN, Protocol: "udp", For: "VXLAN encapsulation"})
	}
	if f.Typha {
		out = append(out, Opening{Port: p.Typha, Protocol: "tcp", For: "Typha"})
	}
	if f.WireGuard {
		out = append(out, Opening{Port: p.WireGuard, Protocol: "udp", For: "WireGuard"})
	}
	if f.WireGuardv6 || f.WireGuard && f.IPv6 {
		out = append(out, Opening{Port: p.WireGuardv6, Protocol: "udp", For: "WireGuard over IPv6"})
	}
	if f.FelixMetricsPort != 0 {
		out = append(out, Opening{Port: f.FelixMetricsPort, Protocol: "tcp", For: "Felix metrics"})
	}
	if f.TyphaMetricsPort != 0 {
		out = append(out, Opening{Port: f.TyphaMetricsPort, Protocol: "tcp", For: "Typha metrics"})
	}
	return out
}

// Typha sizing for the Kubernetes datastore
// (https://docs.tigera.io/calico/latest/getting-started/kubernetes/self-managed-onprem/onpremises):
// above TyphaThreshold nodes use Typha, at least one replica per 200 nodes, at least 3, at most 20.
const TyphaThreshold = 50

// TyphaReplicas returns Calico's recommended Typha replica count for a cluster of nodes.
func TyphaReplicas(nodes int64) int64 { return min(max((nodes+199)/200, 3), 20) }
