package networkmanager

import (
	"slices"
	"strings"
)

// This file models NetworkManager's device specs ("Device List Format" in NetworkManager.conf(5)):
// how a value is split into specs, what each spec matches, and whether a list of specs matches
// every interface name a glob can produce. It reads no files and talks to nobody.

// maxIfname is the longest interface name the kernel accepts (IFNAMSIZ less the NUL); names
// beyond it cannot exist, so questions about "every name" stop there.
const maxIfname = 15

// splitSpecs splits a raw keyfile value into specs the way NetworkManager's
// nm_match_spec_split does: ',' and ';' separate, a backslash escapes a separator or writes
// \s, \t, \n, \r or \\, blanks around each spec are trimmed, empty specs are dropped. Other
// backslash pairs stay as they are.
func splitSpecs(value string) []string {
	var out []string
	var cur []byte
	trailing := 0 // unescaped whitespace at the end of cur, trimmed if the spec ends here
	i := 0
	for i < len(value) && isSpace(value[i]) {
		i++
	}
	flush := func() {
		if n := len(cur) - trailing; n > 0 {
			out = append(out, string(cur[:n]))
		}
		cur, trailing = cur[:0], 0
	}
	for i < len(value) {
		switch ch := value[i]; ch {
		case '\\':
			i++
			if i == len(value) {
				// A lone trailing backslash is dropped.
				continue
			}
			switch e := value[i]; e {
			case 's':
				cur = append(cur, ' ')
			case 'n':
				cur = append(cur, '\n')
			case 't':
				cur = append(cur, '\t')
			case 'r':
				cur = append(cur, '\r')
			case '\\':
				cur = append(cur, '\\')
			case ',', ';':
				cur = append(cur, e)
			default:
				cur = append(cur, '\\', e)
			}
			i++
			trailing = 0
		case ',', ';':
			flush()
			i++
			for i < len(value) && isSpace(value[i]) {
				i++
			}
		default:
			// NetworkManager counts unescaped blanks since the last escape or separator and
			// cuts that many characters off the end of the spec, whether or not they are
			// blanks: "a b" becomes "a ". Only an escape resets the count.
			cur = append(cur, ch)
			if isSpace(ch) {
				trailing++
			}
			i++
		}
	}
	flush()
	return out
}

// isSpace is g_ascii_isspace.
func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}

// joinSpecs writes specs as one value that splitSpecs reads back unchanged (unless a spec
// holds a form feed or vertical tab).
func joinSpecs(specs []string) string {
	var b strings.Builder
	for _, s := range specs {
		if s == "" {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(';')
		}
		for i := 0; i < len(s); i++ {
			switch c := s[i]; c {
			case '\\', ',', ';':
				b.WriteByte('\\')
				b.WriteByte(c)
			case '\n':
				b.WriteString(`\n`)
			case '\r':
				b.WriteString(`\r`)
			case '\t':
				b.WriteString(`\t`)
			case ' ':
				// Every blank escaped: unescaped ones cut characters off the spec. Form feed
				// and vertical tab have no escape; specs holding them cannot be written.
				b.WriteString(`\s`)
			default:
				b.WriteByte(c)
			}
		}
	}
	return b.String()
}

// specKind is what a spec matches on.
type specKind int

const (
	// kindNone never matches: an untagged name or address under except:, which
	// NetworkManager only accepts qualified.
	kindNone specKind = iota
	// kindAll is "*".
	kindAll
	// kindName matches interface names (interface-name:GLOB, interface-name:=NAME, or an
	// untagged NAME).
	kindName
	// kindOther matches something this package cannot see from a name: mac:, type:,
	// driver:, s390-subchannels:, dhcp-plugin:. An untagged value that is not an
	// except: may also be a MAC address; it is treated as the interface name it also is.
	kindOther
)

// deviceSpec is one parsed spec.
type deviceSpec struct {
	raw    string
	except bool
	kind   specKind
	glob   glob // for kindName and kindAll
}

// Tags NetworkManager recognises, compared case-insensitively like NetworkManager does.
const (
	tagExcept        = "except:"
	tagInterfaceName = "interface-name:"
)

var otherTags = []string{"type:", "mac:", "driver:", "s390-subchannels:", "dhcp-plugin:"}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// parseSpec classifies one spec in the order NetworkManager evaluates it.
func parseSpec(raw string) deviceSpec {
	s := deviceSpec{raw: raw}
	rest := raw
	if hasPrefixFold(rest, tagExcept) {
		s.except = true
		rest = rest[len(tagExcept):]
	}
	if rest == "*" {
		s.kind, s.glob = kindAll, compileGlob("*", false)
		return s
	}
	for _, t := range otherTags {
		if hasPrefixFold(rest, t) {
			s.kind = kindOther
			return s
		}
	}
	if hasPrefixFold(rest, tagInterfaceName) {
		name := rest[len(tagInterfaceName):]
		literal := false
		switch {
		case strings.HasPrefix(name, "="):
			name, literal = name[1:], true
		case strings.HasPrefix(name, "~"):
			name = name[1:]
		}
		s.kind, s.glob = kindName, compileGlob(name, literal)
		return s
	}
	if s.except {
		return s // kindNone
	}
	s.kind, s.glob = kindName, compileGlob(rest, true)
	return s
}

// A glob is a name pattern as GLib's g_pattern_match_simple reads it: '*' is any run of
// characters, '?' one character, everything else itself; there is no escaping and no ranges.
// NetworkManager also accepts a glob's own text as an exact match, which only differs from
// the glob for names that contain '*' or '?' themselves.
type glob struct {
	toks []tok
	text string // the exact-match alternative; empty for literal globs
}

type tok struct {
	kind byte // 'c' one given character, '?' any character, '*' any run
	r    rune
}

func compileGlob(p string, literal bool) glob {
	g := glob{toks: make([]tok, 0, len(p))}
	for _, r := range p {
		switch {
		case literal || r != '*' && r != '?':
			g.toks = append(g.toks, tok{kind: 'c', r: r})
		case r == '*':
			if n := len(g.toks); n > 0 && g.toks[n-1].kind == '*' {
				continue // "**" is "*"
			}
			g.toks = append(g.toks, tok{kind: '*'})
		default:
			g.toks = append(g.toks, tok{kind: '?'})
		}
	}
	if !literal && strings.ContainsAny(p, "*?") {
		g.text = p
	}
	return g
}

// matchName reports whether the glob matches the interface name.
func (g glob) matchName(name string) bool {
	if g.text != "" && g.text == name {
		return true
	}
	return matchToks(g.toks, []rune(name))
}

// matchToks is the classic wildcard match: on a mismatch, let the last '*' take one more
// character and try again from there.
func matchToks(toks []tok, name []rune) bool {
	t, n := 0, 0
	star, starN := -1, 0
	for n < len(name) {
		switch {
		case t < len(toks) && toks[t].kind == '*':
			star, starN = t, n
			t++
		case t < len(toks) && (toks[t].kind == '?' || toks[t].r == name[n]):
			t++
			n++
		case star >= 0:
			t, starN = star+1, starN+1
			n = starN
		default:
			return false
		}
	}
	for t < len(toks) && toks[t].kind == '*' {
		t++
	}
	return t == len(toks)
}

// shape is what can be read off a glob without enumerating names: the characters every
// match starts and ends with, and the range of lengths.
type shape struct {
	prefix, suffix []rune
	minLen, maxLen int // maxLen -1: unbounded
}

func (g glob) shape() shape {
	var sh shape
	star := false
	for _, t := range g.toks {
		if t.kind == '*' {
			star = true
			continue
		}
		sh.minLen++
	}
	sh.maxLen = sh.minLen
	if star {
		sh.maxLen = -1
	}
	for _, t := range g.toks {
		if t.kind != 'c' {
			break
		}
		sh.prefix = append(sh.prefix, t.r)
	}
	for i := len(g.toks) - 1; i >= 0 && g.toks[i].kind == 'c'; i-- {
		sh.suffix = append([]rune{g.toks[i].r}, sh.suffix...)
	}
	return sh
}

// literal reports whether the glob matches exactly one name.
func (g glob) literal() (string, bool) {
	var b []rune
	for _, t := range g.toks {
		if t.kind != 'c' {
			return "", false
		}
		b = append(b, t.r)
	}
	return string(b), true
}

// includes reports whether every interface name p matches is, provably, matched by one of the
// globs. It only proves the simple cases that occur in practice — p is one name that a glob
// matches, or a glob is a run of literal characters then '*' (or just '*') that p's own literal
// start begins with. Anything else answers false, and the caller then writes calico-prep's own
// drop-in, which appends and so is always safe.
func includes(p glob, by []glob) bool {
	if p.text != "" && !slices.ContainsFunc(by, func(g glob) bool { return g.matchName(p.text) }) {
		return false
	}
	if name, ok := p.literal(); ok {
		return slices.ContainsFunc(by, func(g glob) bool { return g.matchName(name) })
	}
	start := p.shape().prefix
	for _, g := range by {
		n := len(g.toks)
		if n == 0 || g.toks[n-1].kind != '*' {
			continue
		}
		head, ok := glob{toks: g.toks[:n-1]}.literal()
		if ok && strings.HasPrefix(string(start), head) {
			return true
		}
	}
	return false
}

// intersects reports whether some interface name may be matched by both globs. It answers
// false only when the globs provably share no name — their literal starts or ends disagree,
// their lengths cannot meet, or one is a single name the other does not match — so an
// except: spec that might take a Calico device out is never missed.
func intersects(a, b glob) bool {
	if a.text != "" && b.matchName(a.text) || b.text != "" && a.matchName(b.text) {
		return true
	}
	if name, ok := a.literal(); ok {
		return b.matchName(name)
	}
	if name, ok := b.literal(); ok {
		return a.matchName(name)
	}
	sa, sb := a.shape(), b.shape()
	agree := func(x, y []rune, fromEnd bool) bool {
		n := min(len(x), len(y))
		for i := range n {
			xi, yi := i, i
			if fromEnd {
				xi, yi = len(x)-1-i, len(y)-1-i
			}
			if x[xi] != y[yi] {
				return false
			}
		}
		return true
	}
	lengthsMeet := (sa.maxLen < 0 || sa.maxLen >= sb.minLen) && (sb.maxLen < 0 || sb.maxLen >= sa.minLen) &&
		sa.minLen <= maxIfname && sb.minLen <= maxIfname
	return agree(sa.prefix, sb.prefix, false) && agree(sa.suffix, sb.suffix, true) && lengthsMeet
}

// matchSpecs evaluates specs against an interface name the way NetworkManager evaluates
// keyfile.unmanaged-devices for a device, for specs that depend on the name only. known is
// false when a spec of another kind (mac:, type:, …) could change the answer.
func matchSpecs(specs []deviceSpec, name string) (match, known bool) {
	known = true
	var hasExcept, hasPositive, matched, exceptMatched bool
	for _, s := range specs {
		if s.except {
			hasExcept = true
		} else {
			hasPositive = true
		}
		switch s.kind {
		case kindNone:
			continue
		case kindOther:
			known = false
			continue
		}
		if s.glob.matchName(name) {
			if s.except {
				exceptMatched = true
			} else {
				matched = true
			}
		}
	}
	switch {
	case exceptMatched:
		return false, known
	case hasExcept && !hasPositive:
		return true, known
	}
	return matched, known
}

// coverage is how a list of specs treats every name a Calico pattern matches.
type coverage struct {
	covered bool
	// excludedBy is the except: spec that takes names of the pattern out of the list.
	excludedBy *deviceSpec
	// doubtful are except: specs of kinds that cannot be judged from a name.
	doubtful []deviceSpec
}

// cover reports whether every name the pattern matches is matched by specs. Positive specs
// that are not about names (type:veth) never count: they cannot be shown to hold for every
// Calico device.
func cover(pattern glob, specs []deviceSpec) coverage {
	var c coverage
	var positives []glob
	hasPositive := false
	for i, s := range specs {
		if !s.except {
			hasPositive = true
			if s.kind == kindName || s.kind == kindAll {
				positives = append(positives, s.glob)
			}
			continue
		}
		switch s.kind {
		case kindOther:
			c.doubtful = append(c.doubtful, s)
		case kindAll, kindName:
			if c.excludedBy == nil && intersects(pattern, s.glob) {
				c.excludedBy = &specs[i]
			}
		}
	}
	switch {
	case c.excludedBy != nil:
	case !hasPositive:
		// A list of only except: specs matches everything it does not except.
		c.covered = len(specs) > 0
	default:
		c.covered = includes(pattern, positives)
	}
	return c
}
