package calico

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

func TestIsInterface(t *testing.T) {
	for name, want := range map[string]bool{
		"cali0a1b2c3d4e5": true, "tunl0": true, "vxlan.calico": true, "vxlan-v6.calico": true,
		"wireguard.cali": true, "wg-v6.cali": true,
		"ens33": false, "tunl1": false, "vxlan.other": false, "eth0": false, "calx": false,
	} {
		if got := IsInterface(name); got != want {
			t.Errorf("IsInterface(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestUnmanagedGlobsAreCalicosDocumentedList(t *testing.T) {
	want := "cali* tunl* vxlan.calico vxlan-v6.calico wireguard.cali wg-v6.cali"
	if got := strings.Join(UnmanagedGlobs(), " "); got != want {
		t.Errorf("UnmanagedGlobs() = %s, want %s", got, want)
	}
}

func TestDefaultInterfaceExclusionsAreCalicoNodes(t *testing.T) {
	// The list is part of the behaviour being reproduced; a reorder or edit must be deliberate.
	want := `^docker.* ^cbr.* ^dummy.* ^podman.* ^virbr.* ^lxcbr.* ^veth.* ^lo ^br-.* ^cali.* ^tunl.* ^flannel.* ` +
		`^kube-ipvs.* ^cni.* ^vxlan\.calico.* ^vxlan-v6\.calico.* ^wireguard\.cali.* ^wg-v6\.cali.* ^nodelocaldns.*`
	if got := strings.Join(DefaultInterfaceExclusions(), " "); got != want {
		t.Errorf("DefaultInterfaceExclusions() = %s\nwant %s", got, want)
	}
	d := DefaultInterfaceExclusions()
	d[0] = "changed"
	if DefaultInterfaceExclusions()[0] != `^docker.*` {
		t.Error("DefaultInterfaceExclusions returns shared state")
	}
}

func TestOpenings(t *testing.T) {
	str := func(os []Opening) string {
		var out []string
		for _, o := range os {
			if o.IPProtocol != "" {
				out = append(out, o.IPProtocol)
				continue
			}
			out = append(out, fmt.Sprintf("%d/%s", o.Port, o.Protocol))
		}
		return strings.Join(out, " ")
	}
	for _, tt := range []struct {
		f    Features
		want string
	}{
		{Features{BGP: true, Encapsulation: EncapIPIP}, "179/tcp ipencap"},
		{Features{Encapsulation: EncapVXLAN}, "4789/udp"},
		{Features{Encapsulation: EncapNone, Typha: true, WireGuard: true}, "5473/tcp 51820/udp"},
		{Features{BGP: true, Encapsulation: EncapNone, WireGuard: true, IPv6: true}, "179/tcp 51820/udp 51821/udp"},
		{Features{Encapsulation: EncapNone, WireGuardv6: true}, "51821/udp"},
		{Features{BGP: true, Encapsulation: EncapIPIP, OtherEncapsulations: []Encapsulation{EncapVXLAN}, Typha: true, WireGuard: true,
			Ports: Ports{BGP: 1179, VXLAN: 8472, Typha: 5474, WireGuard: 51830}}, "1179/tcp ipencap 8472/udp 5474/tcp 51830/udp"},
		{Features{Encapsulation: EncapVXLAN, FelixMetricsPort: 9091, TyphaMetricsPort: 9093}, "4789/udp 9091/tcp 9093/tcp"},
	} {
		if got := str(Openings(tt.f)); got != tt.want {
			t.Errorf("Openings(%+v) = %s, want %s", tt.f, got, tt.want)
		}
	}
	if slices.ContainsFunc(Openings(Features{BGP: true, Encapsulation: EncapIPIP}), func(o Opening) bool { return o.IPProtocol == "ipip" }) {
		t.Error(`IP-in-IP must be "ipencap" (protocol 4), never "ipip" (protocol 94)`)
	}
}

func TestTyphaReplicas(t *testing.T) {
	for nodes, want := range map[int64]int64{51: 3, 600: 3, 601: 4, 800: 4, 2000: 10, 3801: 20, 100000: 20} {
		if got := TyphaReplicas(nodes); got != want {
			t.Errorf("TyphaReplicas(%d) = %d, want %d", nodes, got, want)
		}
	}
}
