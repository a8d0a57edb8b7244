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
	st := newStates([]glob{g})
	cur := st.start()
	for _, r := range name {
		cur = st.step(cur, r)
		if cur.empty() {
			return false
		}
	}
	return st.accepts(cur)
}

// states is the NFA of one or more globs side by side (their union), positions numbered
// consecutively; a state set is a bitset over all positions.
type states struct {
	globs []glob
	base  []int // first position of each glob; glob i has len(toks)+1 positions
	n     int
}

type stateSet []uint64

func (s stateSet) empty() bool {
	for _, w := range s {
		if w != 0 {
			return false
		}
	}
	return true
}

func (s stateSet) has(i int) bool { return s[i/64]&(1<<(i%64)) != 0 }
func (s stateSet) add(i int)      { s[i/64] |= 1 << (i % 64) }
func (s stateSet) key() string {
	b := make([]byte, 0, len(s)*8)
	for _, w := range s {
		for k := range 8 {
			b = append(b, byte(w>>(8*k)))
		}
	}
	return string(b)
}

func newStates(globs []glob) *states {
	st := &states{globs: globs, base: make([]int, len(globs))}
	for i, g := range globs {
		st.base[i] = st.n
		st.n += len(g.toks) + 1
	}
	return st
}

func (st *states) newSet() stateSet { return make(stateSet, (st.n+63)/64) }

// addClosed adds position p of glob gi and every position reachable by letting '*' match nothing.
func (st *states) addClosed(s stateSet, gi, p int) {
	toks := st.globs[gi].toks
	for {
		s.add(st.base[gi] + p)
		if p < len(toks) && toks[p].kind == '*' {
			p++
			continue
		}
		return
	}
}

func (st *states) start() stateSet {
	s := st.newSet()
	for gi := range st.globs {
		st.addClosed(s, gi, 0)
	}
	return s
}

func (st *states) step(s stateSet, r rune) stateSet {
	next := st.newSet()
	for gi, g := range st.globs {
		for p, t := range g.toks {
			if !s.has(st.base[gi] + p) {
				continue
			}
			switch {
			case t.kind == '*':
				st.addClosed(next, gi, p)
			case t.kind == '?' || t.r == r:
				st.addClosed(next, gi, p+1)
			}
		}
	}
	return next
}

func (st *states) accepts(s stateSet) bool {
	for gi, g := range st.globs {
		if s.has(st.base[gi] + len(g.toks)) {
			return true
		}
	}
	return false
}

// maxPairs and maxWork bound the search over pairs of state sets (maxWork counts positions
// stepped). Questions that need more are left open: "not covered" for includes, which errs on
// the side of writing calico-prep's own drop-in, and "maybe" for intersects.
const (
	maxPairs = 20000
	maxWork  = 4_000_000
)

// alphabet returns every character the globs name plus one they do not: characters that no
// glob names all behave alike, so one of them stands for the rest.
func alphabet(gs ...[]glob) []rune {
	var rs []rune
	for _, list := range gs {
		for _, g := range list {
			for _, t := range g.toks {
				if t.kind == 'c' {
					rs = append(rs, t.r)
				}
			}
		}
	}
	slices.Sort(rs)
	rs = slices.Compact(rs)
	other := rune(0xE000)
	for slices.Contains(rs, other) {
		other++
	}
	return append(rs, other)
}

// explore walks every non-empty name of at most maxIfname characters that a can produce,
// together with the states b is in after the same name, and stops when visit returns true.
// It reports whether visit stopped it, and whether the walk finished within its bounds.
func explore(a, b []glob, visit func(aAcc, bAcc bool) bool) (stopped, complete bool) {
	sa, sb := newStates(a), newStates(b)
	sigma := alphabet(a, b)
	type pair struct{ x, y stateSet }
	seen := map[string]bool{}
	frontier := []pair{{sa.start(), sb.start()}}
	work := 0
	for depth := 1; depth <= maxIfname && len(frontier) > 0; depth++ {
		var next []pair
		for _, p := range frontier {
			for _, r := range sigma {
				if work += sa.n + sb.n; work > maxWork {
					return false, false
				}
				x := sa.step(p.x, r)
				if x.empty() {
					continue
				}
				y := sb.step(p.y, r)
				k := x.key() + "|" + y.key()
				if seen[k] {
					continue
				}
				seen[k] = true
				if len(seen) > maxPairs {
					return false, false
				}
				if visit(sa.accepts(x), sb.accepts(y)) {
					return true, true
				}
				next = append(next, pair{x, y})
			}
		}
		frontier = next
	}
	return false, true
}

// includes reports whether every interface name p matches is matched by one of the globs.
// The exact-text alternative of p only adds names with '*' or '?' in them; those are checked
// separately.
func includes(p glob, by []glob) bool {
	if len(by) == 0 {
		return false
	}
	if p.text != "" && !slices.ContainsFunc(by, func(g glob) bool { return g.matchName(p.text) }) {
		return false
	}
	// The walk ignores the exact-text alternatives of by: they only add names containing
	// '*' or '?', so leaving them out can only answer "not proven", never a wrong "yes".
	stopped, complete := explore([]glob{{toks: p.toks}}, tokensOnly(by), func(pAcc, byAcc bool) bool {
		return pAcc && !byAcc
	})
	return !stopped && complete
}

// intersects reports whether some interface name is matched by both globs.
func intersects(a, b glob) bool {
	if a.text != "" && b.matchName(a.text) || b.text != "" && a.matchName(b.text) {
		return true
	}
	stopped, complete := explore([]glob{{toks: a.toks}}, []glob{{toks: b.toks}}, func(aAcc, bAcc bool) bool {
		return aAcc && bAcc
	})
	// An unfinished walk answers "maybe": for a conflict that is the careful side.
	return stopped || !complete
}

func tokensOnly(gs []glob) []glob {
	out := make([]glob, len(gs))
	for i, g := range gs {
		out[i] = glob{toks: g.toks}
	}
	return out
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
