package config

import (
	"strings"
	"testing"
)

// Properties for every parser of operator input: never panic; an error is one line that names
// the field; a success survives a round trip through its printed form.

func FuzzParsePorts(f *testing.F) {
	for _, s := range []string{"179/tcp", "2379/tcp,6443/tcp", "51820-51821/udp", "0/tcp", "65536/udp", "1-/tcp", " 22 /tcp", "5/sctp,,"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ports, err := ParsePorts("--firewalld-extra-ports", s)
		if err != nil {
			wantFieldError(t, err, "--firewalld-extra-ports")
			return
		}
		for _, p := range ports {
			back, err := ParsePort("--x", p.String())
			if err != nil || back != p {
				t.Fatalf("%v printed as %q parsed back as %v, %v", p, p.String(), back, err)
			}
		}
	})
}

func FuzzParseCIDRList(f *testing.F) {
	for _, s := range []string{"10.96.0.0/12", "10.96.0.0/12,fd00:10:96::/108", "192.168.1.0/16", "::/0", "1.2.3.4/33", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		cidrs, err := ParseCIDRList("--service-cidr", s)
		if err != nil {
			wantFieldError(t, err, "--service-cidr")
			return
		}
		for _, p := range cidrs {
			if p.Masked() != p {
				t.Fatalf("accepted %v with host bits", p)
			}
		}
	})
}

func FuzzEncapsulationFromEnv(f *testing.F) {
	f.Add("Always", "")
	f.Add("Never", "CrossSubnet")
	f.Add("always", "always")
	f.Add("", "bogus")
	f.Fuzz(func(t *testing.T, ipip, vxlan string) {
		env := map[string]string{"CALICO_IPV4POOL_IPIP": ipip, "CALICO_IPV4POOL_VXLAN": vxlan}
		e, ok, err := EncapsulationFromEnv(func(k string) string { return env[k] })
		if err != nil {
			wantFieldError(t, err, "CALICO_IPV4POOL_")
			return
		}
		if ok {
			if _, err := ParseEncapsulation("--encapsulation", string(e)); err != nil {
				t.Fatalf("derived an encapsulation the flag rejects: %q", e)
			}
		}
	})
}

func FuzzParseInterfaceGlobs(f *testing.F) {
	for _, s := range []string{"cali*", "interface-name:flannel*,cni0", "a;b", "eth[0-9]", "x y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		globs, err := ParseInterfaceGlobs("--networkmanager-extra-unmanaged", s)
		if err != nil {
			wantFieldError(t, err, "--networkmanager-extra-unmanaged")
			return
		}
		for _, g := range globs {
			if strings.ContainsAny(g, ";,: \t\n/") {
				t.Fatalf("accepted a glob NetworkManager would split or reject: %q", g)
			}
		}
	})
}

func wantFieldError(t *testing.T, err error, field string) {
	t.Helper()
	if !strings.HasPrefix(err.Error(), field) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("error %q is not one line naming %s", err, field)
	}
}
