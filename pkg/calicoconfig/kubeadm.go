package calicoconfig

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/yaml"
)

// Kubeadm is the networking part of kubeadm's ClusterConfiguration, which calico-node also
// reads (its podSubnet is calico-node's default pool when CALICO_IPV4POOL_CIDR is not set).
type Kubeadm struct {
	PodSubnets, ServiceSubnets []netip.Prefix
}

// kubeadmConfigMap is where kubeadm keeps its ClusterConfiguration.
const kubeadmConfigMap = "/api/v1/namespaces/kube-system/configmaps/kubeadm-config"

// Kubeadm reads kube-system/kubeadm-config; ok is false when the cluster has none (not set up
// by kubeadm).
func (c *Client) Kubeadm(ctx context.Context) (k Kubeadm, ok bool, err error) {
	body, err := c.rc.Get().AbsPath(kubeadmConfigMap).DoRaw(ctx)
	if apierrors.IsNotFound(err) {
		return k, false, nil
	}
	if err != nil {
		return k, false, fmt.Errorf("read kube-system/kubeadm-config: %w", err)
	}
	var cm configMapObject
	if err := json.Unmarshal(body, &cm); err != nil {
		return k, false, fmt.Errorf("decode kube-system/kubeadm-config: %w", err)
	}
	k, err = parseKubeadm(cm.Data["ClusterConfiguration"])
	return k, err == nil, err
}

func parseKubeadm(clusterConfiguration string) (Kubeadm, error) {
	var cc struct {
		Networking struct {
			PodSubnet     string `json:"podSubnet"`
			ServiceSubnet string `json:"serviceSubnet"`
		} `json:"networking"`
	}
	if err := yaml.Unmarshal([]byte(clusterConfiguration), &cc); err != nil {
		return Kubeadm{}, fmt.Errorf("kube-system/kubeadm-config: parse ClusterConfiguration: %w", err)
	}
	var k Kubeadm
	var err error
	if k.PodSubnets, err = subnets("networking.podSubnet", cc.Networking.PodSubnet); err != nil {
		return Kubeadm{}, err
	}
	if k.ServiceSubnets, err = subnets("networking.serviceSubnet", cc.Networking.ServiceSubnet); err != nil {
		return Kubeadm{}, err
	}
	return k, nil
}

// subnets parses kubeadm's comma-separated subnets (one per IP family).
func subnets(field, s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for item := range strings.SplitSeq(s, ",") {
		if item = strings.TrimSpace(item); item == "" {
			continue
		}
		p, err := poolCIDR("kube-system/kubeadm-config ClusterConfiguration "+field, item)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}
