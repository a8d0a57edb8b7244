package networkd

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/calico-prep/calico-prep/pkg/calico"
)

// This file reads .network files the way networkd picks one per link (systemd.network(5)):
// files from every directory are sorted by file name, a name in an earlier directory hides the
// same name in later ones (a symlink to /dev/null or an empty file masks it), and the first
// file whose [Match] section the link satisfies configures it. It answers one question: which
// file does each of Calico's interface names meet first.

// unitFile is a parsed systemd-style configuration file: its assignments in order.
type unitFile struct {
	path    string
	entries []entry
}

type entry struct {
	section, key, value string
	line                int
}

// sectionLine is the line of the first header of a section; 0 when absent.
func (u unitFile) sectionLine(name string) int {
	for _, e := range u.entries {
		if e.section == name && e.key == "" {
			return e.line
		}
	}
	return 0
}

// parseUnit reads systemd's configuration syntax: [Section] headers, Key=Value lines, '#' and
// ';' comments, and a backslash at the end of a line continuing it.
func parseUnit(path string, data []byte) (unitFile, error) {
	u := unitFile{path: path}
	section := ""
	lines := strings.Split(string(data), "\n")
	for i := 0; i < len(lines); i++ {
		lineNo := i + 1
		s := strings.TrimSpace(strings.TrimSuffix(lines[i], "\r"))
		for strings.HasSuffix(s, "\\") && i+1 < len(lines) {
			i++
			next := strings.TrimSpace(strings.TrimSuffix(lines[i], "\r"))
			if next != "" && (next[0] == '#' || next[0] == ';') {
				continue // comments inside a continued line are skipped
			}
			s = strings.TrimSuffix(s, "\\") + " " + next
		}
		switch {
		case s == "" || s[0] == '#' || s[0] == ';':
			continue
		case s[0] == '[':
			if !strings.HasSuffix(s, "]") || len(s) < 3 {
				return u, fmt.Errorf("parse %q line %d: invalid section header %q", path, lineNo, s)
			}
			section = s[1 : len(s)-1]
			u.entries = append(u.entries, entry{section: section, line: lineNo})
			continue
		}
		key, value, ok := strings.Cut(s, "=")
		if !ok {
			return u, fmt.Errorf("parse %q line %d: %q is not a section header, assignment or comment", path, lineNo, s)
		}
		if section == "" {
			return u, fmt.Errorf("parse %q line %d: %q comes before the first [section]", path, lineNo, s)
		}
		u.entries = append(u.entries, entry{section: section, key: strings.TrimSpace(key), value: strings.TrimSpace(value), line: lineNo})
	}
	return u, nil
}

// parseBool is systemd's parse_boolean; ok is false for anything else.
func parseBool(s string) (value, ok bool) {
	switch strings.ToLower(s) {
	case "1", "yes", "y", "true", "t", "on":
		return true, true
	case "0", "no", "n", "false", "f", "off":
		return false, true
	}
	return false, false
}

// confFile is one configuration file in the order networkd reads it.
type confFile struct {
	path   string
	name   string
	masked bool
}

// listConf lists the files with suffix in dirs, which come in priority order (the first hides
// the same name in the others), sorted by name as networkd reads them. Missing directories are
// skipped; masked names are returned with masked set, so that they hide the same name below.
func listConf(dirs []string, suffix string) ([]confFile, error) {
	byName := map[string]confFile{}
	for _, dir := range dirs {
		entries, err := os.ReadDir(dir)
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list %q: %w", dir, err)
		}
		for _, e := range entries {
			name := e.Name()
			if !strings.HasSuffix(name, suffix) || name[0] == '.' {
				continue
			}
			if _, seen := byName[name]; seen {
				continue
			}
			p := filepath.Join(dir, name)
			st, err := os.Stat(p)
			if err != nil || st.IsDir() {
				continue // a dangling symlink or a directory is no configuration
			}
			byName[name] = confFile{path: p, name: name, masked: masked(p, st)}
		}
	}
	out := make([]confFile, 0, len(byName))
	for _, f := range byName {
		out = append(out, f)
	}
	slices.SortFunc(out, func(a, b confFile) int { return strings.Compare(a.name, b.name) })
	return out, nil
}

// masked reports whether a file is a symlink to /dev/null or empty, which systemd reads as
// "masked".
func masked(path string, st fs.FileInfo) bool {
	if target, err := filepath.EvalSymlinks(path); err == nil && target == os.DevNull {
		return true
	}
	return st.Mode().IsRegular() && st.Size() == 0
}

// linkProfile is what networkd can match of the links one of Calico's globs stands for.
type linkProfile struct {
	glob  string
	names nameSet
	// types, kinds and drivers are the values Type=, Kind= and Driver= may see.
	types, kinds, drivers []string
}

// profiles are Calico's interfaces as networkd sees them. Type= is networkd's link type: the
// kernel's DEVTYPE where the driver sets one (vxlan, wireguard) and networkd has the link's
// udev device, else the ARP hardware type (ether for veths and VXLAN, tunnel for ipip, none
// for WireGuard). Both are taken as possible.
func profiles() []linkProfile {
	var out []linkProfile
	for _, g := range calico.UnmanagedGlobs() {
		p := linkProfile{glob: g, names: nameSetOf(g)}
		var kinds []string
		if strings.HasPrefix(g, calico.WorkloadPrefix) {
			kinds = []string{calico.WorkloadKind}
		}
		for _, t := range calico.Tunnels() {
			if p.names.some(compileGlob(t.Device)) && !slices.Contains(kinds, t.Kind) {
				kinds = append(kinds, t.Kind)
			}
		}
		for _, k := range kinds {
			p.kinds = append(p.kinds, k)
			p.drivers = append(p.drivers, k)
			p.types = append(p.types, linkTypes(k)...)
		}
		out = append(out, p)
	}
	return out
}

func linkTypes(kind string) []string {
	switch kind {
	case "veth":
		return []string{"ether"}
	case "vxlan":
		return []string{"vxlan", "ether"}
	case "ipip":
		return []string{"tunnel"}
	case "wireguard":
		return []string{"wireguard", "none"}
	}
	return []string{kind}
}

// Keys of [Match] that only a physical or wireless device, or one with a known address,
// satisfies; Calico's virtual links satisfy none of them unless the list is inverted.
var deviceKeys = []string{"MACAddress", "PermanentMACAddress", "Path", "Property", "WLANInterfaceType", "SSID", "BSSID"}

// Keys of [Match] that test the host, not the link: calico-prep assumes they hold.
var hostKeys = []string{"Host", "Virtualization", "KernelCommandLine", "KernelVersion", "Credential", "Architecture", "Firmware"}

// matchList is a [Match] key's accumulated list, as networkd keeps it: each word with its own
// inversion ("Name=!eth0 eth1" inverts both), an empty assignment clearing it.
type matchList struct {
	key   string
	line  int // the last assignment's line, for reports
	words []matchWord
}

type matchWord struct {
	invert bool
	glob   glob
}

// networkFile is what one .network file says about matching.
type networkFile struct {
	confFile
	// matchLine is the line of [Match], 0 without one.
	matchLine int
	lists     []matchList
	// unmanaged is [Link] Unmanaged=yes (the last assignment).
	unmanaged bool
}

func readNetworkFile(f confFile) (networkFile, error) {
	nf := networkFile{confFile: f}
	data, err := os.ReadFile(f.path)
	if err != nil {
		return nf, fmt.Errorf("read %q: %w", f.path, err)
	}
	return parseNetworkFile(f, data)
}

func parseNetworkFile(f confFile, data []byte) (networkFile, error) {
	nf := networkFile{confFile: f}
	u, err := parseUnit(f.path, data)
	if err != nil {
		return nf, err
	}
	nf.matchLine = u.sectionLine("Match")
	byKey := map[string]int{}
	for _, e := range u.entries {
		switch {
		case e.section == "Link" && e.key == "Unmanaged":
			nf.unmanaged, _ = parseBool(e.value)
		case e.section == "Match" && e.key != "":
			i, ok := byKey[e.key]
			if !ok {
				i = len(nf.lists)
				byKey[e.key] = i
				nf.lists = append(nf.lists, matchList{key: e.key})
			}
			l := &nf.lists[i]
			l.line = e.line
			if e.value == "" {
				l.words = nil
				continue
			}
			v := e.value
			invert := strings.HasPrefix(v, "!")
			v = strings.TrimPrefix(v, "!")
			for _, w := range strings.Fields(v) {
				l.words = append(l.words, matchWord{invert: invert, glob: compileGlob(w)})
			}
		}
	}
	return nf, nil
}

// matches reports whether the file may match a link of the profile, and the line that decides
// it (a condition's, or [Match]'s when there is none: such a file matches every link).
func (nf networkFile) matches(p linkProfile) (bool, string, int) {
	var active []matchList
	for _, l := range nf.lists {
		if len(l.words) > 0 {
			active = append(active, l)
		}
	}
	if len(active) == 0 {
		if nf.matchLine == 0 {
			return true, "no [Match] section", 1
		}
		return true, "an empty [Match] section", nf.matchLine
	}
	first := active[0]
	for _, l := range active {
		switch {
		case l.key == "Name":
			if !l.someName(p.names) {
				return false, "", 0
			}
		case l.key == "Type":
			if !l.someValue(p.types) {
				return false, "", 0
			}
		case l.key == "Kind":
			if !l.someValue(p.kinds) {
				return false, "", 0
			}
		case l.key == "Driver":
			if !l.someValue(p.drivers) {
				return false, "", 0
			}
		case slices.Contains(deviceKeys, l.key):
			if !l.inverted() {
				return false, "", 0
			}
		case slices.Contains(hostKeys, l.key):
			// Holds or not for every link alike.
		default:
			// networkd ignores an unknown key with a warning.
			continue
		}
		// The report names the condition on the link: the name, else another one.
		if l.key == "Name" && first.key != "Name" || slices.Contains(hostKeys, first.key) && !slices.Contains(hostKeys, l.key) {
			first = l
		}
	}
	return true, first.key + "=" + first.describe(), first.line
}

func (l matchList) inverted() bool {
	for _, w := range l.words {
		if !w.invert {
			return false
		}
	}
	return true
}

// someName reports whether some name of the set passes the list: no inverted glob matches every
// name of the set, and a positive glob, if there is one, matches some.
func (l matchList) someName(n nameSet) bool {
	positive, hit := false, false
	for _, w := range l.words {
		if w.invert {
			if n.all(w.glob) {
				return false
			}
			continue
		}
		positive = true
		if n.some(w.glob) {
			hit = true
		}
	}
	return !positive || hit
}

// someValue reports whether one of the values passes the list, as networkd tests one value.
func (l matchList) someValue(values []string) bool {
	for _, v := range values {
		positive, hit, vetoed := false, false, false
		for _, w := range l.words {
			m := w.glob.match(v)
			if w.invert {
				vetoed = vetoed || m
				continue
			}
			positive = true
			hit = hit || m
		}
		if !vetoed && (!positive || hit) {
			return true
		}
	}
	return false
}

func (l matchList) describe() string {
	var b strings.Builder
	for i, w := range l.words {
		if i > 0 {
			b.WriteByte(' ')
		}
		if w.invert {
			b.WriteByte('!')
		}
		for _, t := range w.glob {
			switch t.kind {
			case 'l':
				b.WriteByte(t.ch)
			case '[':
				b.WriteString("[…]")
			default:
				b.WriteByte(t.kind)
			}
		}
	}
	return b.String()
}

// firstMatch is the file a profile's links meet first.
type firstMatch struct {
	profile linkProfile
	file    *networkFile // nil when no file matches
	what    string
	line    int
}

// conflict is a first match that is not calico-prep's file and leaves the links managed.
func (m firstMatch) conflict(ownPath string) bool {
	return m.file != nil && m.file.path != ownPath && !m.file.unmanaged
}

func (m firstMatch) String() string {
	return fmt.Sprintf("%s line %d (%s)", m.file.path, m.line, m.what)
}

// firstMatches returns, per profile, the first file in files that may match it.
func firstMatches(files []networkFile) []firstMatch {
	var out []firstMatch
	for _, p := range profiles() {
		m := firstMatch{profile: p}
		for i := range files {
			if ok, what, line := files[i].matches(p); ok {
				m.file, m.what, m.line = &files[i], what, line
				break
			}
		}
		out = append(out, m)
	}
	return out
}

// networkSet is the .network files networkd reads, with calico-prep's file as it would be.
type networkSet struct {
	// files are the unmasked files in networkd's order, calico-prep's as it would be written.
	files []networkFile
	// own is calico-prep's file on disk: nil when absent.
	own []byte
	// invalid are files networkd cannot parse (it then ignores them).
	invalid []error
}

// readNetworkSet reads every .network file of dirs (in priority order; dirs[0] is where
// calico-prep's file lives) and places want, calico-prep's content, under ownName.
func readNetworkSet(dirs []string, ownName string, want []byte) (networkSet, error) {
	var s networkSet
	list, err := listConf(dirs, ".network")
	if err != nil {
		return s, err
	}
	ownPath := filepath.Join(dirs[0], ownName)
	if b, err := os.ReadFile(ownPath); err == nil {
		s.own = b
	} else if !errors.Is(err, fs.ErrNotExist) {
		return s, fmt.Errorf("read %q: %w", ownPath, err)
	}
	own := confFile{path: ownPath, name: ownName}
	if i := slices.IndexFunc(list, func(f confFile) bool { return f.name == ownName }); i >= 0 {
		list[i] = own
	} else {
		list = append(list, own)
		slices.SortFunc(list, func(a, b confFile) int { return strings.Compare(a.name, b.name) })
	}
	for _, f := range list {
		if f.masked {
			continue
		}
		var nf networkFile
		if f.path == ownPath {
			nf, err = parseNetworkFile(f, want)
			if err != nil {
				return s, fmt.Errorf("parse calico-prep's own file: %w", err)
			}
		} else if nf, err = readNetworkFile(f); err != nil {
			s.invalid = append(s.invalid, err)
			continue
		}
		s.files = append(s.files, nf)
	}
	return s, nil
}

// ownNetwork is calico-prep's .network content for the globs.
func ownNetwork(globs []string) []byte {
	var b bytes.Buffer
	b.WriteString(ownHeader + " It keeps Calico's interfaces unmanaged by systemd-networkd.\n")
	b.WriteString("# Its name sorts before other .network files: networkd applies the first file that matches.\n")
	b.WriteString("# calico-prep rewrites it when its settings change; \"agent cleanup\" removes it.\n")
	b.WriteString("[Match]\nName=" + strings.Join(globs, " ") + "\n\n[Link]\nUnmanaged=yes\n")
	return b.Bytes()
}
