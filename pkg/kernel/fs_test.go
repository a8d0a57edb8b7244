package kernel

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeTree creates a host root in a temporary directory from host paths and contents.
func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for p, content := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestConfigGzFixtureMatchesSource(t *testing.T) {
	raw, err := os.ReadFile("testdata/configgz/proc/config.gz")
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile("testdata/configgz.config")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("testdata/configgz/proc/config.gz is stale: regenerate it with gzip -9n -c testdata/configgz.config")
	}
}

func TestRelease(t *testing.T) {
	tests := []struct {
		name, root, want string
		wantErr          error
	}{
		{name: "debian", root: "testdata/debian", want: "6.1.0-18-amd64"},
		{name: "config.gz only", root: "testdata/configgz", want: "6.18.0-nft"},
		{name: "no osrelease", root: t.TempDir(), wantErr: fs.ErrNotExist},
		{name: "empty osrelease", root: writeTree(t, map[string]string{osreleasePath: "\n"})},
		{name: "release with a slash", root: writeTree(t, map[string]string{osreleasePath: "../../etc\n"})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := FS{Root: tt.root}.Release()
			if tt.want == "" {
				if err == nil {
					t.Fatalf("Release() = %q, want an error", got)
				}
				if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
					t.Fatalf("Release() error = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Release() = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestSysctl(t *testing.T) {
	tests := []struct {
		name, root, sysctl, want string
		notExist                 bool
	}{
		{name: "dotted", root: "testdata/debian", sysctl: "net.ipv4.ip_forward", want: "1"},
		{name: "slashed", root: "testdata/debian", sysctl: "net/ipv4/conf/all/rp_filter", want: "2"},
		{name: "ipv6 present", root: "testdata/debian", sysctl: "net.ipv6.conf.all.forwarding", want: "1"},
		{name: "ipv6 disabled", root: "testdata/bare", sysctl: "net.ipv6.conf.all.forwarding", notExist: true},
		{name: "empty name", root: "testdata/debian", sysctl: ""},
		{name: "empty component", root: "testdata/debian", sysctl: "net..ip_forward"},
		{name: "parent component", root: "testdata/debian", sysctl: "../../etc/passwd"},
		{name: "parent in slashed name", root: "testdata/debian", sysctl: "net/../../../etc/passwd"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := FS{Root: tt.root}.Sysctl(tt.sysctl)
			switch {
			case tt.want != "":
				if err != nil || got != tt.want {
					t.Fatalf("Sysctl(%q) = %q, %v; want %q", tt.sysctl, got, err, tt.want)
				}
			case tt.notExist:
				if !errors.Is(err, fs.ErrNotExist) {
					t.Fatalf("Sysctl(%q) = %q, %v; want an error wrapping fs.ErrNotExist", tt.sysctl, got, err)
				}
			default:
				if err == nil || errors.Is(err, fs.ErrNotExist) {
					t.Fatalf("Sysctl(%q) = %q, %v; want a name error", tt.sysctl, got, err)
				}
			}
		})
	}
}

func TestModule(t *testing.T) {
	const debRel = "6.1.0-18-amd64"
	corrupt := writeTree(t, map[string]string{osreleasePath: "6.6.0\n", "/proc/config.gz": "not gzip"})
	tests := []struct {
		name, root, module string
		state              State
		evidence           []string // substrings of Evidence
		wantErr            bool
	}{
		{name: "loaded module", root: "testdata/debian", module: "ip_set", state: Loaded, evidence: []string{"/sys/module/ip_set"}},
		{name: "built-in module in sys/module", root: "testdata/debian", module: "ipv6", state: Loaded, evidence: []string{"/sys/module/ipv6, built in"}},
		{name: "modules.dep", root: "testdata/debian", module: "xt_set", state: Loadable,
			evidence: []string{"/lib/modules/" + debRel + "/modules.dep: kernel/net/netfilter/xt_set.ko.xz"}},
		{name: "dash in file name", root: "testdata/debian", module: "vfio-pci", state: Loadable, evidence: []string{"vfio-pci.ko.xz"}},
		{name: "underscore finds dash file", root: "testdata/debian", module: "vfio_pci", state: Loadable, evidence: []string{"vfio-pci.ko.xz"}},
		{name: "modules.builtin before config", root: "testdata/debian", module: "xt_conntrack", state: Builtin,
			evidence: []string{"/lib/modules/" + debRel + "/modules.builtin: kernel/net/netfilter/xt_conntrack.ko"}},
		{name: "boot config =m", root: "testdata/debian", module: "xt_bpf", state: Loadable,
			evidence: []string{"CONFIG_NETFILTER_XT_MATCH_BPF=m in /boot/config-" + debRel}},
		{name: "boot config not set", root: "testdata/debian", module: "xt_ipvs", state: Missing,
			evidence: []string{"not in /sys/module", "not in /lib/modules/" + debRel + "/modules.dep", "CONFIG_NETFILTER_XT_MATCH_IPVS is not set in /boot/config-" + debRel}},
		{name: "only a dependency in modules.dep", root: "testdata/debian", module: "ip_tunnel", state: Missing,
			evidence: []string{"not in /lib/modules/" + debRel + "/modules.dep", "no known config symbol"}},
		{name: "config.gz built in via sys/module", root: "testdata/configgz", module: "vxlan", state: Loaded, evidence: []string{"/sys/module/vxlan, built in"}},
		{name: "config.gz =y", root: "testdata/configgz", module: "nf_tables", state: Builtin,
			evidence: []string{"CONFIG_NF_TABLES=y in /proc/config.gz"}},
		{name: "config.gz =m", root: "testdata/configgz", module: "ipt_REJECT", state: Loadable,
			evidence: []string{"CONFIG_IP_NF_TARGET_REJECT=m in /proc/config.gz"}},
		{name: "newer symbol not set wins over older set", root: "testdata/configgz", module: "ip_tables", state: Missing,
			evidence: []string{"/lib/modules/6.18.0-nft/modules.dep absent", "CONFIG_IP_NF_IPTABLES_LEGACY is not set in /proc/config.gz"}},
		{name: "older symbol when newer absent", root: "testdata/configgz", module: "ip6_tables", state: Builtin,
			evidence: []string{"CONFIG_IP6_NF_IPTABLES=y in /proc/config.gz"}},
		{name: "config.gz not set", root: "testdata/configgz", module: "wireguard", state: Missing,
			evidence: []string{"CONFIG_WIREGUARD is not set in /proc/config.gz"}},
		{name: "no config at all", root: "testdata/bare", module: "ip_set", state: Missing,
			evidence: []string{"no kernel config in /proc/config.gz or /boot/config-5.4.0-150-generic"}},
		{name: "no release", root: t.TempDir(), module: "ip_set", wantErr: true},
		{name: "corrupt config.gz", root: corrupt, module: "ip_set", wantErr: true},
		{name: "invalid name", root: "testdata/debian", module: "../ip_set", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := FS{Root: tt.root}.Module(tt.module)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("Module(%q) = %+v, want an error", tt.module, m)
				}
				return
			}
			if err != nil {
				t.Fatalf("Module(%q): %v", tt.module, err)
			}
			if m.Name != tt.module || m.State != tt.state {
				t.Fatalf("Module(%q) = %+v, want state %s", tt.module, m, tt.state)
			}
			for _, e := range tt.evidence {
				if !strings.Contains(m.Evidence, e) {
					t.Errorf("Module(%q).Evidence = %q, want it to contain %q", tt.module, m.Evidence, e)
				}
			}
		})
	}
}

func TestModuleNameFromPath(t *testing.T) {
	tests := []struct {
		path, want string
		ok         bool
	}{
		{"kernel/net/netfilter/xt_set.ko", "xt_set", true},
		{"kernel/net/netfilter/xt_set.ko.zst", "xt_set", true},
		{"kernel/net/netfilter/xt_set.ko.xz", "xt_set", true},
		{"kernel/net/netfilter/xt_set.ko.gz", "xt_set", true},
		{"kernel/drivers/vfio/pci/vfio-pci.ko", "vfio_pci", true},
		{"kernel/net/netfilter/xt_set.kobj", "", false},
		{"kernel/net/netfilter/xt_set.o", "", false},
		{".ko", "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		got, ok := moduleNameFromPath(tt.path)
		if got != tt.want || ok != tt.ok {
			t.Errorf("moduleNameFromPath(%q) = %q, %v; want %q, %v", tt.path, got, ok, tt.want, tt.ok)
		}
	}
}

func TestParseConfig(t *testing.T) {
	cfg := parseConfig([]byte("# comment\nCONFIG_A=y\n  CONFIG_B=m  \r\n# CONFIG_C is not set\nCONFIG_D=\"x=y\"\nCONFIG_=y\nCONFIG_E F=y\n#CONFIG_G is not set\nNOTCONFIG_H=y\n"), nil)
	want := map[string]string{"A": "y", "B": "m", "C": "n", "D": `"x=y"`}
	if len(cfg) != len(want) {
		t.Fatalf("parseConfig = %v, want %v", cfg, want)
	}
	for k, v := range want {
		if cfg[k] != v {
			t.Errorf("parseConfig[%q] = %q, want %q", k, cfg[k], v)
		}
	}
}

// The cache keeps of a modules.dep and a kernel config only what its checks look up: the daemon
// holds it for as long as it runs, and a distribution's files name thousands of modules.
func TestCacheKeepsOnlyWhatItLooksUp(t *testing.T) {
	root := writeTree(t, map[string]string{
		"/proc/sys/kernel/osrelease":              "6.1.0-18-amd64\n",
		"/lib/modules/6.1.0-18-amd64/modules.dep": "kernel/drivers/net/vxlan/vxlan.ko: kernel/net/ipv4/udp_tunnel.ko\nkernel/net/ipv4/udp_tunnel.ko:\nkernel/fs/ext4/ext4.ko:\n",
		"/boot/config-6.1.0-18-amd64":             "CONFIG_EXT4_FS=y\nCONFIG_VXLAN=m\n# CONFIG_WIREGUARD is not set\n",
	})
	f := FS{Root: root}
	c := newCache("vxlan", "wireguard")
	for _, name := range []string{"vxlan", "wireguard"} {
		if _, err := f.module(c, name); err != nil {
			t.Fatal(err)
		}
	}
	for p, pf := range c.files {
		for k := range pf.index {
			if k != "vxlan" {
				t.Errorf("%s: kept module %q", p, k)
			}
		}
		for k := range pf.config {
			if k != "VXLAN" && k != "WIREGUARD" {
				t.Errorf("%s: kept symbol %q", p, k)
			}
		}
	}
	if m, _ := f.module(c, "wireguard"); m.State != Missing || !strings.Contains(m.Evidence, "CONFIG_WIREGUARD is not set") {
		t.Errorf("wireguard: %+v", m)
	}
}
