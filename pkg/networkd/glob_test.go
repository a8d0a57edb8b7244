package networkd

import (
	"path"
	"strings"
	"testing"
)

// fnmatch is the reference: path.Match with fnmatch's '!' class negation; interface names
// hold no '/', so path.Match's special '/' does not matter.
func fnmatch(pattern, name string) bool {
	ok, err := path.Match(strings.ReplaceAll(pattern, "[!", "[^"), name)
	return err == nil && ok
}

// TestGlobAgainstBruteForce compares match, someWithPrefix and allWithPrefix with path.Match
// over every name of up to four characters from a small alphabet.
func TestGlobAgainstBruteForce(t *testing.T) {
	alphabet := "ab.0*"
	var names []string
	var grow func(string)
	grow = func(s string) {
		names = append(names, s)
		if len(s) < 4 {
			for _, c := range alphabet {
				grow(s + string(c))
			}
		}
	}
	grow("")
	patterns := []string{"*", "a*", "ab", "a?", "*b", "a*b", "[ab]*", "[!a]*", "[^a.]?", "a[0-9]*", "*.*", "?", "??*", `a\*`, "[a-b]b*", "b*a*"}
	prefixes := []string{"", "a", "ab", "b.", "a0"}
	for _, p := range patterns {
		g := compileGlob(p)
		for _, n := range names {
			if got, want := g.match(n), fnmatch(p, n); got != want {
				t.Errorf("match(%q, %q) = %v, want %v", p, n, got, want)
			}
		}
		for _, pre := range prefixes {
			some, all := false, true
			for _, n := range names {
				if !strings.HasPrefix(n, pre) || len(n) > len(pre)+2 {
					continue
				}
				m := fnmatch(p, n)
				some = some || m
				all = all && m
			}
			if got := g.someWithPrefix(pre); got != some {
				t.Errorf("someWithPrefix(%q, %q) = %v, want %v", p, pre, got, some)
			}
			// allWithPrefix may say false for a glob that happens to cover the short names
			// tried here; it must never say true for one that misses a name.
			if g.allWithPrefix(pre) && !all {
				t.Errorf("allWithPrefix(%q, %q) = true, but a name with that prefix does not match", p, pre)
			}
		}
	}
}
