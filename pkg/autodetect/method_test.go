package autodetect

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func TestParseMethod(t *testing.T) {
	tests := []struct {
		in      string
		want    Method
		str     string // String(); the input when empty
		wantErr string
	}{
		{in: "", want: Method{Kind: FirstFound}, str: "first-found"},
		{in: "first-found", want: Method{Kind: FirstFound}},
		{in: "kubernetes-internal-ip", want: Method{Kind: KubernetesInternalIP}},
		{in: "interface=eth0", want: Method{Kind: Interface, Args: []string{"eth0"}}},
		{in: "interface=eth0 ,  ens.*", want: Method{Kind: Interface, Args: []string{"eth0", "ens.*"}}, str: "interface=eth0,ens.*"},
		// A stray comma leaves an empty regex, which matches every name (see TestDetect).
		{in: "interface=eth0,", want: Method{Kind: Interface, Args: []string{"eth0", ""}}},
		{in: "interface=", want: Method{Kind: Interface, Args: []string{""}}},
		{in: "skip-interface=^eth1$,docker.*", want: Method{Kind: SkipInterface, Args: []string{"^eth1$", "docker.*"}}},
		{in: "cidr=192.168.79.128/24", want: Method{Kind: CIDR, Args: []string{"192.168.79.128/24"}, CIDRs: []netip.Prefix{netip.MustParsePrefix("192.168.79.0/24")}}},
		{in: "cidr=10.0.0.0/8, fd00::/8", want: Method{Kind: CIDR, Args: []string{"10.0.0.0/8", "fd00::/8"}, CIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}}, str: "cidr=10.0.0.0/8,fd00::/8"},
		{in: "can-reach=8.8.8.8", want: Method{Kind: CanReach, Args: []string{"8.8.8.8"}}},
		{in: "can-reach=2001:4860:4860::8888", want: Method{Kind: CanReach, Args: []string{"2001:4860:4860::8888"}}},
		{in: "can-reach=www.example.com", want: Method{Kind: CanReach, Args: []string{"www.example.com"}}},

		{in: "first-found=eth0", wantErr: `unknown autodetection method "first-found=eth0"`},
		{in: "First-Found", wantErr: `unknown autodetection method "First-Found"`},
		{in: "kubernetes-internal-ip=eth0", wantErr: `unknown autodetection method "kubernetes-internal-ip=eth0"`},
		{in: "interfaces=eth0", wantErr: `unknown autodetection method "interfaces=eth0"`},
		{in: "interface=eth(", wantErr: `invalid regex "eth(" in autodetection method "interface=eth("`},
		{in: "skip-interface=ok,[z-a]", wantErr: `invalid regex "[z-a]"`},
		{in: `interface=eth0,\Qeth1`, wantErr: `invalid regex list in autodetection method "interface=eth0,\\Qeth1": calico-node joins it into "(eth0)|(\\Qeth1)", which does not compile`},
		{in: "cidr=10.0.0.0", wantErr: `invalid CIDR "10.0.0.0" in autodetection method "cidr=10.0.0.0"`},
		{in: "cidr=10.0.0.0/8,", wantErr: `invalid CIDR "" in autodetection method "cidr=10.0.0.0/8,"`},
		{in: "can-reach=", wantErr: `invalid destination "" in autodetection method "can-reach="`},
		{in: "can-reach=[2001:db8::1]", wantErr: `invalid destination "[2001:db8::1]"`},
		{in: "can-reach=8.8.8.8:53", wantErr: `invalid destination "8.8.8.8:53"`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseMethod(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %#v\nwant %#v", got, tt.want)
			}
			str := tt.str
			if str == "" {
				str = tt.in
			}
			if got.String() != str {
				t.Errorf("String() = %q, want %q", got.String(), str)
			}
		})
	}
}
