package kernel

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// FS reads the host's kernel state under Root, where the host's /proc, /sys, /lib/modules and
// /boot are mounted ("/" when the agent runs in the host's mount namespace).
type FS struct{ Root string }

const osreleasePath = "/proc/sys/kernel/osrelease"

// hostPath returns where the host's path p is under Root.
func (f FS) hostPath(p string) string {
	root := f.Root
	if root == "" {
		root = "/"
	}
	return filepath.Join(root, filepath.FromSlash(p))
}

// Release returns the running kernel's release, e.g. "6.1.0-18-amd64".
func (f FS) Release() (string, error) {
	b, err := os.ReadFile(f.hostPath(osreleasePath))
	if err != nil {
		return "", fmt.Errorf("read kernel release %q: %w", osreleasePath, err)
	}
	rel := strings.TrimSpace(string(b))
	// The release names directories under /lib/modules and /boot; refuse anything that would
	// lead elsewhere.
	if rel == "" || rel == "." || rel == ".." || strings.ContainsAny(rel, "/\x00") {
		return "", fmt.Errorf("read kernel release %q: invalid release %q", osreleasePath, rel)
	}
	return rel, nil
}

// Sysctl returns the trimmed value of a sysctl, named as sysctl(8) names it:
// "net.ipv4.ip_forward", or with slashes ("net/ipv4/conf/eth0.100/rp_filter") when a component
// contains a dot. A sysctl the kernel does not have gives an error that wraps fs.ErrNotExist.
// net.* sysctls belong to the network namespace of the process that reads them, whatever /proc
// is mounted where, so they describe the host only when the agent runs with hostNetwork.
func (f FS) Sysctl(name string) (string, error) {
	p, err := sysctlPath(name)
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(f.hostPath(p))
	if err != nil {
		return "", fmt.Errorf("read sysctl %q: %w", name, err)
	}
	return strings.TrimSpace(string(b)), nil
}

func sysctlPath(name string) (string, error) {
	sep := "."
	if strings.Contains(name, "/") {
		sep = "/"
	}
	parts := strings.Split(name, sep)
	for _, p := range parts {
		if p == "" || p == "." || p == ".." || strings.ContainsRune(p, 0) {
			return "", fmt.Errorf("parse sysctl name %q: want dotted components such as net.ipv4.ip_forward", name)
		}
	}
	return "/proc/sys/" + strings.Join(parts, "/"), nil
}

// State says how a kernel module is available.
type State string

const (
	// Loaded means the module is in the running kernel now: /sys/module has it, either because
	// it was loaded or because it is built in and shows there.
	Loaded State = "loaded"
	// Loadable means the module is installed (modules.dep) or built as one (CONFIG_…=m); the
	// kernel loads it on first use.
	Loadable State = "loadable"
	// Builtin means the module is compiled into the kernel (modules.builtin or CONFIG_…=y).
	Builtin State = "builtin"
	// Missing means none of the sources has it.
	Missing State = "missing"
)

// Module is what the host has of one kernel module.
type Module struct {
	Name  string
	State State
	// Evidence says where the module was found, as a path on the host, or, when it is
	// missing, where it was looked for.
	Evidence string
}

// Module reports how the named module is available. It looks in /sys/module/<name> (what lsmod
// lists, plus built-in modules that have parameters), /lib/modules/<release>/modules.dep,
// /lib/modules/<release>/modules.builtin, then the kernel config: /proc/config.gz, else
// /boot/config-<release>. calicoctl node checksystem uses the same sources but asks lsmod after
// the two files and never reads /proc/config.gz. A source that is absent is skipped, not an
// error: many hosts have no /lib/modules or no config. Errors are for sources that exist but
// cannot be read, and for a missing kernel release, without which the files cannot be found.
func (f FS) Module(name string) (Module, error) {
	return f.module(newCache(name), name)
}

func (f FS) module(c *cache, name string) (Module, error) {
	key, err := moduleKey(name)
	if err != nil {
		return Module{}, err
	}
	m := Module{Name: name, State: Missing}

	// The kernel lists modules in /sys/module with underscores whatever the file is called.
	sysDir := "/sys/module/" + key
	switch st, err := os.Stat(f.hostPath(sysDir)); {
	case err == nil && st.IsDir():
		m.State, m.Evidence = Loaded, sysDir
		// Only loadable modules have initstate; a built-in one with parameters or a version
		// shows in /sys/module too.
		if _, err := os.Stat(f.hostPath(sysDir + "/initstate")); errors.Is(err, fs.ErrNotExist) {
			m.Evidence += ", built in"
		}
		return m, nil
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return Module{}, fmt.Errorf("look up module %q in %q: %w", name, sysDir, err)
	}
	looked := []string{"not in /sys/module"}

	rel, err := c.release(f)
	if err != nil {
		return Module{}, fmt.Errorf("look up module %q: %w", name, err)
	}
	for _, src := range []struct {
		file  string
		state State
	}{
		{"/lib/modules/" + rel + "/modules.dep", Loadable},
		{"/lib/modules/" + rel + "/modules.builtin", Builtin},
	} {
		idx, ok, err := c.moduleIndex(f, src.file)
		if err != nil {
			return Module{}, fmt.Errorf("look up module %q: %w", name, err)
		}
		if !ok {
			looked = append(looked, src.file+" absent")
			continue
		}
		if p, found := idx[key]; found {
			m.State, m.Evidence = src.state, src.file+": "+p
			return m, nil
		}
		looked = append(looked, "not in "+src.file)
	}

	cfg, cfgFile, err := c.kernelConfig(f, rel)
	if err != nil {
		return Module{}, fmt.Errorf("look up module %q: %w", name, err)
	}
	syms := configSymbols(key)
	switch {
	case cfg == nil:
		looked = append(looked, "no kernel config in /proc/config.gz or /boot/config-"+rel)
	case len(syms) == 0:
		looked = append(looked, "no known config symbol to look for in "+cfgFile)
	default:
		sym, val, found := decidingSymbol(cfg, syms)
		switch {
		case found && val == "y":
			m.State, m.Evidence = Builtin, "CONFIG_"+sym+"=y in "+cfgFile
			return m, nil
		case found && val == "m":
			m.State, m.Evidence = Loadable, "CONFIG_"+sym+"=m in "+cfgFile
			return m, nil
		case found && val == "n":
			looked = append(looked, "CONFIG_"+sym+" is not set in "+cfgFile)
		case found:
			looked = append(looked, "CONFIG_"+sym+"="+val+" in "+cfgFile)
		default:
			looked = append(looked, "CONFIG_"+sym+" not in "+cfgFile)
		}
	}
	m.Evidence = strings.Join(looked, "; ")
	return m, nil
}

// moduleKey returns the name as the kernel keys modules: kmod treats "-" and "_" alike and
// /sys/module uses "_".
func moduleKey(name string) (string, error) {
	if name == "" || len(name) > 64 || strings.ContainsAny(name, "/\x00. ") {
		return "", fmt.Errorf("look up module %q: invalid module name", name)
	}
	return strings.ReplaceAll(name, "-", "_"), nil
}

// moduleNameFromPath returns the module key of a modules.dep or modules.builtin entry such as
// "kernel/net/netfilter/xt_set.ko.zst".
func moduleNameFromPath(p string) (string, bool) {
	base := path.Base(p)
	i := strings.Index(base, ".ko")
	if i <= 0 {
		return "", false
	}
	switch base[i:] {
	case ".ko", ".ko.gz", ".ko.xz", ".ko.zst", ".ko.bz2":
	default:
		return "", false
	}
	return strings.ReplaceAll(base[:i], "-", "_"), true
}
