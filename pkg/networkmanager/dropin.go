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

	"github.com/calico-prep/calico-prep/pkg/calico"

	"golang.org/x/sys/unix"

	"github.com/calico-prep/calico-prep/internal/atomicfile"
)

// ownFile is calico-prep's drop-in. It appends with "+=" rather than assigning, so that
// unmanaged-devices set by files read before it stay in force.
const (
	ownFile   = "calico-prep.conf"
	ownHeader = "# Written by calico-prep."
	ownMode   = 0o644
)

// Patterns returns Calico's patterns followed by the extra ones, without repeats. An extra
// pattern that NetworkManager would split or misread is an error naming it.
func Patterns(extra []string) ([]string, error) {
	out := calico.UnmanagedGlobs()
	for _, p := range extra {
		p = strings.TrimPrefix(p, tagInterfaceName)
		if p == "" || len(p) > 64 || strings.ContainsAny(p, ",;\\=~ \t\r\n\x00") || strings.HasPrefix(p, "=") {
			return nil, fmt.Errorf("invalid interface name pattern %q", p)
		}
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out, nil
}

// dropIn is the drop-in's content for the patterns.
func dropIn(patterns []string) []byte {
	specs := make([]string, len(patterns))
	for i, p := range patterns {
		specs[i] = tagInterfaceName + p
	}
	var b bytes.Buffer
	b.WriteString(ownHeader + " It keeps Calico's interfaces unmanaged by NetworkManager.\n")
	b.WriteString("# calico-prep rewrites it when its settings change; \"agent cleanup\" removes it.\n")
	b.WriteString("[" + groupKeyfile + "]\n")
	b.WriteString(keyUnmanaged + "+=" + joinSpecs(specs) + "\n")
	return b.Bytes()
}

// ValidateConfDir checks, before anything is touched, that dir exists, is a directory and
// can be written to (a read-only mount or missing permission fails here, not half-way).
func ValidateConfDir(dir string) error {
	if !filepath.IsAbs(dir) {
		return fmt.Errorf("networkmanager conf dir %q is not an absolute path", dir)
	}
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("check networkmanager conf dir %q: %w", dir, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("check networkmanager conf dir %q: not a directory", dir)
	}
	if err := unix.Access(dir, unix.W_OK|unix.X_OK); err != nil {
		return fmt.Errorf("check networkmanager conf dir %q: not writable: %w", dir, err)
	}
	return nil
}

// ownState is calico-prep's drop-in as it is on disk.
type ownState struct {
	exists bool
	data   []byte
	mode   fs.FileMode
}

func readOwn(dir string) (ownState, error) {
	path := filepath.Join(dir, ownFile)
	st, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return ownState{}, nil
	}
	if err != nil {
		return ownState{}, fmt.Errorf("read drop-in %q: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return ownState{}, fmt.Errorf("read drop-in %q: not a regular file", path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return ownState{}, fmt.Errorf("read drop-in %q: %w", path, err)
	}
	return ownState{exists: true, data: data, mode: st.Mode().Perm()}, nil
}

// ours reports whether calico-prep wrote the file.
func (o ownState) ours() bool { return bytes.HasPrefix(o.data, []byte(ownHeader)) }

// current reports whether the drop-in on disk is exactly what calico-prep would write.
func (o ownState) current(want []byte) bool {
	return o.exists && o.mode == ownMode && bytes.Equal(o.data, want)
}

// writeOwn replaces the drop-in atomically (its temporary name does not end in ".conf", so
// NetworkManager never reads it); on any error the old drop-in stays.
func writeOwn(dir string, data []byte) error {
	if err := ValidateConfDir(dir); err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(dir, ownFile), data, ownMode); err != nil {
		return fmt.Errorf("write drop-in: %w", err)
	}
	return nil
}

// removeOwn removes the drop-in if calico-prep wrote it. A file of that name without
// calico-prep's header is someone else's and stays. It reports whether a file was removed.
func removeOwn(dir string) (bool, error) {
	path := filepath.Join(dir, ownFile)
	o, err := readOwn(dir)
	if err != nil || !o.exists {
		return false, err
	}
	if !o.ours() {
		return false, fmt.Errorf("remove drop-in %q: it was not written by calico-prep (no %q header); leaving it", path, ownHeader)
	}
	removed, err := atomicfile.Remove(path)
	if err != nil {
		return false, fmt.Errorf("remove drop-in: %w", err)
	}
	return removed, nil
}

// confReport is what the configuration on disk means for the patterns.
type confReport struct {
	own ownState
	// withOwn judges the patterns with calico-prep's drop-in as it would be written.
	withOwn []patternResult
	// withoutOwn judges them by the other files alone.
	withoutOwn []patternResult
	// invalid are files NetworkManager cannot parse; it then loads no configuration at all.
	invalid []error
}

// readConf reads every file NetworkManager reads and judges the patterns with and without
// calico-prep's drop-in.
func readConf(l layout, patterns []string, want []byte) (confReport, error) {
	var r confReport
	paths, err := l.order()
	if err != nil {
		return r, err
	}
	own := filepath.Join(l.confDir, ownFile)
	if r.own, err = readOwn(l.confDir); err != nil {
		return r, err
	}
	var with, without []confFile
	for _, p := range paths {
		if p == own {
			f, err := parseConf(p, want)
			if err != nil {
				return r, fmt.Errorf("parse calico-prep's own drop-in: %w", err)
			}
			with = append(with, f)
			continue
		}
		data, err := os.ReadFile(p)
		if err != nil {
			r.invalid = append(r.invalid, fmt.Errorf("read %q: %w", p, err))
			continue
		}
		f, err := parseConf(p, data)
		if err != nil {
			r.invalid = append(r.invalid, err)
			continue
		}
		with, without = append(with, f), append(without, f)
	}
	r.withOwn = evaluate(with, patterns)
	r.withoutOwn = evaluate(without, patterns)
	return r, nil
}
