package calicoconfig

import (
	"encoding/json"
	"fmt"
	"math"
	"net/netip"
	"strings"

	"github.com/calico-prep/calico-prep/pkg/autodetect"
)

// The parts of Calico's resources that decide what a node needs, as the API serves them in
// JSON. The same spec in both of Calico's API groups (crd.projectcalico.org/v1 stores the v3
// spec). Small local types, not Calico's API module: that would link Calico's whole API and
// its dependencies into the agent.

type felixConfigurationObject struct {
	Spec struct {
		VXLANPort                *int64  `json:"vxlanPort"`
		VXLANVNI                 *int64  `json:"vxlanVNI"`
		WireguardEnabled         *bool   `json:"wireguardEnabled"`
		WireguardEnabledV6       *bool   `json:"wireguardEnabledV6"`
		WireguardListeningPort   *int64  `json:"wireguardListeningPort"`
		WireguardListeningPortV6 *int64  `json:"wireguardListeningPortV6"`
		PrometheusMetricsEnabled *bool   `json:"prometheusMetricsEnabled"`
		PrometheusMetricsPort    *int64  `json:"prometheusMetricsPort"`
		BPFEnabled               *bool   `json:"bpfEnabled"`
		NFTablesMode             *string `json:"nftablesMode"`
	} `json:"spec"`
}

type bgpConfigurationObject struct {
	Spec struct {
		ListenPort *int64 `json:"listenPort"`
	} `json:"spec"`
}

type ipPoolObject struct {
	Metadata meta `json:"metadata"`
	Spec     struct {
		CIDR      string `json:"cidr"`
		IPIPMode  string `json:"ipipMode"`
		VXLANMode string `json:"vxlanMode"`
		Disabled  bool   `json:"disabled"`
	} `json:"spec"`
}

type installationObject struct {
	Spec struct {
		CalicoNetwork *struct {
			BGP     string `json:"bgp"`
			IPPools []struct {
				CIDR          string `json:"cidr"`
				Encapsulation string `json:"encapsulation"`
			} `json:"ipPools"`
			LinuxDataplane             string         `json:"linuxDataplane"`
			NodeAddressAutodetectionV4 *autodetection `json:"nodeAddressAutodetectionV4"`
			NodeAddressAutodetectionV6 *autodetection `json:"nodeAddressAutodetectionV6"`
		} `json:"calicoNetwork"`
		NodeMetricsPort  *int64 `json:"nodeMetricsPort"`
		TyphaMetricsPort *int64 `json:"typhaMetricsPort"`
	} `json:"spec"`
}

// autodetection is the operator's NodeAddressAutodetection: one of its fields is set.
type autodetection struct {
	FirstFound    *bool    `json:"firstFound"`
	Kubernetes    string   `json:"kubernetes"`
	Interface     string   `json:"interface"`
	SkipInterface string   `json:"skipInterface"`
	CanReach      string   `json:"canReach"`
	CIDRs         []string `json:"cidrs"`
}

type serviceObject struct {
	Metadata meta `json:"metadata"`
	Spec     struct {
		Ports []struct {
			Name       string          `json:"name"`
			Port       int64           `json:"port"`
			TargetPort json.RawMessage `json:"targetPort"`
		} `json:"ports"`
	} `json:"spec"`
}

type configMapObject struct {
	Data map[string]string `json:"data"`
}

// Felix is what a FelixConfiguration sets; nil where it says nothing.
type Felix struct {
	VXLANPort, WireGuardPort, WireGuardPortV6, MetricsPort *uint16
	VXLANVNI                                               *uint32
	WireGuard, WireGuardV6, Metrics, BPF                   *bool
	NFTablesMode                                           string
}

// Pool is one IPPool.
type Pool struct {
	Name string
	CIDR netip.Prefix
	// Encapsulation is ipip or vxlan when the pool's mode is Always or CrossSubnet, else none.
	Encapsulation string
	Disabled      bool
}

// Installation is what the operator's Installation sets; zero where it says nothing.
type Installation struct {
	BGP              *bool
	Pools            []Pool
	Dataplane        string // Iptables, BPF, VPP or Nftables
	Method4, Method6 string // calico-node's autodetection method strings
	NodeMetricsPort  *uint16
	TyphaMetricsPort *uint16
}

// TyphaService is Typha's Service.
type TyphaService struct {
	Namespace string
	Port      uint16
}

// fieldError names a bad value in one of Calico's resources.
func fieldError(field string, format string, args ...any) error {
	return fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...))
}

func port(field string, v *int64) (*uint16, error) {
	if v == nil {
		return nil, nil
	}
	if *v < 1 || *v > math.MaxUint16 {
		return nil, fieldError(field, "%d is not a port (want 1-65535)", *v)
	}
	p := uint16(*v)
	return &p, nil
}

func parseFelix(raw json.RawMessage) (*Felix, error) {
	var o felixConfigurationObject
	if err := json.Unmarshal(raw, &o); err != nil {
		return nil, err
	}
	s := o.Spec
	f := &Felix{WireGuard: s.WireguardEnabled, WireGuardV6: s.WireguardEnabledV6, Metrics: s.PrometheusMetricsEnabled, BPF: s.BPFEnabled}
	var err error
	if f.VXLANPort, err = port("spec.vxlanPort", s.VXLANPort); err != nil {
		return nil, err
	}
	if f.WireGuardPort, err = port("spec.wireguardListeningPort", s.WireguardListeningPort); err != nil {
		return nil, err
	}
	if f.WireGuardPortV6, err = port("spec.wireguardListeningPortV6", s.WireguardListeningPortV6); err != nil {
		return nil, err
	}
	if f.MetricsPort, err = port("spec.prometheusMetricsPort", s.PrometheusMetricsPort); err != nil {
		return nil, err
	}
	if s.VXLANVNI != nil {
		// A VXLAN network identifier has 24 bits.
		if *s.VXLANVNI < 1 || *s.VXLANVNI >= 1<<24 {
			return nil, fieldError("spec.vxlanVNI", "%d is not a VXLAN VNI (want 1-16777215)", *s.VXLANVNI)
		}
		v := uint32(*s.VXLANVNI)
		f.VXLANVNI = &v
	}
	if s.NFTablesMode != nil {
		switch *s.NFTablesMode {
		case "Enabled", "Disabled", "Auto":
			f.NFTablesMode = *s.NFTablesMode
		default:
			return nil, fieldError("spec.nftablesMode", "%q is not Enabled, Disabled or Auto", *s.NFTablesMode)
		}
	}
	return f, nil
}

func parseBGP(raw json.RawMessage) (*uint16, error) {
	var o bgpConfigurationObject
	if err := json.Unmarshal(raw, &o); err != nil {
		return nil, err
	}
	return port("spec.listenPort", o.Spec.ListenPort)
}

// poolCIDR parses a pool's CIDR as Calico's validation takes it: a network address.
func poolCIDR(field, s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fieldError(field, "%q is not a CIDR", s)
	}
	if p.Masked() != p {
		return netip.Prefix{}, fieldError(field, "%q has host bits set (network address %s)", s, p.Masked())
	}
	return p, nil
}

func poolMode(field, s string) (on bool, err error) {
	switch s {
	case "", "Never":
		return false, nil
	case "Always", "CrossSubnet":
		return true, nil
	}
	return false, fieldError(field, "%q is not Always, CrossSubnet or Never", s)
}

func parsePool(raw json.RawMessage) (Pool, error) {
	var o ipPoolObject
	if err := json.Unmarshal(raw, &o); err != nil {
		return Pool{}, err
	}
	p := Pool{Name: o.Metadata.Name, Disabled: o.Spec.Disabled, Encapsulation: "none"}
	var err error
	if p.CIDR, err = poolCIDR("spec.cidr", o.Spec.CIDR); err != nil {
		return Pool{}, err
	}
	ipip, err := poolMode("spec.ipipMode", o.Spec.IPIPMode)
	if err != nil {
		return Pool{}, err
	}
	vxlan, err := poolMode("spec.vxlanMode", o.Spec.VXLANMode)
	if err != nil {
		return Pool{}, err
	}
	switch {
	case ipip && vxlan:
		return Pool{}, fieldError("spec", "ipipMode %q and vxlanMode %q are both enabled; Calico allows one", o.Spec.IPIPMode, o.Spec.VXLANMode)
	case ipip && p.CIDR.Addr().Is6():
		return Pool{}, fieldError("spec.ipipMode", "%q on IPv6 pool %s: IP-in-IP carries IPv4 only", o.Spec.IPIPMode, p.CIDR)
	case ipip:
		p.Encapsulation = "ipip"
	case vxlan:
		p.Encapsulation = "vxlan"
	}
	return p, nil
}

func parseInstallation(raw json.RawMessage) (*Installation, error) {
	var o installationObject
	if err := json.Unmarshal(raw, &o); err != nil {
		return nil, err
	}
	in := &Installation{}
	var err error
	if in.NodeMetricsPort, err = port("spec.nodeMetricsPort", o.Spec.NodeMetricsPort); err != nil {
		return nil, err
	}
	if in.TyphaMetricsPort, err = port("spec.typhaMetricsPort", o.Spec.TyphaMetricsPort); err != nil {
		return nil, err
	}
	n := o.Spec.CalicoNetwork
	if n == nil {
		return in, nil
	}
	switch n.BGP {
	case "":
	case "Enabled", "Disabled":
		bgp := n.BGP == "Enabled"
		in.BGP = &bgp
	default:
		return nil, fieldError("spec.calicoNetwork.bgp", "%q is not Enabled or Disabled", n.BGP)
	}
	in.Dataplane = n.LinuxDataplane
	for i, p := range n.IPPools {
		field := fmt.Sprintf("spec.calicoNetwork.ipPools[%d]", i)
		cidr, err := poolCIDR(field+".cidr", p.CIDR)
		if err != nil {
			return nil, err
		}
		// The operator's default encapsulation is IPIP.
		pool := Pool{Name: field, CIDR: cidr}
		switch p.Encapsulation {
		case "", "IPIP", "IPIPCrossSubnet":
			pool.Encapsulation = "ipip"
		case "VXLAN", "VXLANCrossSubnet":
			pool.Encapsulation = "vxlan"
		case "None":
			pool.Encapsulation = "none"
		default:
			return nil, fieldError(field+".encapsulation", "%q is not IPIP, IPIPCrossSubnet, VXLAN, VXLANCrossSubnet or None", p.Encapsulation)
		}
		if pool.Encapsulation == "ipip" && cidr.Addr().Is6() {
			pool.Encapsulation = "none" // the operator never encapsulates IPv6 with IP-in-IP
		}
		in.Pools = append(in.Pools, pool)
	}
	if in.Method4, err = methodOf("spec.calicoNetwork.nodeAddressAutodetectionV4", n.NodeAddressAutodetectionV4); err != nil {
		return nil, err
	}
	if in.Method6, err = methodOf("spec.calicoNetwork.nodeAddressAutodetectionV6", n.NodeAddressAutodetectionV6); err != nil {
		return nil, err
	}
	return in, nil
}

// methodOf turns the operator's NodeAddressAutodetection into the method string the operator
// gives calico-node (IP_AUTODETECTION_METHOD); "" when it is not set.
func methodOf(field string, a *autodetection) (string, error) {
	if a == nil {
		return "", nil
	}
	var m string
	switch {
	case a.FirstFound != nil && *a.FirstFound:
		m = "first-found"
	case a.Kubernetes == "NodeInternalIP":
		m = "kubernetes-internal-ip"
	case a.Kubernetes != "":
		return "", fieldError(field+".kubernetes", "%q is not NodeInternalIP", a.Kubernetes)
	case a.Interface != "":
		m = "interface=" + a.Interface
	case a.SkipInterface != "":
		m = "skip-interface=" + a.SkipInterface
	case a.CanReach != "":
		m = "can-reach=" + a.CanReach
	case len(a.CIDRs) > 0:
		m = "cidr=" + strings.Join(a.CIDRs, ",")
	default:
		return "", nil
	}
	if _, err := autodetect.ParseMethod(m); err != nil {
		return "", fieldError(field, "%v", err)
	}
	return m, nil
}

// parseTypha reads Typha's port from its Service: the target port when it is a number (Typha
// runs on the host network, so that is the port on the node), else the Service's port.
func parseTypha(raw json.RawMessage) (*TyphaService, error) {
	var o serviceObject
	if err := json.Unmarshal(raw, &o); err != nil {
		return nil, err
	}
	if len(o.Spec.Ports) == 0 {
		return nil, fieldError("spec.ports", "no port")
	}
	p := o.Spec.Ports[0]
	for _, q := range o.Spec.Ports {
		if q.Name == "calico-typha" {
			p = q
		}
	}
	n := p.Port
	var target int64
	if json.Unmarshal(p.TargetPort, &target) == nil && target != 0 {
		n = target
	}
	port, err := port("spec.ports.targetPort", &n)
	if err != nil {
		return nil, err
	}
	return &TyphaService{Namespace: o.Metadata.Namespace, Port: *port}, nil
}
