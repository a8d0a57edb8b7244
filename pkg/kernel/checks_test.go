package kernel

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/calico-prep/calico-prep/pkg/check"
)

type outcome struct {
	status check.Status
	reason string
}

var (
	pass     = outcome{check.Pass, "Satisfied"}
	optional = outcome{check.Pass, "OptionalModuleMissing"}
	missing  = outcome{check.Fail, "ModuleMissing"}
	errored  = outcome{check.Fail, "VerifyError"}
)

// verifyAll runs every check once, in order, as the runner would.
func verifyAll(t *testing.T, checks []check.Check) ([]string, map[string]check.Result) {
	t.Helper()
	names := make([]string, 0, len(checks))
	results := make(map[string]check.Result, len(checks))
	for _, c := range checks {
		if c.Apply != nil {
			t.Errorf("%s has an Apply; kernel checks only inspect", c.Name)
		}
		if _, dup := results[c.Name]; dup {
			t.Errorf("check %s listed twice", c.Name)
		}
		names = append(names, c.Name)
		results[c.Name] = c.Verify(context.Background())
	}
	return names, results
}

func TestChecks(t *testing.T) {
	ancient := writeTree(t, map[string]string{osreleasePath: "3.2.0-4-amd64\n", "/proc/sys/net/ipv4/ip_forward": "1\n", "/proc/sys/net/ipv4/conf/all/rp_filter": "1\n"})
	odd := writeTree(t, map[string]string{osreleasePath: "linux-next\n", "/proc/sys/net/ipv4/ip_forward": "1\n", "/proc/sys/net/ipv4/conf/all/rp_filter": "1\n"})

	tests := []struct {
		name string
		root string
		req  Requirements
		want map[string]outcome // every check the pass must list, and nothing else
	}{
		{
			name: "debian with ipip, wireguard and ipv6",
			root: "testdata/debian",
			req:  Requirements{Encapsulation: "ipip", WireGuard: true, IPv6: true},
			want: map[string]outcome{
				"kernel/version":                                 pass,
				"kernel/module/ip_set":                           pass,
				"kernel/module/ip_tables":                        pass,
				"kernel/module/ip6_tables":                       pass,
				"kernel/module/xt_set":                           pass,
				"kernel/module/ipt_rpfilter":                     pass,
				"kernel/module/ip6t_rpfilter":                    pass,
				"kernel/module/xt_addrtype":                      pass,
				"kernel/module/xt_conntrack":                     pass,
				"kernel/module/xt_mark":                          pass,
				"kernel/module/xt_multiport":                     pass,
				"kernel/module/ipt_reject":                       pass,
				"kernel/module/nf_conntrack_netlink":             pass,
				"kernel/module/xt_ipvs":                          optional,
				"kernel/module/xt_u32":                           pass,
				"kernel/module/xt_bpf":                           pass,
				"kernel/module/ipip":                             pass,
				"kernel/module/wireguard":                        pass,
				"kernel/sysctl/net.ipv4.ip_forward":              pass,
				"kernel/sysctl/net.ipv6.conf.all.forwarding":     pass,
				"kernel/sysctl/net.ipv4.conf.all.rp_filter":      pass,
				"kernel/sysctl/net.ipv4.conf.all.src_valid_mark": {check.Pass, "SetByFelix"},
			},
		},
		{
			name: "nft-only kernel with vxlan",
			root: "testdata/configgz",
			req:  Requirements{Encapsulation: "vxlan"},
			want: map[string]outcome{
				"kernel/version":                            pass,
				"kernel/module/ip_set":                      pass,
				"kernel/module/ip_tables":                   pass, // through nf_tables
				"kernel/module/ip6_tables":                  pass,
				"kernel/module/xt_set":                      pass,
				"kernel/module/ipt_rpfilter":                pass,
				"kernel/module/xt_addrtype":                 pass,
				"kernel/module/xt_conntrack":                pass,
				"kernel/module/xt_mark":                     pass,
				"kernel/module/xt_multiport":                pass,
				"kernel/module/ipt_reject":                  pass,
				"kernel/module/nf_conntrack_netlink":        pass,
				"kernel/module/xt_ipvs":                     optional,
				"kernel/module/xt_u32":                      optional,
				"kernel/module/xt_bpf":                      pass,
				"kernel/module/vxlan":                       pass,
				"kernel/sysctl/net.ipv4.ip_forward":         {check.Fail, "SysctlWrong"},
				"kernel/sysctl/net.ipv4.conf.all.rp_filter": pass,
			},
		},
		{
			name: "nft-only kernel without the tunnel drivers",
			root: "testdata/configgz",
			req:  Requirements{Encapsulation: "ipip", WireGuard: true, IPv6: true},
			want: map[string]outcome{
				"kernel/version":                                 pass,
				"kernel/module/ip_set":                           pass,
				"kernel/module/ip_tables":                        pass,
				"kernel/module/ip6_tables":                       pass,
				"kernel/module/xt_set":                           pass,
				"kernel/module/ipt_rpfilter":                     pass,
				"kernel/module/ip6t_rpfilter":                    missing,
				"kernel/module/xt_addrtype":                      pass,
				"kernel/module/xt_conntrack":                     pass,
				"kernel/module/xt_mark":                          pass,
				"kernel/module/xt_multiport":                     pass,
				"kernel/module/ipt_reject":                       pass,
				"kernel/module/nf_conntrack_netlink":             pass,
				"kernel/module/xt_ipvs":                          optional,
				"kernel/module/xt_u32":                           optional,
				"kernel/module/xt_bpf":                           pass,
				"kernel/module/ipip":                             missing,
				"kernel/module/wireguard":                        missing,
				"kernel/sysctl/net.ipv4.ip_forward":              {check.Fail, "SysctlWrong"},
				"kernel/sysctl/net.ipv6.conf.all.forwarding":     {check.Fail, "SysctlMissing"},
				"kernel/sysctl/net.ipv4.conf.all.rp_filter":      pass,
				"kernel/sysctl/net.ipv4.conf.all.src_valid_mark": pass,
			},
		},
		{
			name: "old kernel without modules or config, no encapsulation",
			root: "testdata/bare",
			req:  Requirements{Encapsulation: "none"},
			want: map[string]outcome{
				"kernel/version":                            {check.Pass, "KernelBelowRecommended"},
				"kernel/module/ip_set":                      missing,
				"kernel/module/ip_tables":                   missing,
				"kernel/module/ip6_tables":                  optional,
				"kernel/module/xt_set":                      missing,
				"kernel/module/ipt_rpfilter":                missing,
				"kernel/module/xt_addrtype":                 missing,
				"kernel/module/xt_conntrack":                missing,
				"kernel/module/xt_mark":                     missing,
				"kernel/module/xt_multiport":                missing,
				"kernel/module/ipt_reject":                  missing,
				"kernel/module/nf_conntrack_netlink":        missing,
				"kernel/module/xt_ipvs":                     optional,
				"kernel/module/xt_u32":                      optional,
				"kernel/module/xt_bpf":                      optional,
				"kernel/sysctl/net.ipv4.ip_forward":         pass,
				"kernel/sysctl/net.ipv4.conf.all.rp_filter": pass,
			},
		},
		{
			name: "kernel older than Calico supports",
			root: ancient,
			req:  Requirements{Encapsulation: "none"},
			want: map[string]outcome{
				"kernel/version":                            {check.Fail, "KernelTooOld"},
				"kernel/module/ip_set":                      missing,
				"kernel/module/ip_tables":                   missing,
				"kernel/module/ip6_tables":                  optional,
				"kernel/module/xt_set":                      missing,
				"kernel/module/ipt_rpfilter":                missing,
				"kernel/module/xt_addrtype":                 missing,
				"kernel/module/xt_conntrack":                missing,
				"kernel/module/xt_mark":                     missing,
				"kernel/module/xt_multiport":                missing,
				"kernel/module/ipt_reject":                  missing,
				"kernel/module/nf_conntrack_netlink":        missing,
				"kernel/module/xt_ipvs":                     optional,
				"kernel/module/xt_u32":                      optional,
				"kernel/module/xt_bpf":                      optional,
				"kernel/sysctl/net.ipv4.ip_forward":         pass,
				"kernel/sysctl/net.ipv4.conf.all.rp_filter": pass,
			},
		},
		{
			name: "release without a version",
			root: odd,
			req:  Requirements{Encapsulation: "none"},
			want: map[string]outcome{
				"kernel/version":                            {check.Fail, "VersionUnknown"},
				"kernel/module/ip_set":                      missing,
				"kernel/module/ip_tables":                   missing,
				"kernel/module/ip6_tables":                  optional,
				"kernel/module/xt_set":                      missing,
				"kernel/module/ipt_rpfilter":                missing,
				"kernel/module/xt_addrtype":                 missing,
				"kernel/module/xt_conntrack":                missing,
				"kernel/module/xt_mark":                     missing,
				"kernel/module/xt_multiport":                missing,
				"kernel/module/ipt_reject":                  missing,
				"kernel/module/nf_conntrack_netlink":        missing,
				"kernel/module/xt_ipvs":                     optional,
				"kernel/module/xt_u32":                      optional,
				"kernel/module/xt_bpf":                      optional,
				"kernel/sysctl/net.ipv4.ip_forward":         pass,
				"kernel/sysctl/net.ipv4.conf.all.rp_filter": pass,
			},
		},
		{
			name: "empty root",
			root: t.TempDir(),
			req:  Requirements{Encapsulation: "vxlan"},
			want: map[string]outcome{
				"kernel/version":                            errored,
				"kernel/module/ip_set":                      errored,
				"kernel/module/ip_tables":                   errored,
				"kernel/module/ip6_tables":                  errored,
				"kernel/module/xt_set":                      errored,
				"kernel/module/ipt_rpfilter":                errored,
				"kernel/module/xt_addrtype":                 errored,
				"kernel/module/xt_conntrack":                errored,
				"kernel/module/xt_mark":                     errored,
				"kernel/module/xt_multiport":                errored,
				"kernel/module/ipt_reject":                  errored,
				"kernel/module/nf_conntrack_netlink":        errored,
				"kernel/module/xt_ipvs":                     errored,
				"kernel/module/xt_u32":                      errored,
				"kernel/module/xt_bpf":                      errored,
				"kernel/module/vxlan":                       errored,
				"kernel/sysctl/net.ipv4.ip_forward":         errored,
				"kernel/sysctl/net.ipv4.conf.all.rp_filter": errored,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			names, results := verifyAll(t, Checks(FS{Root: tt.root}, tt.req))
			for _, name := range names {
				want, ok := tt.want[name]
				if !ok {
					t.Errorf("unexpected check %s: %+v", name, results[name])
					continue
				}
				r := results[name]
				if r.Status != want.status || r.Reason != want.reason {
					t.Errorf("%s = %s/%s (%s), want %s/%s", name, r.Status, r.Reason, r.Message, want.status, want.reason)
				}
				if r.Message == "" {
					t.Errorf("%s has no message", name)
				}
				if sel := (check.Selector{name}); !sel.Matches(check.Check{Name: name}) {
					t.Errorf("%s cannot be selected", name)
				}
				if _, err := check.ParseSelector("--disable-checks", name); err != nil {
					t.Errorf("%s is not a name --disable-checks accepts: %v", name, err)
				}
			}
			for name := range tt.want {
				if !slices.Contains(names, name) {
					t.Errorf("missing check %s", name)
				}
			}
			if names[0] != "kernel/version" {
				t.Errorf("first check is %s, want kernel/version", names[0])
			}
		})
	}
}

func TestCheckMessagesAndFacts(t *testing.T) {
	_, deb := verifyAll(t, Checks(FS{Root: "testdata/debian"}, Requirements{Encapsulation: "ipip", WireGuard: true}))
	_, nft := verifyAll(t, Checks(FS{Root: "testdata/configgz"}, Requirements{Encapsulation: "ipip"}))
	tests := []struct {
		name    string
		r       check.Result
		message []string
		facts   map[string]string
	}{
		{
			name:    "alternative found",
			r:       nft["kernel/module/ip_tables"],
			message: []string{"nf_tables is built in", "CONFIG_NF_TABLES=y in /proc/config.gz"},
			facts:   map[string]string{"module": "nf_tables", "state": "builtin", "alternatives": "ip_tables,nf_tables", "required": "true"},
		},
		{
			name:    "required module missing says what to build",
			r:       nft["kernel/module/ipip"],
			message: []string{"kernel module ipip is not available", "CONFIG_NET_IPIP is not set in /proc/config.gz", "CONFIG_NET_IPIP=m"},
			facts:   map[string]string{"module": "ipip", "state": "missing", "required": "true"},
		},
		{
			name:    "optional module missing",
			r:       deb["kernel/module/xt_ipvs"],
			message: []string{"optional kernel module xt_ipvs is not available", "IPVS mode"},
			facts:   map[string]string{"module": "xt_ipvs", "state": "missing", "required": "false"},
		},
		{
			name:    "loaded module",
			r:       deb["kernel/module/ip_set"],
			message: []string{"ip_set is in the running kernel (/sys/module/ip_set)"},
			facts:   map[string]string{"state": "loaded", "evidence": "/sys/module/ip_set"},
		},
		{
			name:    "sysctl wrong says what to set",
			r:       nft["kernel/sysctl/net.ipv4.ip_forward"],
			message: []string{"net.ipv4.ip_forward is 0", "sysctl -w net.ipv4.ip_forward=1"},
			facts:   map[string]string{"sysctl": "net.ipv4.ip_forward", "value": "0", "want": "1"},
		},
		{
			name:    "loose rp_filter passes with a note",
			r:       deb["kernel/sysctl/net.ipv4.conf.all.rp_filter"],
			message: []string{"is 2 (loose)", "IgnoreLooseRPF"},
			facts:   map[string]string{"value": "2", "mode": "loose"},
		},
		{
			name:    "version",
			r:       deb["kernel/version"],
			message: []string{"6.1.0-18-amd64"},
			facts:   map[string]string{"release": "6.1.0-18-amd64", "minimum": "3.10", "recommended": "5.10"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, m := range tt.message {
				if !strings.Contains(tt.r.Message, m) {
					t.Errorf("message %q does not contain %q", tt.r.Message, m)
				}
			}
			for k, v := range tt.facts {
				if tt.r.Facts[k] != v {
					t.Errorf("fact %s = %q, want %q (facts %v)", k, tt.r.Facts[k], v, tt.r.Facts)
				}
			}
		})
	}
}

// TestChecksCacheFollowsFiles shows that checks built once see a changed module index, and that
// an unchanged kernel config is not read again.
func TestChecksCacheFollowsFiles(t *testing.T) {
	const rel = "6.6.0-test"
	dep := "/lib/modules/" + rel + "/modules.dep"
	cfg := "/boot/config-" + rel
	root := writeTree(t, map[string]string{
		osreleasePath: rel + "\n",
		dep:           "kernel/net/netfilter/x_tables.ko:\n",
		cfg:           "CONFIG_NETFILTER_XT_SET=y\n",
	})
	checks := Checks(FS{Root: root}, Requirements{Encapsulation: "none"})
	verify := func(name string) check.Result {
		t.Helper()
		for _, c := range checks {
			if c.Name == name {
				return c.Verify(context.Background())
			}
		}
		t.Fatalf("no check %s", name)
		return check.Result{}
	}

	if r := verify("kernel/module/ip_set"); r.Status != check.Fail {
		t.Fatalf("ip_set before depmod = %+v, want fail", r)
	}
	if err := os.WriteFile(filepath.Join(root, dep), []byte("kernel/net/netfilter/ipset/ip_set.ko: kernel/net/netfilter/nfnetlink.ko\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := verify("kernel/module/ip_set"); r.Status != check.Pass || r.Facts["state"] != "loadable" {
		t.Fatalf("ip_set after depmod = %+v, want pass as loadable", r)
	}

	if r := verify("kernel/module/xt_set"); r.Facts["state"] != "builtin" {
		t.Fatalf("xt_set = %+v, want builtin from %s", r, cfg)
	}
	// Same size and modification time: the parsed config is reused, so the new content is not
	// seen. A fresh FS.Module, which has no cache, sees it.
	full := filepath.Join(root, cfg)
	st, err := os.Stat(full)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(full, []byte("CONFIG_NETFILTER_XT_SET=m\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(full, time.Time{}, st.ModTime()); err != nil {
		t.Fatal(err)
	}
	if r := verify("kernel/module/xt_set"); r.Facts["state"] != "builtin" {
		t.Fatalf("xt_set after an unchanged-looking config = %+v, want the cached builtin", r)
	}
	if m, err := (FS{Root: root}).Module("xt_set"); err != nil || m.State != Loadable {
		t.Fatalf("Module(xt_set) = %+v, %v; want loadable from the new config", m, err)
	}
}

func TestParseRelease(t *testing.T) {
	tests := []struct {
		rel  string
		want kernelVersion
		ok   bool
	}{
		{"6.18.44-fc-v657", kernelVersion{6, 18}, true},
		{"5.15.0-91-generic", kernelVersion{5, 15}, true},
		{"4.18.0-513.el8.x86_64", kernelVersion{4, 18}, true},
		{"3.10.0-1160.el7.x86_64", kernelVersion{3, 10}, true},
		{"5.10", kernelVersion{5, 10}, true},
		{"6.9-rc1", kernelVersion{6, 9}, true},
		{"2.6.32", kernelVersion{2, 6}, true},
		{"6", kernelVersion{}, false},
		{"6.x", kernelVersion{}, false},
		{"linux-6.1", kernelVersion{}, false},
		{"-1.5", kernelVersion{}, false},
		{"", kernelVersion{}, false},
	}
	for _, tt := range tests {
		got, ok := parseRelease(tt.rel)
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseRelease(%q) = %v, %v; want %v, %v", tt.rel, got, ok, tt.want, tt.ok)
		}
	}
}
