package networkmanager

import (
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/calico-prep/calico-prep/pkg/calico"
)

// Properties for the parsers of operators' NetworkManager files: never panic; an error is one
// line naming the file; what parses can be judged; and the shortcut the checks take (does a
// list of specs cover every name a pattern matches?) agrees with evaluating the list on names.

func FuzzParseConf(f *testing.F) {
	for _, s := range []string{
		"[keyfile]\nunmanaged-devices=interface-name:cali*;interface-name:tunl*\n",
		"[keyfile]\nunmanaged-devices+=a,b\nunmanaged-devices-=a\n[config]\nenable=false\n",
		"[device-x]\nmatch-device=interface-name:cali*\nmanaged=1\n",
		"# comment\n\n[keyfile]\r\nunmanaged-devices = *,except:interface-name:ens33 \r\n",
		"key=before group\n",
		"[keyfile\n",
		"[keyfile]\nunmanaged-devices=\\\\;\\,;\\s\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		const path = "/etc/NetworkManager/conf.d/fuzz.conf"
		cf, err := parseConf(path, data)
		if err != nil {
			msg := err.Error()
			if !strings.Contains(msg, path) || strings.Contains(msg, "\n") {
				t.Fatalf("error %q is not one line naming the file", msg)
			}
			return
		}
		res := evaluate([]confFile{cf}, calico.UnmanagedGlobs())
		if len(res) != len(calico.UnmanagedGlobs()) {
			t.Fatalf("%d results for %d patterns", len(res), len(calico.UnmanagedGlobs()))
		}
		// Adding calico-prep's own drop-in after the file covers every pattern unless the
		// file excepts it.
		own, err := parseConf(ownFile, dropIn(calico.UnmanagedGlobs()))
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range evaluate([]confFile{cf, own}, calico.UnmanagedGlobs()) {
			if !r.covered && !strings.Contains(r.conflict, "excepts it") {
				t.Fatalf("own drop-in after %q leaves %s uncovered: %+v", data, r.pattern, r)
			}
		}
	})
}

func FuzzSpecs(f *testing.F) {
	for _, s := range [][3]string{
		{"interface-name:cali*;interface-name:tunl*", "cali*", "cali0a1b2c3d4e5"},
		{"*,except:interface-name:cali1*", "cali*", "cali12"},
		{"interface-name:c?li*,interface-name:cali", "cali*", "cali"},
		{"except:type:veth;interface-name:*a*", "vxlan.calico", "vxlan.calico"},
		{`interface-name:a\,b;c\;d;\s`, "a*", "a,b"},
		{"interface-name:=cali*", "cali*", "cali*"},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, value, pattern, name string) {
		specs := splitSpecs(value)
		if again := splitSpecs(joinSpecs(specs)); !strings.ContainsAny(value, "\f\v") && !reflect.DeepEqual(again, specs) {
			t.Fatalf("split(join(%q)) = %q", specs, again)
		}
		parsed := make([]deviceSpec, len(specs))
		for i, s := range specs {
			parsed[i] = parseSpec(s)
		}
		if len(pattern) > 12 || !utf8.ValidString(name) {
			return
		}
		g := compileGlob(pattern, false)
		c := cover(g, parsed)
		if len(name) == 0 || len(name) > maxIfname || !g.matchName(name) {
			return
		}
		match, known := matchSpecs(parsed, name)
		if c.covered && known && !match {
			t.Fatalf("cover says %q covers %q, but name %q is not matched", value, pattern, name)
		}
		if c.excludedBy != nil {
			return
		}
		// A name the pattern matches and an except spec matches must have been noticed.
		for _, s := range parsed {
			if s.except && (s.kind == kindName || s.kind == kindAll) && s.glob.matchName(name) && !strings.ContainsAny(name, "*?") {
				t.Fatalf("%q excepts %q, a name of %q, unnoticed", s.raw, name, pattern)
			}
		}
	})
}
