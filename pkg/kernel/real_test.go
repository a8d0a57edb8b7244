package kernel

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/calico-prep/calico-prep/pkg/check"
)

// readHostConfig decompresses the machine's /proc/config.gz with the standard library alone, as
// an oracle independent of parseConfig.
func readHostConfig(t *testing.T) string {
	t.Helper()
	raw, err := os.ReadFile("/proc/config.gz")
	if err != nil {
		t.Fatalf("this test needs /proc/config.gz (CONFIG_IKCONFIG_PROC): %v", err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestRealRoot asserts only what must hold on this machine: a kernel without /lib/modules whose
// config is in /proc/config.gz, with ip_set and vxlan in /sys/module. It fails, not skips, when
// the machine is not like that.
func TestRealRoot(t *testing.T) {
	host := FS{Root: "/"}

	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		t.Fatal(err)
	}
	rel, err := host.Release()
	if err != nil {
		t.Fatal(err)
	}
	if want := unix.ByteSliceToString(uts.Release[:]); rel != want {
		t.Fatalf("Release() = %q, uname says %q", rel, want)
	}

	if _, err := os.Stat("/lib/modules/" + rel); !os.IsNotExist(err) {
		t.Fatalf("this test expects a machine without /lib/modules/%s (stat: %v)", rel, err)
	}
	config := readHostConfig(t)

	for _, name := range []string{"ip_set", "vxlan"} {
		m, err := host.Module(name)
		if err != nil {
			t.Fatal(err)
		}
		if m.State != Loaded || !strings.HasPrefix(m.Evidence, "/sys/module/"+name) {
			t.Errorf("Module(%q) = %+v, want loaded from /sys/module", name, m)
		}
	}

	// xt_set and ipip are not in /sys/module here, so only the kernel config can answer; the
	// expected answer comes from the raw config text.
	for _, tc := range []struct{ module, symbol string }{
		{"xt_set", "NETFILTER_XT_SET"},
		{"ipip", "NET_IPIP"},
	} {
		if _, err := os.Stat("/sys/module/" + tc.module); !os.IsNotExist(err) {
			t.Fatalf("this test expects no /sys/module/%s (stat: %v)", tc.module, err)
		}
		want, line := Missing, "# CONFIG_"+tc.symbol+" is not set"
		switch {
		case strings.Contains(config, "\nCONFIG_"+tc.symbol+"=y\n"):
			want, line = Builtin, "CONFIG_"+tc.symbol+"=y"
		case strings.Contains(config, "\nCONFIG_"+tc.symbol+"=m\n"):
			want, line = Loadable, "CONFIG_"+tc.symbol+"=m"
		case !strings.Contains(config, "\n"+line+"\n"):
			t.Fatalf("/proc/config.gz says nothing of CONFIG_%s", tc.symbol)
		}
		m, err := host.Module(tc.module)
		if err != nil {
			t.Fatal(err)
		}
		if m.State != want || !strings.Contains(m.Evidence, "/proc/config.gz") {
			t.Errorf("Module(%q) = %+v, want %s from /proc/config.gz (%s)", tc.module, m, want, line)
		}
	}

	raw, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if err != nil {
		t.Fatal(err)
	}
	if v, err := host.Sysctl("net.ipv4.ip_forward"); err != nil || v != strings.TrimSpace(string(raw)) {
		t.Errorf("Sysctl(net.ipv4.ip_forward) = %q, %v; /proc says %q", v, err, raw)
	}

	// A full pass over the real root: nothing errors, and what the machine has passes.
	results := map[string]check.Result{}
	for _, c := range Checks(host, Requirements{Encapsulation: "vxlan", IPv6: true}) {
		r := c.Verify(context.Background())
		results[c.Name] = r
		if r.Reason == "VerifyError" {
			t.Errorf("%s: %s", c.Name, r.Message)
		}
	}
	for _, name := range []string{"kernel/version", "kernel/module/ip_set", "kernel/module/vxlan", "kernel/module/xt_set"} {
		if r := results[name]; r.Status != check.Pass {
			t.Errorf("%s = %+v, want pass", name, r)
		}
	}
}
