package kernel

import (
	"os"
	"strings"
	"testing"
)

func FuzzParseConfig(f *testing.F) {
	for _, p := range []string{"testdata/configgz.config", "testdata/debian/boot/config-6.1.0-18-amd64"} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_=m\nCONFIG_C\n# CONFIG_ is not set\n"))
	f.Add([]byte(strings.Repeat("x", 70000) + "\nCONFIG_AFTER_LONG_LINE=y\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg := parseConfig(data, nil)
		for sym, val := range cfg {
			if !validSymbol([]byte(sym)) {
				t.Fatalf("invalid symbol %q", sym)
			}
			if strings.ContainsAny(val, "\n") {
				t.Fatalf("value of %s spans lines: %q", sym, val)
			}
			if !strings.Contains(string(data), sym) {
				t.Fatalf("symbol %q is not in the input", sym)
			}
		}
	})
}

func FuzzParseModuleIndex(f *testing.F) {
	for _, p := range []string{"testdata/debian/lib/modules/6.1.0-18-amd64/modules.dep", "testdata/debian/lib/modules/6.1.0-18-amd64/modules.builtin"} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(".ko:\n/.ko.xz\na.ko.zst: b.ko\nx/y-z.ko.gz\n:\n\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for key, entry := range parseModuleIndex(data, nil) {
			if key == "" || strings.ContainsAny(key, "/-\n") {
				t.Fatalf("bad module key %q", key)
			}
			if got, ok := moduleNameFromPath(entry); !ok || got != key {
				t.Fatalf("entry %q gives %q, %v; indexed as %q", entry, got, ok, key)
			}
			if strings.ContainsAny(entry, ":\n") {
				t.Fatalf("entry %q keeps a separator", entry)
			}
		}
	})
}

func FuzzSysctlPath(f *testing.F) {
	for _, s := range []string{"net.ipv4.ip_forward", "net/ipv4/conf/eth0.100/rp_filter", "../x", "a..b", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		p, err := sysctlPath(name)
		if err != nil {
			return
		}
		if !strings.HasPrefix(p, "/proc/sys/") {
			t.Fatalf("sysctlPath(%q) = %q, outside /proc/sys", name, p)
		}
		for _, part := range strings.Split(strings.TrimPrefix(p, "/proc/sys/"), "/") {
			if part == "" || part == "." || part == ".." {
				t.Fatalf("sysctlPath(%q) = %q has component %q", name, p, part)
			}
		}
	})
}
