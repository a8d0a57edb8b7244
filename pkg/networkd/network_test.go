package networkd

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/calico-prep/calico-prep/pkg/calico"
)

// layout writes files (path relative to a temporary root → content; "@null" makes a symlink to
// /dev/null) and returns the root.
func layout(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for p, content := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if content == "@null" {
			if err := os.Symlink(os.DevNull, full); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func testOptions(root string) Options {
	return Options{ConfDir: filepath.Join(root, "etc/systemd/network"), Root: root, KeepForeignRoutes: true}
}

// TestFirstMatch runs the analysis over operator layouts: which of Calico's globs an earlier
// file takes, reported by file and line.
func TestFirstMatch(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		// want maps each conflicting glob to "file:line (what)", file relative to the root.
		want map[string]string
	}{
		{name: "no files"},
		{name: "flatcar catch-all sorts after ours", files: map[string]string{"usr/lib/systemd/network/zz-default.network": "[Match]\nName=*\n"}},
		{name: "catch-all before ours", files: map[string]string{"etc/systemd/network/0-a.network": "# all\n[Match]\nName=*\n"},
			want: map[string]string{"cali*": "etc/systemd/network/0-a.network:3 (Name=*)", "tunl*": "etc/systemd/network/0-a.network:3 (Name=*)",
				"vxlan.calico": "etc/systemd/network/0-a.network:3 (Name=*)", "vxlan-v6.calico": "etc/systemd/network/0-a.network:3 (Name=*)",
				"wireguard.cali": "etc/systemd/network/0-a.network:3 (Name=*)", "wg-v6.cali": "etc/systemd/network/0-a.network:3 (Name=*)"}},
		{name: "empty match section matches all", files: map[string]string{"run/systemd/network/0-a.network": "[Match]\n\n[Network]\nDHCP=yes\n"},
			want: map[string]string{"cali*": "run/systemd/network/0-a.network:1 (an empty [Match] section)", "tunl*": "run/systemd/network/0-a.network:1 (an empty [Match] section)",
				"vxlan.calico": "run/systemd/network/0-a.network:1 (an empty [Match] section)", "vxlan-v6.calico": "run/systemd/network/0-a.network:1 (an empty [Match] section)",
				"wireguard.cali": "run/systemd/network/0-a.network:1 (an empty [Match] section)", "wg-v6.cali": "run/systemd/network/0-a.network:1 (an empty [Match] section)"}},
		{name: "netplan names its NIC", files: map[string]string{"run/systemd/network/0-netplan-eth0.network": "[Match]\nName=eth0\n"}},
		{name: "type ether takes veths and VXLAN", files: map[string]string{"etc/systemd/network/0-a-eth.network": "[Match]\nType=ether\n"},
			want: map[string]string{"cali*": "etc/systemd/network/0-a-eth.network:2 (Type=ether)", "vxlan.calico": "etc/systemd/network/0-a-eth.network:2 (Type=ether)",
				"vxlan-v6.calico": "etc/systemd/network/0-a-eth.network:2 (Type=ether)"}},
		{name: "glob overlapping a prefix", files: map[string]string{"etc/systemd/network/0-c.network": "[Match]\nName=en* c?li0*\n"},
			want: map[string]string{"cali*": "etc/systemd/network/0-c.network:2 (Name=en* c?li0*)"}},
		{name: "inverted list", files: map[string]string{"etc/systemd/network/0-a-n.network": "[Match]\nName=!cali* tunl*\n"},
			want: map[string]string{"vxlan.calico": "etc/systemd/network/0-a-n.network:2 (Name=!cali* !tunl*)", "vxlan-v6.calico": "etc/systemd/network/0-a-n.network:2 (Name=!cali* !tunl*)",
				"wireguard.cali": "etc/systemd/network/0-a-n.network:2 (Name=!cali* !tunl*)", "wg-v6.cali": "etc/systemd/network/0-a-n.network:2 (Name=!cali* !tunl*)"}},
		{name: "MAC match is a physical NIC", files: map[string]string{"etc/systemd/network/0-a-m.network": "[Match]\nMACAddress=52:54:00:12:34:56\n"}},
		{name: "host condition assumed true", files: map[string]string{"etc/systemd/network/0-a-v.network": "[Match]\nVirtualization=vm\nKind=wireguard\n"},
			want: map[string]string{"wireguard.cali": "etc/systemd/network/0-a-v.network:3 (Kind=wireguard)", "wg-v6.cali": "etc/systemd/network/0-a-v.network:3 (Kind=wireguard)"}},
		{name: "earlier file unmanages itself", files: map[string]string{"etc/systemd/network/0-a.network": "[Match]\nName=cali*\n[Link]\nUnmanaged=yes\n"}},
		{name: "masked in etc", files: map[string]string{"usr/lib/systemd/network/0-a.network": "[Match]\nName=*\n", "etc/systemd/network/0-a.network": "@null"}},
		{name: "etc hides the same name below", files: map[string]string{"usr/lib/systemd/network/0-a.network": "[Match]\nName=*\n", "etc/systemd/network/0-a.network": "[Match]\nName=eth0\n"}},
		{name: "empty name assignment resets the list", files: map[string]string{"etc/systemd/network/0-a-r.network": "[Match]\nName=eth0\nName=\nName=tunl*\n"},
			want: map[string]string{"tunl*": "etc/systemd/network/0-a-r.network:4 (Name=tunl*)"}},
		{name: "continued line", files: map[string]string{"etc/systemd/network/0-a-l.network": "[Match]\nName=eth0 \\\n  vxlan.*\n"},
			want: map[string]string{"vxlan.calico": "etc/systemd/network/0-a-l.network:2 (Name=eth0 vxlan.*)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := layout(t, tt.files)
			o := testOptions(root)
			set, err := readNetworkSet(o.networkDirs(), OwnNetwork, ownNetwork(calico.UnmanagedGlobs()))
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for _, m := range firstMatches(set.files) {
				if m.file == nil {
					t.Errorf("%s: no file matches, not even calico-prep's", m.profile.glob)
					continue
				}
				if m.conflict(filepath.Join(o.ConfDir, OwnNetwork)) {
					rel, _ := filepath.Rel(root, m.file.path)
					got[m.profile.glob] = rel + ":" + strconv.Itoa(m.line) + " (" + m.what + ")"
				}
			}
			for g, w := range tt.want {
				if got[g] != w {
					t.Errorf("%s: got %q, want %q", g, got[g], w)
				}
			}
			for g, v := range got {
				if _, ok := tt.want[g]; !ok {
					t.Errorf("%s: unexpected conflict %q", g, v)
				}
			}
		})
	}
}

// TestForeignSettings: the last assignment across networkd.conf and the sorted drop-ins wins;
// calico-prep's drop-in wins unless a later one turns the setting on again.
func TestForeignSettings(t *testing.T) {
	tests := []struct {
		name        string
		files       map[string]string
		withOwn     string // the settings that stay on with calico-prep's drop-in
		withoutOwnV string
	}{
		{name: "defaults", withoutOwnV: "ManageForeignRoutes=yes (networkd's default), ManageForeignRoutingPolicyRules=yes (networkd's default)"},
		{name: "kubespray's drop-in", files: map[string]string{"etc/systemd/networkd.conf.d/calico.conf": "[Network]\nManageForeignRoutes=no\nManageForeignRoutingPolicyRules=no\n"},
			withoutOwnV: "ManageForeignRoutes=no (ETC/networkd.conf.d/calico.conf line 2), ManageForeignRoutingPolicyRules=no (ETC/networkd.conf.d/calico.conf line 3)"},
		{name: "later drop-in turns it on", files: map[string]string{"usr/lib/systemd/networkd.conf.d/zzz-on.conf": "[Network]\n# on again\nManageForeignRoutes=yes\n"},
			withOwn: "ManageForeignRoutes=yes (USR/networkd.conf.d/zzz-on.conf line 3)"},
		{name: "masked later drop-in", files: map[string]string{"usr/lib/systemd/networkd.conf.d/zzz-on.conf": "[Network]\nManageForeignRoutes=yes\n", "etc/systemd/networkd.conf.d/zzz-on.conf": "@null"}},
		{name: "main file then drop-in", files: map[string]string{"etc/systemd/networkd.conf": "[Network]\nManageForeignRoutes=no\n", "run/systemd/networkd.conf.d/50-x.conf": "[Network]\nManageForeignRoutes=yes\n"},
			withoutOwnV: "ManageForeignRoutes=yes (RUN/networkd.conf.d/50-x.conf line 2), ManageForeignRoutingPolicyRules=yes (networkd's default)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := layout(t, tt.files)
			r, err := readForeign(testOptions(root).confLayout(), OwnConf, ownForeign())
			if err != nil {
				t.Fatal(err)
			}
			short := func(s []foreignSetting, onlyOn bool) string {
				var out []string
				for _, v := range s {
					if !onlyOn || v.manage {
						out = append(out, v.String())
					}
				}
				j := strings.Join(out, ", ")
				for from, to := range map[string]string{root + "/etc/systemd": "ETC", root + "/usr/lib/systemd": "USR", root + "/run/systemd": "RUN"} {
					j = strings.ReplaceAll(j, from, to)
				}
				return j
			}
			if got := short(r.withOwn, true); got != tt.withOwn {
				t.Errorf("with calico-prep's drop-in, on: %q, want %q", got, tt.withOwn)
			}
			if tt.withoutOwnV != "" {
				if got := short(r.withoutOwn, false); got != tt.withoutOwnV {
					t.Errorf("without: %q, want %q", got, tt.withoutOwnV)
				}
			}
		})
	}
}

func TestParseUnitErrors(t *testing.T) {
	for _, in := range []string{"Name=x\n", "[Match\n", "[Match]\nnot an assignment\n"} {
		if _, err := parseUnit("f.network", []byte(in)); err == nil || !strings.Contains(err.Error(), `"f.network" line`) {
			t.Errorf("parseUnit(%q) = %v, want an error naming the file and line", in, err)
		}
	}
}
