package calicoconfig

import (
	"encoding/json"
	"testing"
)

// TestParseRejectsBadValues: what Calico's CRD schemas let through but Calico cannot use is an
// error naming the field and the value.
func TestParseRejectsBadValues(t *testing.T) {
	for _, tt := range []struct {
		name, kind, obj, want string
	}{
		{"port above range", "felix", `{"spec":{"vxlanPort":70000}}`, "spec.vxlanPort: 70000 is not a port (want 1-65535)"},
		{"port zero", "felix", `{"spec":{"wireguardListeningPort":0}}`, "spec.wireguardListeningPort: 0 is not a port (want 1-65535)"},
		{"VNI", "felix", `{"spec":{"vxlanVNI":16777216}}`, "spec.vxlanVNI: 16777216 is not a VXLAN VNI (want 1-16777215)"},
		{"nftables mode", "felix", `{"spec":{"nftablesMode":"Sometimes"}}`, `spec.nftablesMode: "Sometimes" is not Enabled, Disabled or Auto`},
		{"BGP port", "bgp", `{"spec":{"listenPort":-1}}`, "spec.listenPort: -1 is not a port (want 1-65535)"},
		{"pool CIDR with host bits", "pool", `{"spec":{"cidr":"10.244.1.0/16"}}`, `spec.cidr: "10.244.1.0/16" has host bits set (network address 10.244.0.0/16)`},
		{"pool CIDR", "pool", `{"spec":{"cidr":"10.244.0.0/33"}}`, `spec.cidr: "10.244.0.0/33" is not a CIDR`},
		{"both encapsulations", "pool", `{"spec":{"cidr":"10.244.0.0/16","ipipMode":"Always","vxlanMode":"CrossSubnet"}}`, `spec: ipipMode "Always" and vxlanMode "CrossSubnet" are both enabled; Calico allows one`},
		{"IP-in-IP on IPv6", "pool", `{"spec":{"cidr":"fd00::/64","ipipMode":"Always"}}`, `spec.ipipMode: "Always" on IPv6 pool fd00::/64: IP-in-IP carries IPv4 only`},
		{"operator method", "installation", `{"spec":{"calicoNetwork":{"nodeAddressAutodetectionV4":{"interface":"eth("}}}}`, `spec.calicoNetwork.nodeAddressAutodetectionV4: invalid regex "eth(" in autodetection method "interface=eth("`},
		{"operator pool", "installation", `{"spec":{"calicoNetwork":{"ipPools":[{"cidr":"10.0.0.1/8"}]}}}`, `spec.calicoNetwork.ipPools[0].cidr: "10.0.0.1/8" has host bits set (network address 10.0.0.0/8)`},
		{"Typha port", "typha", `{"spec":{"ports":[{"name":"calico-typha","port":5473,"targetPort":70000}]}}`, "spec.ports.targetPort: 70000 is not a port (want 1-65535)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			raw := json.RawMessage(tt.obj)
			var err error
			switch tt.kind {
			case "felix":
				_, err = parseFelix(raw)
			case "bgp":
				_, err = parseBGP(raw)
			case "pool":
				_, err = parsePool(raw)
			case "installation":
				_, err = parseInstallation(raw)
			case "typha":
				_, err = parseTypha(raw)
			}
			if err == nil || err.Error() != tt.want {
				t.Errorf("error %v, want %q", err, tt.want)
			}
		})
	}
}

func TestParseOperatorMethods(t *testing.T) {
	for obj, want := range map[string]string{
		`{"firstFound":true}`:                       "first-found",
		`{"kubernetes":"NodeInternalIP"}`:           "kubernetes-internal-ip",
		`{"canReach":"8.8.8.8"}`:                    "can-reach=8.8.8.8",
		`{"skipInterface":"eth1"}`:                  "skip-interface=eth1",
		`{"cidrs":["10.0.0.0/8","192.168.0.0/16"]}`: "cidr=10.0.0.0/8,192.168.0.0/16",
	} {
		in, err := parseInstallation(json.RawMessage(`{"spec":{"calicoNetwork":{"nodeAddressAutodetectionV4":` + obj + `}}}`))
		if err != nil || in.Method4 != want {
			t.Errorf("%s: method %q, %v; want %q", obj, in.Method4, err, want)
		}
	}
}
