package networkmanager

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// This file reads NetworkManager's configuration files the way NetworkManager merges them and
// answers one question: which interface names end up in keyfile.unmanaged-devices, and which
// file is responsible when a Calico pattern does not.

// Keys that feed keyfile.unmanaged-devices. NetworkManager appends with "key+=" and removes
// with "key-=" for device-spec keys; every other spelling ("key +=") is a different key it ignores.
const (
	groupKeyfile    = "keyfile"
	groupConfig     = "config"
	keyUnmanaged    = "unmanaged-devices"
	keyConfigEnable = "enable"
)

// specOp is one assignment to keyfile.unmanaged-devices in a file.
type specOp struct {
	op    byte // '=' replaces, '+' appends, '-' removes
	value string
	line  int
}

// confFile is what one file contributes.
type confFile struct {
	path string
	// disabled is set by "[config] enable=false": NetworkManager skips the whole file.
	disabled bool
	ops      []specOp
}

// parseConf reads one file as GLib's key file parser does, keeping what bears on
// keyfile.unmanaged-devices. NetworkManager refuses its whole configuration when any file
// does not parse, so errors say where and what.
func parseConf(path string, data []byte) (confFile, error) {
	f := confFile{path: path}
	type kv struct {
		key  string
		line int
	}
	var order []kv              // keyfile keys in file order, repeats included
	last := map[string]string{} // group "\x00" key → its last value
	lineOf := map[string]int{}  // same key → line of that last value
	group := ""
	for n, line := range bytes.Split(data, []byte("\n")) {
		lineNo := n + 1
		s := strings.TrimSuffix(string(line), "\r")
		s = strings.TrimLeft(s, " \t\n\r\f\v")
		switch {
		case s == "" || s[0] == '#':
			continue
		case s[0] == '[':
			name, ok := parseGroup(s)
			if !ok {
				return f, fmt.Errorf("parse %q line %d: invalid group %q", path, lineNo, s)
			}
			group = name
			continue
		}
		eq := strings.IndexByte(s, '=')
		if eq < 0 {
			return f, fmt.Errorf("parse %q line %d: %q is not a group, key=value pair or comment", path, lineNo, s)
		}
		if group == "" {
			return f, fmt.Errorf("parse %q line %d: %q comes before the first [group]", path, lineNo, s)
		}
		key := strings.TrimRight(s[:eq], " \t\n\r\f\v")
		if !validKey(key) {
			return f, fmt.Errorf("parse %q line %d: invalid key %q", path, lineNo, key)
		}
		value := strings.TrimLeft(s[eq+1:], " \t")
		id := group + "\x00" + key
		last[id], lineOf[id] = value, lineNo
		if group == groupKeyfile {
			order = append(order, kv{key, lineNo})
		}
	}
	if v, ok := last[groupConfig+"\x00"+keyConfigEnable]; ok {
		// A value that is not a boolean is a match on NetworkManager's version or environment;
		// such a file is taken as enabled.
		if b, isBool := parseNMBool(v); isBool && !b {
			f.disabled = true
		}
	}
	for _, k := range order {
		var op byte
		switch k.key {
		case keyUnmanaged:
			op = '='
		case keyUnmanaged + "+":
			op = '+'
		case keyUnmanaged + "-":
			op = '-'
		default:
			continue
		}
		id := groupKeyfile + "\x00" + k.key
		// Every occurrence of a repeated key carries the key's last value, as GKeyFile returns it.
		f.ops = append(f.ops, specOp{op: op, value: last[id], line: lineOf[id]})
	}
	return f, nil
}

// parseGroup accepts "[name]" with optional blanks after the bracket; the name is not empty
// and holds no bracket or control character.
func parseGroup(s string) (string, bool) {
	end := strings.IndexByte(s, ']')
	if end < 0 || strings.Trim(s[end+1:], " \t") != "" {
		return "", false
	}
	name := s[1:end]
	if name == "" || strings.ContainsAny(name, "[]") {
		return "", false
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return "", false
		}
	}
	return name, true
}

// validKey accepts what GKeyFile does for this purpose: not empty, no control characters,
// and a locale suffix only as a final "[...]".
func validKey(k string) bool {
	if k == "" {
		return false
	}
	for _, r := range k {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	if i := strings.IndexByte(k, '['); i >= 0 {
		return i > 0 && strings.HasSuffix(k, "]") && !strings.ContainsAny(k[i+1:len(k)-1], "[]")
	}
	return !strings.Contains(k, "]")
}

// parseNMBool reads a boolean as NetworkManager does.
func parseNMBool(v string) (value, ok bool) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "1", "yes", "true", "on", "y":
		return true, true
	case "0", "no", "false", "off", "n":
		return false, true
	}
	return false, false
}

// layout is where NetworkManager reads its configuration, in its order: the system
// directories (/usr/lib/NetworkManager/conf.d, then /run/NetworkManager/conf.d), whose files
// are hidden by files of the same name in a later directory; the main file; the conf.d
// directory calico-prep writes to. Only names ending in ".conf" count, sorted bytewise.
type layout struct {
	systemDirs []string
	mainFile   string
	confDir    string
}

// order returns the files NetworkManager reads, in order, with calico-prep's file placed
// where NetworkManager would read it whether or not it exists yet.
func (l layout) order() ([]string, error) {
	inConf, err := confNames(l.confDir, true)
	if err != nil {
		return nil, err
	}
	if !slices.Contains(inConf, ownFile) {
		inConf = append(inConf, ownFile)
		slices.Sort(inConf)
	}
	later := map[string]bool{}
	for _, n := range inConf {
		later[n] = true
	}
	var sys [][]string
	for i := len(l.systemDirs) - 1; i >= 0; i-- {
		names, err := confNames(l.systemDirs[i], false)
		if err != nil {
			return nil, err
		}
		var kept []string
		for _, n := range names {
			if !later[n] {
				kept = append(kept, filepath.Join(l.systemDirs[i], n))
			}
		}
		for _, n := range names {
			later[n] = true
		}
		sys = append([][]string{kept}, sys...)
	}
	var out []string
	for _, s := range sys {
		out = append(out, s...)
	}
	if l.mainFile != "" {
		if st, err := os.Stat(l.mainFile); err == nil && st.Mode().IsRegular() {
			out = append(out, l.mainFile)
		}
	}
	for _, n := range inConf {
		out = append(out, filepath.Join(l.confDir, n))
	}
	return out, nil
}

func confNames(dir string, mustExist bool) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if !mustExist && errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("list NetworkManager configuration in %q: %w", dir, err)
	}
	var names []string
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".conf") {
			names = append(names, e.Name())
		}
	}
	slices.Sort(names)
	return names, nil
}

// specEntry is one spec of the merged value and the file it came from.
type specEntry struct {
	spec string
	file string
}

// merge applies one file's assignments as NetworkManager does: "=" replaces the list, "+="
// appends what the list lacks, "-=" drops what it names.
func merge(cur []specEntry, f confFile) []specEntry {
	if f.disabled {
		return cur
	}
	for _, op := range f.ops {
		specs := splitSpecs(op.value)
		switch op.op {
		case '=':
			cur = cur[:0:0]
			for _, s := range specs {
				cur = append(cur, specEntry{s, f.path})
			}
		case '+':
			old := len(cur)
			for _, s := range specs {
				if !slices.ContainsFunc(cur[:old], func(e specEntry) bool { return e.spec == s }) {
					cur = append(cur, specEntry{s, f.path})
				}
			}
		case '-':
			cur = slices.DeleteFunc(slices.Clone(cur), func(e specEntry) bool { return slices.Contains(specs, e.spec) })
		}
	}
	return cur
}

// patternResult is how the merged configuration treats one pattern.
type patternResult struct {
	pattern string
	covered bool
	// coveredBy are the files whose specs match names of the pattern.
	coveredBy []string
	// conflict says which file keeps the pattern out although an earlier file put it in:
	// one that excepts it, replaces the list without it, or removes it.
	conflict string
	// doubtful are except: specs that might take Calico devices out (type:, mac:, driver:).
	doubtful []string
}

// evaluate merges the files in order and judges every pattern.
func evaluate(files []confFile, patterns []string) []patternResult {
	globs := make([]glob, len(patterns))
	for i, p := range patterns {
		globs[i] = compileGlob(p, false)
	}
	res := make([]patternResult, len(patterns))
	wasCovered := make([]bool, len(patterns))
	var cur []specEntry
	for _, f := range files {
		cur = merge(cur, f)
		if f.disabled || len(f.ops) == 0 {
			continue
		}
		specs := parseEntries(cur)
		for i, g := range globs {
			c := cover(g, specs)
			if wasCovered[i] && !c.covered {
				res[i].conflict = describeLoss(f, c)
			}
			if c.covered {
				res[i].conflict = ""
			}
			wasCovered[i] = c.covered
		}
	}
	specs := parseEntries(cur)
	for i, g := range globs {
		c := cover(g, specs)
		r := &res[i]
		r.pattern, r.covered = patterns[i], c.covered
		if r.covered {
			r.conflict = ""
		} else if c.excludedBy != nil {
			r.conflict = fmt.Sprintf("%s excepts it with %q", filepath.Base(originOf(cur, c.excludedBy.raw)), c.excludedBy.raw)
		}
		for _, s := range c.doubtful {
			r.doubtful = append(r.doubtful, fmt.Sprintf("%q in %s", s.raw, filepath.Base(originOf(cur, s.raw))))
		}
		// A list of only except: specs covers as a whole.
		onlyExcepts := r.covered && !slices.ContainsFunc(specs, func(s deviceSpec) bool { return !s.except })
		for j, s := range specs {
			if (onlyExcepts || !s.except && (s.kind == kindAll || s.kind == kindName && intersects(g, s.glob))) && !slices.Contains(r.coveredBy, cur[j].file) {
				r.coveredBy = append(r.coveredBy, cur[j].file)
			}
		}
	}
	return res
}

func parseEntries(es []specEntry) []deviceSpec {
	out := make([]deviceSpec, len(es))
	for i, e := range es {
		out[i] = parseSpec(e.spec)
	}
	return out
}

func originOf(es []specEntry, spec string) string {
	for _, e := range es {
		if e.spec == spec {
			return e.file
		}
	}
	return ""
}

// describeLoss names what a file did to take a pattern out of the list.
func describeLoss(f confFile, c coverage) string {
	name := filepath.Base(f.path)
	if c.excludedBy != nil {
		return fmt.Sprintf("%s excepts it with %q", name, c.excludedBy.raw)
	}
	for _, op := range slices.Backward(f.ops) {
		switch op.op {
		case '=':
			return fmt.Sprintf("%s line %d replaces unmanaged-devices with a list without it", name, op.line)
		case '-':
			return fmt.Sprintf("%s line %d removes it with unmanaged-devices-=", name, op.line)
		}
	}
	return fmt.Sprintf("%s takes it out of unmanaged-devices", name)
}
