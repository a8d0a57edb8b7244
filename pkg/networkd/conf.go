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
)

// This file reads networkd.conf and its drop-ins (networkd.conf(5)) for the two settings that
// decide whether networkd removes routes and routing policy rules it did not create: Calico's
// BGP routes on the uplink and WireGuard's rules. Both default to yes. networkd reads the main
// file, then the drop-ins sorted by file name (a name in an earlier directory hides the same
// name in later ones); the last assignment wins. It reads them only when it starts.

// foreignKeys are the [Network] settings calico-prep turns off.
var foreignKeys = []string{"ManageForeignRoutes", "ManageForeignRoutingPolicyRules"}

// foreignSetting is the effective value of one key and the assignment that decides it.
type foreignSetting struct {
	key    string
	manage bool
	// path and line of the deciding assignment; "" when networkd's default (yes) applies.
	path string
	line int
}

func (s foreignSetting) String() string {
	v := "no"
	if s.manage {
		v = "yes"
	}
	if s.path == "" {
		return fmt.Sprintf("%s=%s (networkd's default)", s.key, v)
	}
	return fmt.Sprintf("%s=%s (%s line %d)", s.key, v, s.path, s.line)
}

// confLayout is where networkd.conf and its drop-in directories are, highest priority first;
// dropInDirs[0] is where calico-prep's drop-in goes.
type confLayout struct {
	mainFiles  []string
	dropInDirs []string
}

// foreignReport is what the configuration means for the foreign-route settings.
type foreignReport struct {
	// withOwn judges the settings with calico-prep's drop-in as it would be written,
	// withoutOwn without any calico-prep drop-in.
	withOwn, withoutOwn []foreignSetting
	// own is calico-prep's drop-in on disk, nil when absent.
	own     []byte
	ownPath string
	invalid []error
}

func readForeign(l confLayout, ownName string, want []byte) (foreignReport, error) {
	r := foreignReport{ownPath: filepath.Join(l.dropInDirs[0], ownName)}
	if b, err := os.ReadFile(r.ownPath); err == nil {
		r.own = b
	} else if !errors.Is(err, fs.ErrNotExist) {
		return r, fmt.Errorf("read %q: %w", r.ownPath, err)
	}
	var files []unitFile
	for _, m := range l.mainFiles {
		data, err := os.ReadFile(m)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return r, fmt.Errorf("read %q: %w", m, err)
		}
		u, err := parseUnit(m, data)
		if err != nil {
			r.invalid = append(r.invalid, err)
		} else {
			files = append(files, u)
		}
		break
	}
	list, err := listConf(l.dropInDirs, ".conf")
	if err != nil {
		return r, err
	}
	if !slices.ContainsFunc(list, func(f confFile) bool { return f.name == ownName }) {
		list = append(list, confFile{path: r.ownPath, name: ownName})
		slices.SortFunc(list, func(a, b confFile) int { return strings.Compare(a.name, b.name) })
	}
	var with, without []unitFile
	with, without = slices.Clone(files), slices.Clone(files)
	for _, f := range list {
		switch {
		case f.name == ownName:
			// The own name in a lower directory is hidden by calico-prep's file when it exists.
			u, err := parseUnit(r.ownPath, want)
			if err != nil {
				return r, fmt.Errorf("parse calico-prep's own drop-in: %w", err)
			}
			with = append(with, u)
			if f.path != r.ownPath && !f.masked {
				if u, err := readUnit(f.path); err == nil {
					without = append(without, u)
				}
			}
			continue
		case f.masked:
			continue
		}
		u, err := readUnit(f.path)
		if err != nil {
			r.invalid = append(r.invalid, err)
			continue
		}
		with, without = append(with, u), append(without, u)
	}
	r.withOwn, r.withoutOwn = effective(with), effective(without)
	return r, nil
}

func readUnit(path string) (unitFile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return unitFile{}, fmt.Errorf("read %q: %w", path, err)
	}
	return parseUnit(path, data)
}

// effective applies the files in order; the last valid assignment of each key wins.
func effective(files []unitFile) []foreignSetting {
	out := make([]foreignSetting, len(foreignKeys))
	for i, k := range foreignKeys {
		out[i] = foreignSetting{key: k, manage: true}
	}
	for _, f := range files {
		for _, e := range f.entries {
			i := slices.Index(foreignKeys, e.key)
			if e.section != "Network" || i < 0 {
				continue
			}
			if e.value == "" {
				out[i] = foreignSetting{key: e.key, manage: true}
				continue
			}
			if b, ok := parseBool(e.value); ok {
				out[i] = foreignSetting{key: e.key, manage: b, path: f.path, line: e.line}
			}
		}
	}
	return out
}

// ownForeign is calico-prep's networkd.conf drop-in. Its name sorts after other drop-ins: the
// last assignment wins.
func ownForeign() []byte {
	var b bytes.Buffer
	b.WriteString(ownHeader + " It keeps systemd-networkd from removing routes and routing\n")
	b.WriteString("# policy rules it did not create, such as Calico's BGP routes; networkd reads it when it starts.\n")
	b.WriteString("# \"agent cleanup\" removes it.\n")
	b.WriteString("[Network]\n")
	for _, k := range foreignKeys {
		b.WriteString(k + "=no\n")
	}
	return b.Bytes()
}
