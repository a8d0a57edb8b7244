package networkmanager

import (
	"reflect"
	"strings"
	"testing"
)

func TestSplitSpecs(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{name: "empty", in: "", want: nil},
		{name: "semicolons and commas", in: "interface-name:cali*;interface-name:tunl*,mac:00:11:22:33:44:55", want: []string{"interface-name:cali*", "interface-name:tunl*", "mac:00:11:22:33:44:55"}},
		{name: "whitespace around specs is trimmed", in: "  a , b ;\tc  ", want: []string{"a", "b", "c"}},
		{name: "empty specs are dropped", in: ";;a;,;b;", want: []string{"a", "b"}},
		{name: "escaped separators stay", in: `interface-name:a\,b;c\;d`, want: []string{"interface-name:a,b", "c;d"}},
		{name: "escaped whitespace is kept", in: `\sx\s;y`, want: []string{" x ", "y"}},
		{name: "other escapes keep the backslash", in: `a\qb`, want: []string{`a\qb`}},
		{name: "double backslash", in: `a\\;b`, want: []string{`a\`, "b"}},
		// NetworkManager's splitter cuts as many characters off the end as it saw unescaped
		// blanks, so inner blanks do not survive as written.
		{name: "an inner blank cuts the end", in: "interface-name: xy", want: []string{"interface-name: x"}},
		{name: "an escape resets the cut", in: `a b\sc`, want: []string{"a b c"}},
		{name: "trailing lone backslash is dropped", in: `a\`, want: []string{"a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := splitSpecs(tt.in); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("splitSpecs(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestJoinSpecsRoundTrip(t *testing.T) {
	for _, specs := range [][]string{
		{"interface-name:cali*", "interface-name:tunl*"},
		{"a,b", "c;d", `e\f`, " lead", "trail ", "tab\tin", "new\nline"},
	} {
		if got := splitSpecs(joinSpecs(specs)); !reflect.DeepEqual(got, specs) {
			t.Errorf("split(join(%q)) = %q", specs, got)
		}
	}
}

func TestParseSpec(t *testing.T) {
	tests := []struct {
		raw    string
		except bool
		kind   specKind
		match  string // a name the spec must match, if kindName/kindAll
		miss   string // a name it must not match
	}{
		{raw: "*", kind: kindAll, match: "anything"},
		{raw: "interface-name:cali*", kind: kindName, match: "cali123", miss: "xcali"},
		{raw: "INTERFACE-NAME:cali*", kind: kindName, match: "cali1"},
		{raw: "interface-name:~ca?i", kind: kindName, match: "cali", miss: "calli"},
		{raw: "interface-name:=cali*", kind: kindName, match: "cali*", miss: "cali1"},
		{raw: "eth0", kind: kindName, match: "eth0", miss: "eth01"},
		{raw: "eth*", kind: kindName, match: "eth*", miss: "eth0"},
		{raw: "except:interface-name:cali1", except: true, kind: kindName, match: "cali1"},
		{raw: "Except:*", except: true, kind: kindAll},
		{raw: "except:eth0", except: true, kind: kindNone},
		{raw: "type:veth", kind: kindOther},
		{raw: "mac:00:11:22:33:44:55", kind: kindOther},
		{raw: "except:driver:veth", except: true, kind: kindOther},
		{raw: "dhcp-plugin:internal", kind: kindOther},
		{raw: "s390-subchannels:0.0.1", kind: kindOther},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			s := parseSpec(tt.raw)
			if s.except != tt.except || s.kind != tt.kind {
				t.Fatalf("parseSpec(%q) = except %v kind %d, want except %v kind %d", tt.raw, s.except, s.kind, tt.except, tt.kind)
			}
			if tt.match != "" && !s.glob.matchName(tt.match) {
				t.Errorf("%q does not match %q", tt.raw, tt.match)
			}
			if tt.miss != "" && s.glob.matchName(tt.miss) {
				t.Errorf("%q matches %q", tt.raw, tt.miss)
			}
		})
	}
}

func TestGlobMatch(t *testing.T) {
	tests := []struct {
		pattern, name string
		want          bool
	}{
		{"cali*", "cali", true},
		{"cali*", "cali0a1b2c3d4e5", true},
		{"cali*", "calI0", false},
		{"tunl*", "tunl0", true},
		{"vxlan.calico", "vxlan.calico", true},
		{"vxlan.calico", "vxlanXcalico", false}, // '.' is not a wildcard
		{"wg-v6.cali", "wg-v6.cali", true},
		{"*", "", true},
		{"?", "", false},
		{"a*b*c", "axxbyyc", true},
		{"a*b*c", "axxbyy", false},
		{"[ab]", "[ab]", true}, // no ranges
		{"[ab]", "a", false},
		{"c?li*", "cali9", true},
	}
	for _, tt := range tests {
		if got := compileGlob(tt.pattern, false).matchName(tt.name); got != tt.want {
			t.Errorf("glob %q on %q = %v, want %v", tt.pattern, tt.name, got, tt.want)
		}
	}
}

func TestIncludesAndIntersects(t *testing.T) {
	g := func(p string) glob { return compileGlob(p, false) }
	inc := []struct {
		p    string
		by   []string
		want bool
	}{
		{"cali*", []string{"cali*"}, true},
		{"cali*", []string{"ca*"}, true},
		{"cali*", []string{"*"}, true},
		{"cali*", []string{"cali?*"}, false}, // "cali" itself is left out
		// Covered only by several globs together, or by a glob that is not "literal*": not
		// proven, so calico-prep writes its own drop-in (which appends: always safe).
		{"cali*", []string{"cali", "cali?*"}, false},
		{"cali*", []string{"*a*"}, false},
		{"cali*", []string{"*i*"}, false},
		{"cali*", []string{"cali?"}, false},
		{"cali*", []string{"tunl*"}, false},
		{"tunl*", []string{"tun*", "x"}, true},
		{"vxlan.calico", []string{"vxlan.calico"}, true},
		{"vxlan.calico", []string{"vxlan*"}, true},
		{"vxlan.calico", []string{"vxlan?calico"}, true},
		{"c*", []string{"*i*"}, false},
		{"wg-v6.cali", []string{"wg-*"}, true},
		{"wireguard.cali", []string{"wire?uard.cali"}, true},
		{"cali*", nil, false},
	}
	for _, tt := range inc {
		var by []glob
		for _, b := range tt.by {
			by = append(by, g(b))
		}
		if got := includes(g(tt.p), by); got != tt.want {
			t.Errorf("includes(%q, %q) = %v, want %v", tt.p, tt.by, got, tt.want)
		}
	}
	inter := []struct {
		a, b string
		want bool
	}{
		{"cali*", "cali1*", true},
		{"cali*", "*1", true},
		{"cali*", "tunl*", false},
		{"cali*", "c?l", false},
		{"vxlan.calico", "vxlan.calic?", true},
		{"vxlan.calico", "vxlan.calicoX", false},
		{"*", "?", true},
	}
	for _, tt := range inter {
		if got := intersects(g(tt.a), g(tt.b)); got != tt.want {
			t.Errorf("intersects(%q, %q) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
		if got := intersects(g(tt.b), g(tt.a)); got != tt.want {
			t.Errorf("intersects(%q, %q) = %v, want %v", tt.b, tt.a, got, tt.want)
		}
	}
}

// TestGlobAlgebraAgainstBruteForce checks matchName exactly, and includes and intersects for
// soundness, against every name up to six characters over a small alphabet, for every pattern
// of up to three symbols over {a, b, *, ?}: includes may only say yes where every name of the
// first is a name of the second, and intersects may only say no where no name is shared.
// Counterexamples for such short patterns are shorter than six characters.
func TestGlobAlgebraAgainstBruteForce(t *testing.T) {
	var patterns []string
	var gen func(prefix string, n int)
	gen = func(prefix string, n int) {
		if prefix != "" {
			patterns = append(patterns, prefix)
		}
		if n == 0 {
			return
		}
		for _, c := range []string{"a", "b", "*", "?"} {
			gen(prefix+c, n-1)
		}
	}
	gen("", 3)
	var names []string
	var genName func(prefix string, n int)
	genName = func(prefix string, n int) {
		if prefix != "" {
			names = append(names, prefix)
		}
		if n == 0 {
			return
		}
		for _, c := range []string{"a", "b", "c"} {
			genName(prefix+c, n-1)
		}
	}
	genName("", 6)
	matches := func(p string) []bool {
		m := make([]bool, len(names))
		for i, n := range names {
			m[i] = refMatch(p, n)
		}
		return m
	}
	globs := make([]glob, len(patterns))
	sets := make([][]bool, len(patterns))
	for i, p := range patterns {
		globs[i] = compileGlob(p, false)
		// Exact-text matches only differ for names with wildcards, which this alphabet lacks.
		globs[i].text = ""
		sets[i] = matches(p)
	}
	for i := range patterns {
		for k, n := range names {
			if got := globs[i].matchName(n); got != sets[i][k] {
				t.Fatalf("glob %q on %q = %v, reference says %v", patterns[i], n, got, sets[i][k])
			}
		}
		for j := range patterns {
			wantInc, wantInter := true, false
			for k := range names {
				if sets[i][k] && !sets[j][k] {
					wantInc = false
				}
				if sets[i][k] && sets[j][k] {
					wantInter = true
				}
			}
			if got := includes(globs[i], []glob{globs[j]}); got && !wantInc {
				t.Errorf("includes(%q, %q) = true, brute force says false", patterns[i], patterns[j])
			}
			if got := intersects(globs[i], globs[j]); !got && wantInter {
				t.Errorf("intersects(%q, %q) = false, brute force says true", patterns[i], patterns[j])
			}
		}
	}
}

func TestMatchSpecs(t *testing.T) {
	parse := func(v string) []deviceSpec {
		var out []deviceSpec
		for _, s := range splitSpecs(v) {
			out = append(out, parseSpec(s))
		}
		return out
	}
	tests := []struct {
		specs, name string
		want, known bool
	}{
		{"interface-name:cali*", "cali1", true, true},
		{"interface-name:cali*", "eth0", false, true},
		{"interface-name:cali*,except:interface-name:cali1", "cali1", false, true},
		{"except:interface-name:eth0", "cali1", true, true},
		{"except:interface-name:eth0", "eth0", false, true},
		{"*,except:interface-name:ens33", "tunl0", true, true},
		{"type:veth", "cali1", false, false},
		{"except:eth0", "cali1", true, true}, // the untagged except never matches
		{"", "cali1", false, true},
	}
	for _, tt := range tests {
		got, known := matchSpecs(parse(tt.specs), tt.name)
		if got != tt.want || known != tt.known {
			t.Errorf("matchSpecs(%q, %q) = %v known %v, want %v known %v", tt.specs, tt.name, got, known, tt.want, tt.known)
		}
	}
}

func TestCover(t *testing.T) {
	parse := func(v string) []deviceSpec {
		var out []deviceSpec
		for _, s := range splitSpecs(v) {
			out = append(out, parseSpec(s))
		}
		return out
	}
	tests := []struct {
		name, specs, pattern string
		covered              bool
		excludedBy, doubtful string
	}{
		{name: "own spec", specs: "interface-name:cali*", pattern: "cali*", covered: true},
		{name: "everything", specs: "*", pattern: "tunl*", covered: true},
		{name: "only excepts, unrelated", specs: "except:interface-name:ens33", pattern: "cali*", covered: true},
		{name: "except hits", specs: "interface-name:cali*;except:interface-name:cali0*", pattern: "cali*", excludedBy: "except:interface-name:cali0*"},
		{name: "except all", specs: "interface-name:cali*;except:*", pattern: "cali*", excludedBy: "except:*"},
		{name: "type does not prove", specs: "type:veth", pattern: "cali*"},
		{name: "doubtful except", specs: "interface-name:cali*;except:type:veth", pattern: "cali*", covered: true, doubtful: "except:type:veth"},
		{name: "nothing", specs: "", pattern: "cali*"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := cover(compileGlob(tt.pattern, false), parse(tt.specs))
			if c.covered != tt.covered {
				t.Fatalf("covered = %v, want %v", c.covered, tt.covered)
			}
			got := ""
			if c.excludedBy != nil {
				got = c.excludedBy.raw
			}
			if got != tt.excludedBy {
				t.Errorf("excludedBy = %q, want %q", got, tt.excludedBy)
			}
			var doubtful []string
			for _, d := range c.doubtful {
				doubtful = append(doubtful, d.raw)
			}
			if strings.Join(doubtful, ",") != tt.doubtful {
				t.Errorf("doubtful = %q, want %q", doubtful, tt.doubtful)
			}
		})
	}
}

// refMatch is a plain recursive glob matcher, independent of the automaton under test.
func refMatch(p, s string) bool {
	if p == "" {
		return s == ""
	}
	switch p[0] {
	case '*':
		return refMatch(p[1:], s) || s != "" && refMatch(p, s[1:])
	case '?':
		return s != "" && refMatch(p[1:], s[1:])
	}
	return s != "" && s[0] == p[0] && refMatch(p[1:], s[1:])
}
