package firewalld

import (
	"testing"

	"github.com/godbus/dbus/v5"
)

func TestToEvent(t *testing.T) {
	owner := busDaemonName + ".NameOwnerChanged"
	tests := []struct {
		name string
		sig  dbus.Signal
		want EventKind // "" means filtered out
	}{
		{"reloaded", dbus.Signal{Name: ifaceMain + ".Reloaded"}, Reloaded},
		{"started", dbus.Signal{Name: owner, Body: []any{busName, "", ":1.7"}}, Started},
		{"restarted under a new owner", dbus.Signal{Name: owner, Body: []any{busName, ":1.7", ":1.9"}}, Started},
		{"stopped", dbus.Signal{Name: owner, Body: []any{busName, ":1.7", ""}}, Stopped},
		{"another name", dbus.Signal{Name: owner, Body: []any{"org.freedesktop.NetworkManager", "", ":1.3"}}, ""},
		{"malformed", dbus.Signal{Name: owner, Body: []any{busName}}, ""},
		{"config signal during a reload", dbus.Signal{Name: "org.fedoraproject.FirewallD1.config.zone.Updated", Body: []any{"public"}}, ""},
		{"NameAcquired", dbus.Signal{Name: busDaemonName + ".NameAcquired", Body: []any{":1.5"}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, ok := toEvent(&tt.sig)
			if ok != (tt.want != "") || ev.Kind != tt.want {
				t.Errorf("toEvent = %+v, %t; want kind %q", ev, ok, tt.want)
			}
		})
	}
}
