package plan

import (
	"fmt"
	"strings"

	"github.com/calico-prep/calico-prep/pkg/calico"

	"github.com/calico-prep/calico-prep/pkg/autodetect"
)

// Typha is the datastore advice: Calico's Kubernetes datastore, with Typha to fan out its
// watches in larger clusters.
type Typha struct {
	Nodes       int    `json:"nodes"`
	Recommended bool   `json:"recommended"`
	Replicas    int    `json:"replicas"`
	Advice      string `json:"advice"`
}

// typhaAdvice counts every listed node, reported or not: each runs a calico-node that watches
// the datastore (sizing: calico.TyphaReplicas).
func typhaAdvice(nodes int) Typha {
	if nodes <= calico.TyphaThreshold {
		return Typha{Nodes: nodes, Advice: fmt.Sprintf("%d nodes: the Kubernetes datastore without Typha is enough up to %d nodes", nodes, calico.TyphaThreshold)}
	}
	r := int(calico.TyphaReplicas(int64(nodes)))
	return Typha{Nodes: nodes, Recommended: true, Replicas: r,
		Advice: fmt.Sprintf("%d nodes: use Typha with the Kubernetes datastore, %d replicas (one per 200 nodes, at least 3, at most 20)", nodes, r)}
}

// Opening is one firewalld opening every node needs.
type Opening struct {
	// Port is "PORT/PROTO" as firewalld's addPort takes it; Protocol an IP protocol name.
	Port     string `json:"port,omitempty"`
	Protocol string `json:"protocol,omitempty"`
	For      string `json:"for"`
}

func (o Opening) String() string {
	if o.Port != "" {
		return "port " + o.Port
	}
	return "protocol " + o.Protocol
}

// firewallFor lists what follows from the networking choices (calico.Openings): BGP's port, the
// encapsulation's protocol or port, Typha's port where it is advised, WireGuard's ports.
func firewallFor(opts Options, typha bool) []Opening {
	out := []Opening{}
	for _, o := range calico.Openings(calico.Features{
		BGP: opts.BGP, Encapsulation: opts.Encapsulation, Typha: typha, WireGuard: opts.WireGuard, IPv6: opts.IPv6,
	}) {
		if o.IPProtocol != "" {
			out = append(out, Opening{Protocol: o.IPProtocol, For: o.For})
			continue
		}
		out = append(out, Opening{Port: fmt.Sprintf("%d/%s", o.Port, o.Protocol), For: o.For})
	}
	return out
}

// EnvVar is one calico-node environment variable.
type EnvVar struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Env returns calico-node's environment for the plan, as calico.yaml's calico-node container
// takes it. Pools without a free CIDR are left out. Typha is not switched on here: it needs
// the calico-typha Deployment and Service of Calico's Typha manifest, not just a variable.
func (p Plan) Env() []EnvVar {
	var env []EnvVar
	add := func(name, value string) { env = append(env, EnvVar{name, value}) }
	onOff := func(on bool) string {
		if on {
			return "Always"
		}
		return "Never"
	}
	backend := "bird"
	if !p.BGP {
		backend = "vxlan"
		if p.Encapsulation != string(calico.EncapVXLAN) {
			backend = "none"
		}
	}
	add(calico.EnvNetworkingBackend, backend)
	for _, pool := range p.Pools {
		if pool.Family == 4 {
			add(calico.EnvIP, "autodetect")
			if pool.CIDR.IsValid() {
				add(calico.EnvIPv4PoolCIDR, pool.CIDR.String())
			}
			add(calico.EnvIPv4PoolIPIP, onOff(p.Encapsulation == string(calico.EncapIPIP)))
			add(calico.EnvIPv4PoolVXLAN, onOff(p.Encapsulation == string(calico.EncapVXLAN)))
			continue
		}
		add(calico.EnvIP6, "autodetect")
		add(calico.EnvIPv6Support, "true")
		if pool.CIDR.IsValid() {
			add(calico.EnvIPv6PoolCIDR, pool.CIDR.String())
		}
		// IPv6 has no IP-in-IP; with ipip the IPv6 pool is routed by BGP unencapsulated.
		add(calico.EnvIPv6PoolVXLAN, onOff(p.Encapsulation == string(calico.EncapVXLAN)))
	}
	for _, ad := range p.Autodetection {
		if ad.Best == "" {
			continue
		}
		if ad.Family == 4 {
			add(calico.EnvIPAutodetection, ad.Best)
		} else {
			add(calico.EnvIP6Autodetection, ad.Best)
		}
	}
	if p.WireGuard {
		add(calico.EnvWireGuardEnabled, "true")
	}
	return env
}

// DaemonSetPatch is a strategic-merge patch for calico.yaml's calico-node DaemonSet.
type DaemonSetPatch struct {
	APIVersion string        `json:"apiVersion"`
	Kind       string        `json:"kind"`
	Metadata   PatchMetadata `json:"metadata"`
	Spec       struct {
		Template struct {
			Spec struct {
				Containers []ContainerPatch `json:"containers"`
			} `json:"spec"`
		} `json:"template"`
	} `json:"spec"`
}

// PatchMetadata names the patched object.
type PatchMetadata struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace,omitempty"`
}

// ContainerPatch is merged into the container of the same name; env entries merge by name.
type ContainerPatch struct {
	Name           string      `json:"name"`
	Env            []EnvPatch  `json:"env"`
	LivenessProbe  *ProbePatch `json:"livenessProbe,omitempty"`
	ReadinessProbe *ProbePatch `json:"readinessProbe,omitempty"`
}

// EnvPatch sets one variable. ValueFrom is always written as null, which a strategic merge
// reads as "delete": calico.yaml takes CALICO_NETWORKING_BACKEND from a ConfigMap, and a value
// beside a valueFrom is rejected.
type EnvPatch struct {
	Name      string    `json:"name"`
	Value     string    `json:"value"`
	ValueFrom *struct{} `json:"valueFrom"`
}

// ProbePatch replaces a probe's command.
type ProbePatch struct {
	Exec struct {
		Command []string `json:"command"`
	} `json:"exec"`
}

// DaemonSetPatch returns the plan as a patch of calico.yaml's calico-node DaemonSet in
// kube-system. Without BGP there is no BIRD, so its liveness and readiness checks go as well,
// as Calico's VXLAN instructions say.
func (p Plan) DaemonSetPatch() DaemonSetPatch {
	d := DaemonSetPatch{APIVersion: "apps/v1", Kind: "DaemonSet", Metadata: PatchMetadata{Name: "calico-node", Namespace: "kube-system"}}
	c := ContainerPatch{Name: "calico-node"}
	for _, e := range p.Env() {
		c.Env = append(c.Env, EnvPatch{Name: e.Name, Value: e.Value})
	}
	if !p.BGP {
		c.LivenessProbe, c.ReadinessProbe = &ProbePatch{}, &ProbePatch{}
		c.LivenessProbe.Exec.Command = []string{"/bin/calico-node", "-felix-live"}
		c.ReadinessProbe.Exec.Command = []string{"/bin/calico-node", "-felix-ready"}
	}
	d.Spec.Template.Spec.Containers = []ContainerPatch{c}
	return d
}

// Installation is the tigera-operator's Installation with the fields the plan decides
// (operator.tigera.io/v1, spec.calicoNetwork). The operator always runs Typha and scales it
// with the node count itself; its typhaDeployment has no replica count to set.
type Installation struct {
	APIVersion string           `json:"apiVersion"`
	Kind       string           `json:"kind"`
	Metadata   PatchMetadata    `json:"metadata"`
	Spec       InstallationSpec `json:"spec"`
}

// InstallationSpec holds the calicoNetwork the plan decides.
type InstallationSpec struct {
	CalicoNetwork CalicoNetwork `json:"calicoNetwork"`
}

// CalicoNetwork is the operator's CalicoNetworkSpec, as far as the plan decides it.
type CalicoNetwork struct {
	BGP                        string                    `json:"bgp"`
	IPPools                    []IPPool                  `json:"ipPools"`
	NodeAddressAutodetectionV4 *NodeAddressAutodetection `json:"nodeAddressAutodetectionV4,omitempty"`
	NodeAddressAutodetectionV6 *NodeAddressAutodetection `json:"nodeAddressAutodetectionV6,omitempty"`
}

// IPPool is one of the operator's initial pools.
type IPPool struct {
	CIDR          string `json:"cidr"`
	Encapsulation string `json:"encapsulation"`
	NATOutgoing   string `json:"natOutgoing"`
}

// NodeAddressAutodetection is the operator's form of an autodetection method: exactly one field set.
type NodeAddressAutodetection struct {
	FirstFound    *bool    `json:"firstFound,omitempty"`
	Kubernetes    string   `json:"kubernetes,omitempty"`
	Interface     string   `json:"interface,omitempty"`
	SkipInterface string   `json:"skipInterface,omitempty"`
	CanReach      string   `json:"canReach,omitempty"`
	CIDRs         []string `json:"cidrs,omitempty"`
}

// Installation returns the plan as the operator's Installation "default".
func (p Plan) Installation() (Installation, error) {
	in := Installation{APIVersion: "operator.tigera.io/v1", Kind: "Installation", Metadata: PatchMetadata{Name: "default"}}
	net := &in.Spec.CalicoNetwork
	net.BGP = "Disabled"
	if p.BGP {
		net.BGP = "Enabled"
	}
	net.IPPools = []IPPool{}
	for _, pool := range p.Pools {
		if !pool.CIDR.IsValid() {
			continue
		}
		encap := "None"
		switch {
		case p.Encapsulation == string(calico.EncapVXLAN):
			encap = "VXLAN"
		case p.Encapsulation == string(calico.EncapIPIP) && pool.Family == 4:
			encap = "IPIP"
		}
		net.IPPools = append(net.IPPools, IPPool{CIDR: pool.CIDR.String(), Encapsulation: encap, NATOutgoing: "Enabled"})
	}
	for _, ad := range p.Autodetection {
		if ad.Best == "" {
			continue
		}
		nad, err := operatorMethod(ad.Best)
		if err != nil {
			return Installation{}, err
		}
		if ad.Family == 4 {
			net.NodeAddressAutodetectionV4 = nad
		} else {
			net.NodeAddressAutodetectionV6 = nad
		}
	}
	return in, nil
}

// operatorMethod translates a method string into the operator's field, which the operator
// turns back into the same string for calico-node. Regex lists become one regex the way
// calico-node joins them.
func operatorMethod(s string) (*NodeAddressAutodetection, error) {
	m, err := autodetect.ParseMethod(s)
	if err != nil {
		return nil, err
	}
	join := func(rs []string) string {
		if len(rs) == 1 {
			return rs[0]
		}
		return "(" + strings.Join(rs, ")|(") + ")"
	}
	switch m.Kind {
	case autodetect.FirstFound:
		t := true
		return &NodeAddressAutodetection{FirstFound: &t}, nil
	case autodetect.KubernetesInternalIP:
		return &NodeAddressAutodetection{Kubernetes: "NodeInternalIP"}, nil
	case autodetect.Interface:
		return &NodeAddressAutodetection{Interface: join(m.Args)}, nil
	case autodetect.SkipInterface:
		return &NodeAddressAutodetection{SkipInterface: join(m.Args)}, nil
	case autodetect.CanReach:
		return &NodeAddressAutodetection{CanReach: m.Args[0]}, nil
	case autodetect.CIDR:
		return &NodeAddressAutodetection{CIDRs: m.Args}, nil
	}
	return nil, fmt.Errorf("translate autodetection method %q for the operator: unknown kind", s)
}
