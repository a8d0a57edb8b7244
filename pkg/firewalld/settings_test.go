package firewalld

import (
	"reflect"
	"testing"

	"github.com/godbus/dbus/v5"
)

func TestZoneSettingsRoundTrip(t *testing.T) {
	want := ZoneSettings{Short: "Calico", Description: "d", Target: "ACCEPT", Interfaces: []string{"cali+", "tunl0"}, Forward: true}
	got, err := decodeZoneSettings(want.encode())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("round trip = %+v, want %+v", got, want)
	}
}

func TestPolicySettingsRoundTrip(t *testing.T) {
	want := PolicySettings{Short: "s", Description: "d", Target: "ACCEPT", Priority: -1,
		IngressZones: []string{"ANY"}, EgressZones: []string{"calico-prep"}, RichRules: []string{`rule family="ipv4" source address="10.0.0.0/8" accept`}}
	got, err := decodePolicySettings(want.encode())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("round trip = %+v, want %+v", got, want)
	}
}

func TestEncodeEmptyListsAreTyped(t *testing.T) {
	m := PolicySettings{}.encode()
	if sig := m["rich_rules"].Signature().String(); sig != "as" {
		t.Errorf("empty rich_rules has signature %q, want as", sig)
	}
}

// firewalld leaves out empty settings; a key of the wrong type is a decode error, not a zero.
func TestDecodeSettings(t *testing.T) {
	tests := []struct {
		name    string
		m       map[string]dbus.Variant
		want    ZoneSettings
		wantErr bool
	}{
		{"missing keys are zero", map[string]dbus.Variant{"target": dbus.MakeVariant("default")}, ZoneSettings{Target: "default"}, false},
		{"wrong type", map[string]dbus.Variant{"interfaces": dbus.MakeVariant("eth0")}, ZoneSettings{}, true},
		{"ignores other keys", map[string]dbus.Variant{
			"services": dbus.MakeVariant([]string{"ssh"}),
			"target":   dbus.MakeVariant("ACCEPT"),
		}, ZoneSettings{Target: "ACCEPT"}, false},
		{"ports and protocols", map[string]dbus.Variant{
			"ports":     dbus.MakeVariant([][]any{{"22", "tcp"}, {"51820-51821", "udp"}}),
			"protocols": dbus.MakeVariant([]string{"ipencap"}),
		}, ZoneSettings{Ports: []PortEntry{{"22", "tcp"}, {"51820-51821", "udp"}}, Protocols: []string{"ipencap"}}, false},
		{"a port without its protocol", map[string]dbus.Variant{"ports": dbus.MakeVariant([][]any{{"22"}})}, ZoneSettings{}, true},
		{"ports of the wrong type", map[string]dbus.Variant{"ports": dbus.MakeVariant([]string{"22/tcp"})}, ZoneSettings{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeZoneSettings(tt.m)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %t", err, tt.wantErr)
			}
			if !tt.wantErr && !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}
