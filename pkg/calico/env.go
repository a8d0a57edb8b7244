package calico

// Environment variables calico-node reads (https://docs.tigera.io/calico/latest/reference/configure-calico-node),
// which calico-prep reads too, so that calico-node's env block can be copied as is.
const (
	EnvIP                = "IP" // "autodetect" turns autodetection on
	EnvIP6               = "IP6"
	EnvIPv4PoolCIDR      = "CALICO_IPV4POOL_CIDR"
	EnvIPv6PoolCIDR      = "CALICO_IPV6POOL_CIDR"
	EnvIPv4PoolIPIP      = "CALICO_IPV4POOL_IPIP"
	EnvIPv4PoolVXLAN     = "CALICO_IPV4POOL_VXLAN"
	EnvIPv6PoolVXLAN     = "CALICO_IPV6POOL_VXLAN"
	EnvNetworkingBackend = "CALICO_NETWORKING_BACKEND"
	EnvIPAutodetection   = "IP_AUTODETECTION_METHOD"
	EnvIP6Autodetection  = "IP6_AUTODETECTION_METHOD"
	EnvTyphaServiceName  = "FELIX_TYPHAK8SSERVICENAME"
	EnvWireGuardEnabled  = "FELIX_WIREGUARDENABLED"
	EnvIPv6Support       = "FELIX_IPV6SUPPORT"
)

// Felix reads its configuration parameters from FELIX_<NAME> environment variables, which win
// over its FelixConfiguration resources
// (https://docs.tigera.io/calico/latest/reference/felix/configuration).
const (
	EnvVXLANPort          = "FELIX_VXLANPORT"
	EnvWireGuardPort      = "FELIX_WIREGUARDLISTENINGPORT"
	EnvWireGuardPortV6    = "FELIX_WIREGUARDLISTENINGPORTV6"
	EnvWireGuardEnabledV6 = "FELIX_WIREGUARDENABLEDV6"
)

// Annotations calico-node writes on its Kubernetes Node: the addresses it chose and its tunnel
// addresses (libcalico-go's k8s backend, node conversion).
const (
	AnnotationIPv4Address       = "projectcalico.org/IPv4Address"
	AnnotationIPv6Address       = "projectcalico.org/IPv6Address"
	AnnotationIPIPTunnelAddr    = "projectcalico.org/IPv4IPIPTunnelAddr"
	AnnotationVXLANTunnelAddr   = "projectcalico.org/IPv4VXLANTunnelAddr"
	AnnotationVXLANv6TunnelAddr = "projectcalico.org/IPv6VXLANTunnelAddr"
)
