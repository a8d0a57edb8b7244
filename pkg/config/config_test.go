package config

import (
	"flag"
	"io"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/calico-prep/calico-prep/pkg/calico"
)

func load(t *testing.T, args []string, env map[string]string) (Config, error) {
	t.Helper()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	finish := Flags(fs)
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	return finish(func(k string) string { return env[k] })
}

func TestDefaults(t *testing.T) {
	c, err := load(t, []string{"--node-name=n1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.PodCIDR != netip.MustParsePrefix("192.168.0.0/16") || c.PodCIDRv6.IsValid() {
		t.Errorf("pod CIDRs %v %v", c.PodCIDR, c.PodCIDRv6)
	}
	if c.IPAutodetectionMethod != "first-found" || c.Encapsulation != calico.EncapIPIP || !c.BGP || c.Typha || c.WireGuard {
		t.Errorf("calico defaults wrong: %+v", c)
	}
	if c.Firewalld != ModeAuto || c.NetworkManager != ModeAuto || !c.FirewalldForwarding {
		t.Errorf("component defaults wrong: %+v", c)
	}
	if c.HostRoot != "/" || c.NetworkManagerConfDir != "/etc/NetworkManager/conf.d" || c.StateDir != "/var/lib/calico-prep" {
		t.Errorf("path defaults wrong: %+v", c)
	}
	if c.ResyncInterval != 10*time.Minute || c.MetricsBindAddress != DefaultMetricsBindAddress {
		t.Errorf("daemon defaults wrong: %+v", c)
	}
}

func TestCalicoNodeEnvironment(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		env   map[string]string
		check func(Config) bool
	}{
		{name: "pool CIDR from env", env: map[string]string{"CALICO_IPV4POOL_CIDR": "172.16.0.0/16"},
			check: func(c Config) bool { return c.PodCIDR == netip.MustParsePrefix("172.16.0.0/16") }},
		{name: "flag wins over env", args: []string{"--pod-cidr=10.244.0.0/16"}, env: map[string]string{"CALICO_IPV4POOL_CIDR": "172.16.0.0/16"},
			check: func(c Config) bool { return c.PodCIDR == netip.MustParsePrefix("10.244.0.0/16") }},
		{name: "IPv6 pool", env: map[string]string{"CALICO_IPV6POOL_CIDR": "fd00:10::/64"},
			check: func(c Config) bool { return c.PodCIDRv6 == netip.MustParsePrefix("fd00:10::/64") }},
		{name: "autodetection method", env: map[string]string{"IP_AUTODETECTION_METHOD": "interface=eth0, eth1"},
			check: func(c Config) bool { return c.IPAutodetectionMethod == "interface=eth0, eth1" }},
		{name: "VXLAN pool", env: map[string]string{"CALICO_IPV4POOL_IPIP": "Never", "CALICO_IPV4POOL_VXLAN": "CrossSubnet"},
			check: func(c Config) bool { return c.Encapsulation == calico.EncapVXLAN }},
		{name: "no encapsulation", env: map[string]string{"CALICO_IPV4POOL_IPIP": "never"},
			check: func(c Config) bool { return c.Encapsulation == calico.EncapNone }},
		{name: "--encapsulation wins over pool env", args: []string{"--encapsulation=vxlan"}, env: map[string]string{"CALICO_IPV4POOL_IPIP": "Always"},
			check: func(c Config) bool { return c.Encapsulation == calico.EncapVXLAN }},
		{name: "VXLAN backend has no BGP", env: map[string]string{"CALICO_NETWORKING_BACKEND": "vxlan", "CALICO_IPV4POOL_VXLAN": "Always"},
			check: func(c Config) bool { return !c.BGP }},
		{name: "Typha service name means Typha", env: map[string]string{"FELIX_TYPHAK8SSERVICENAME": "calico-typha"},
			check: func(c Config) bool { return c.Typha }},
		{name: "calico.yaml's none means no Typha", env: map[string]string{"FELIX_TYPHAK8SSERVICENAME": "none"},
			check: func(c Config) bool { return !c.Typha }},
		{name: "WireGuard", env: map[string]string{"FELIX_WIREGUARDENABLED": "true"},
			check: func(c Config) bool { return c.WireGuard }},
		{name: "node name", env: map[string]string{"NODE_NAME": "worker-1"},
			check: func(c Config) bool { return c.NodeName == "worker-1" }},
		{name: "bool flag without value", args: []string{"--typha", "--firewalld-forwarding=false"},
			check: func(c Config) bool { return c.Typha && !c.FirewalldForwarding }},
		{name: "lists", args: []string{"--firewalld-extra-ports=2379/tcp, 30000-32767/tcp", "--networkmanager-extra-unmanaged=interface-name:flannel*,cni0", "--disable-checks=kernel"},
			check: func(c Config) bool {
				return reflect.DeepEqual(c.FirewalldExtraPorts, []Port{{2379, 2379, "tcp"}, {30000, 32767, "tcp"}}) &&
					reflect.DeepEqual(c.NetworkManagerExtraUnmanaged, []string{"flannel*", "cni0"}) &&
					c.DisableChecks.String() == "kernel"
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{"NODE_NAME": "n1"}
			for k, v := range tt.env {
				env[k] = v
			}
			c, err := load(t, tt.args, env)
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(c) {
				t.Fatalf("unexpected config: %+v", c)
			}
		})
	}
}

// Every bad value is one line naming where it came from and the value itself.
func TestInvalidInputNamesFieldAndValue(t *testing.T) {
	tests := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{args: []string{"--pod-cidr=192.168.0.0/33"}, want: `--pod-cidr: invalid CIDR "192.168.0.0/33"`},
		{args: []string{"--pod-cidr=fd00::/64"}, want: `--pod-cidr: "fd00::/64" is not an IPv4 CIDR`},
		{args: []string{"--pod-cidr=192.168.1.0/16"}, want: `--pod-cidr: "192.168.1.0/16" has host bits set`},
		{env: map[string]string{"CALICO_IPV4POOL_CIDR": "nonsense"}, want: `CALICO_IPV4POOL_CIDR: invalid CIDR "nonsense"`},
		{args: []string{"--ip-autodetection-method=interface=eth(0"}, want: `--ip-autodetection-method: invalid regex "eth(0"`},
		{args: []string{"--ip-autodetection-method=first"}, want: `--ip-autodetection-method: unknown autodetection method "first"`},
		{env: map[string]string{"IP_AUTODETECTION_METHOD": "cidr=10.0.0.0/99"}, want: `IP_AUTODETECTION_METHOD: invalid CIDR "10.0.0.0/99"`},
		{args: []string{"--encapsulation=gre"}, want: `--encapsulation: unknown encapsulation "gre"`},
		{env: map[string]string{"CALICO_IPV4POOL_IPIP": "sometimes"}, want: `CALICO_IPV4POOL_IPIP: unknown mode "sometimes"`},
		{env: map[string]string{"CALICO_IPV4POOL_IPIP": "Always", "CALICO_IPV4POOL_VXLAN": "Always"}, want: "CALICO_IPV4POOL_IPIP and CALICO_IPV4POOL_VXLAN: both enabled"},
		{env: map[string]string{"CALICO_NETWORKING_BACKEND": "gobgp"}, want: `CALICO_NETWORKING_BACKEND: unknown backend "gobgp"`},
		{args: []string{"--firewalld-extra-ports=70000/tcp"}, want: `--firewalld-extra-ports: port out of range in "70000/tcp"`},
		{args: []string{"--firewalld-extra-ports=2379/icmp"}, want: `--firewalld-extra-ports: unknown protocol "icmp" in "2379/icmp"`},
		{args: []string{"--firewalld-extra-ports=2379"}, want: `--firewalld-extra-ports: invalid port "2379"`},
		{args: []string{"--firewalld-extra-ports=20-10/udp"}, want: `--firewalld-extra-ports: empty port range "20-10/udp"`},
		{args: []string{"--firewalld=maybe"}, want: `--firewalld: unknown mode "maybe"`},
		{args: []string{"--firewalld-zone=my zone"}, want: `--firewalld-zone: invalid firewalld zone name "my zone"`},
		{args: []string{"--host-root=relative"}, want: `--host-root: "relative" is not an absolute path`},
		{args: []string{"--host-root=/does/not/exist"}, want: `--host-root: "/does/not/exist": stat /does/not/exist: no such file or directory`},
		{args: []string{"--networkmanager-conf-dir=conf.d"}, want: `--networkmanager-conf-dir: "conf.d" is not an absolute path`},
		{args: []string{"--networkd=maybe"}, want: `--networkd: unknown mode "maybe": want auto, on or off`},
		{args: []string{"--networkd-conf-dir=network"}, want: `--networkd-conf-dir: "network" is not an absolute path`},
		{args: []string{"--networkd-foreign-routes=drop"}, want: `--networkd-foreign-routes: unknown value "drop": want keep or off`},
		{args: []string{"--networkmanager-extra-unmanaged=a;b"}, want: `--networkmanager-extra-unmanaged: invalid interface name pattern "a;b"`},
		{args: []string{"--resync-interval=-1m"}, want: `--resync-interval: invalid duration "-1m"`},
		{args: []string{"--resync-interval=1ns"}, want: `--resync-interval: invalid duration "1ns": want at least 10s`},
		{args: []string{"--bgp=false"}, want: "--encapsulation: ipip needs BGP"},
		{env: map[string]string{"CALICO_NETWORKING_BACKEND": "vxlan", "CALICO_IPV4POOL_IPIP": "Always"}, want: "--encapsulation: ipip needs BGP"},
		{args: []string{"--metrics-bind-address=localhost"}, want: `--metrics-bind-address: invalid address "localhost"`},
		{args: []string{"--metrics-bind-address=nohost:80"}, want: `--metrics-bind-address: invalid host "nohost" in "nohost:80"`},
		{args: []string{"--node-internal-ip=10.0.0.300"}, want: `--node-internal-ip: invalid IP address "10.0.0.300"`},
		{args: []string{"--service-cidr=10.96.0.0/12,junk"}, want: `--service-cidr: invalid CIDR "junk"`},
		{args: []string{"--typha=yes please"}, want: `--typha: invalid boolean "yes please"`},
		{args: []string{"--disable-checks=Kernel"}, want: `--disable-checks: invalid check name "Kernel"`},
		{env: map[string]string{"NODE_NAME": "Worker_1"}, want: `NODE_NAME: invalid node name "Worker_1"`},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			_, err := load(t, tt.args, tt.env)
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.HasPrefix(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q, want one line starting %q", err, tt.want)
			}
		})
	}
}

func TestHostFlagsLeaveOutDaemonOptions(t *testing.T) {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	HostFlags(fs)
	for _, name := range []string{"once", "dry-run", "metrics-bind-address", "resync-interval", "kubeconfig"} {
		if fs.Lookup(name) != nil {
			t.Errorf("check accepts --%s, which only agent run uses", name)
		}
	}
	if fs.Lookup("pod-cidr") == nil {
		t.Error("check lacks --pod-cidr")
	}
}
