package networkd

import "strings"

// glob is a shell-style pattern as networkd matches them (fnmatch(3) without flags): '*' any
// run of characters, '?' one character, '[...]' a class ('!' or '^' negates, ranges with '-'),
// '\' quotes the next character. Interface names hold no '/', so no flag matters.
type glob []gtok

type gtok struct {
	kind  byte // 'l' literal, '?' any one, '*' any run, '[' class
	ch    byte
	set   [256]bool // for '['
	valid bool      // false for a malformed class: then fnmatch matches the '[' literally
}

func compileGlob(p string) glob {
	var g glob
	for i := 0; i < len(p); i++ {
		switch c := p[i]; c {
		case '*':
			if len(g) == 0 || g[len(g)-1].kind != '*' {
				g = append(g, gtok{kind: '*'})
			}
		case '?':
			g = append(g, gtok{kind: '?'})
		case '\\':
			if i+1 < len(p) {
				i++
			}
			g = append(g, gtok{kind: 'l', ch: p[i]})
		case '[':
			t, n := compileClass(p[i:])
			if n == 0 {
				g = append(g, gtok{kind: 'l', ch: '['})
				continue
			}
			g = append(g, t)
			i += n - 1
		default:
			g = append(g, gtok{kind: 'l', ch: c})
		}
	}
	return g
}

// compileClass reads "[...]" at the start of s and returns it with its length, or length 0 when
// it is not closed.
func compileClass(s string) (gtok, int) {
	t := gtok{kind: '['}
	i := 1
	negate := false
	if i < len(s) && (s[i] == '!' || s[i] == '^') {
		negate = true
		i++
	}
	first := true
	for ; i < len(s); i++ {
		c := s[i]
		if c == ']' && !first {
			if negate {
				for b := range t.set {
					t.set[b] = !t.set[b]
				}
			}
			t.valid = true
			return t, i + 1
		}
		first = false
		if c == '\\' && i+1 < len(s) {
			i++
			c = s[i]
		}
		if i+2 < len(s) && s[i+1] == '-' && s[i+2] != ']' {
			hi := s[i+2]
			for b := int(c); b <= int(hi); b++ {
				t.set[b] = true
			}
			i += 2
			continue
		}
		t.set[c] = true
	}
	return gtok{}, 0
}

func (t gtok) accepts(c byte) bool {
	switch t.kind {
	case 'l':
		return t.ch == c
	case '?':
		return true
	case '[':
		return t.set[c]
	}
	return false
}

// positions is the set of positions in a glob the input so far can have reached.
type positions []bool

func (g glob) start() positions {
	s := make(positions, len(g)+1)
	s[0] = true
	return g.closure(s)
}

// closure adds the positions after each '*', which matches the empty run.
func (g glob) closure(s positions) positions {
	for i := 0; i < len(g); i++ {
		if s[i] && g[i].kind == '*' {
			s[i+1] = true
		}
	}
	return s
}

func (g glob) step(s positions, c byte) positions {
	next := make(positions, len(g)+1)
	for i, on := range s {
		if !on || i == len(g) {
			continue
		}
		switch {
		case g[i].kind == '*':
			next[i] = true
		case g[i].accepts(c):
			next[i+1] = true
		}
	}
	return g.closure(next)
}

func (g glob) run(prefix string) positions {
	s := g.start()
	for i := 0; i < len(prefix); i++ {
		s = g.step(s, prefix[i])
	}
	return s
}

// match reports whether g matches name exactly.
func (g glob) match(name string) bool { return g.run(name)[len(g)] }

// someWithPrefix reports whether g matches at least one name that begins with prefix.
func (g glob) someWithPrefix(prefix string) bool {
	for i, on := range g.run(prefix) {
		if on && g.satisfiable(i) {
			return true
		}
	}
	return false
}

// satisfiable reports whether the rest of g from position i matches some string.
func (g glob) satisfiable(i int) bool {
	for _, t := range g[i:] {
		if t.kind == '[' && t.set == [256]bool{} {
			return false
		}
	}
	return true
}

// allWithPrefix reports whether g matches every name that begins with prefix: after the prefix,
// only a '*' may be left.
func (g glob) allWithPrefix(prefix string) bool {
	for i, on := range g.run(prefix) {
		if on && i == len(g)-1 && g[i].kind == '*' {
			return true
		}
	}
	return false
}

// nameSet is the set of interface names one of Calico's globs stands for: a fixed name, or
// every name with a prefix.
type nameSet struct {
	prefix string
	open   bool // true: every name beginning with prefix ("cali*"); false: prefix only
}

func nameSetOf(calicoGlob string) nameSet {
	if p, ok := strings.CutSuffix(calicoGlob, "*"); ok {
		return nameSet{prefix: p, open: true}
	}
	return nameSet{prefix: calicoGlob}
}

// some reports whether g matches at least one name of the set.
func (n nameSet) some(g glob) bool {
	if n.open {
		return g.someWithPrefix(n.prefix)
	}
	return g.match(n.prefix)
}

// all reports whether g matches every name of the set.
func (n nameSet) all(g glob) bool {
	if n.open {
		return g.allWithPrefix(n.prefix)
	}
	return g.match(n.prefix)
}
