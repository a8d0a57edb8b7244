package kernel

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"
	"time"
)

// maxFile bounds what is read of one module index or kernel config (a distribution's
// modules.dep is about 1 MiB, a config about 300 KiB), so a wrong file under the host root
// cannot exhaust the agent's memory.
const maxFile = 16 << 20

// cache holds what the checks of one Checks call read more than once: the kernel release, the
// module indexes and the kernel config. A file is parsed again when its size or modification
// time changes, so checks built once can run pass after pass and still see a new depmod run or a
// replaced /boot config; unchanged, the config is read once however many checks ask.
type cache struct {
	mu    sync.Mutex
	rel   string
	files map[string]*parsedFile
	// modules and symbols are the module keys and config symbols the checks look up: a parsed
	// file keeps only those (a distribution's modules.dep names thousands of modules, its
	// config thousands of symbols, and the daemon keeps them for as long as it runs).
	modules, symbols map[string]bool
}

type parsedFile struct {
	size    int64
	modTime time.Time
	index   map[string]string // module key -> entry, for modules.dep and modules.builtin
	config  map[string]string // symbol -> value, for a kernel config
}

// newCache returns a cache for looking up the named modules.
func newCache(names ...string) *cache {
	c := &cache{files: map[string]*parsedFile{}, modules: map[string]bool{}, symbols: map[string]bool{}}
	for _, name := range names {
		key, err := moduleKey(name)
		if err != nil {
			continue // module reports it
		}
		c.modules[key] = true
		for _, sym := range configSymbols(key) {
			c.symbols[sym] = true
		}
	}
	return c
}

func (c *cache) wantModule(key string) bool { return c.modules[key] }
func (c *cache) wantSymbol(sym string) bool { return c.symbols[sym] }

// release returns the kernel release, read once: it cannot change while the agent runs.
func (c *cache) release(f FS) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rel != "" {
		return c.rel, nil
	}
	rel, err := f.Release()
	if err != nil {
		return "", err
	}
	c.rel = rel
	return rel, nil
}

// load returns the parsed form of the host file p, parsing it with parse when it is new or has
// changed. ok is false when the file does not exist.
func (c *cache) load(f FS, p string, parse func(p string, data []byte) (*parsedFile, error)) (pf *parsedFile, ok bool, err error) {
	full := f.hostPath(p)
	st, err := os.Stat(full)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("stat %q: %w", p, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if pf := c.files[p]; pf != nil && pf.size == st.Size() && pf.modTime.Equal(st.ModTime()) {
		return pf, true, nil
	}
	data, err := readLimited(full)
	if err != nil {
		return nil, false, fmt.Errorf("read %q: %w", p, err)
	}
	pf, err = parse(p, data)
	if err != nil {
		return nil, false, err
	}
	pf.size, pf.modTime = st.Size(), st.ModTime()
	c.files[p] = pf
	return pf, true, nil
}

func readLimited(name string) ([]byte, error) {
	fh, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer func() { _ = fh.Close() }()
	data, err := io.ReadAll(io.LimitReader(fh, maxFile+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxFile {
		return nil, fmt.Errorf("larger than %d bytes", maxFile)
	}
	return data, nil
}

// moduleIndex returns the modules listed in a modules.dep or modules.builtin file.
func (c *cache) moduleIndex(f FS, p string) (map[string]string, bool, error) {
	pf, ok, err := c.load(f, p, func(_ string, data []byte) (*parsedFile, error) {
		return &parsedFile{index: parseModuleIndex(data, c.wantModule)}, nil
	})
	if !ok || err != nil {
		return nil, ok, err
	}
	return pf.index, true, nil
}

// parseModuleIndex reads modules.dep ("kernel/.../xt_set.ko.zst: kernel/.../ip_set.ko.zst ...")
// and modules.builtin ("kernel/.../ip_set.ko") alike: only the path before the colon names a
// module, the rest are its dependencies. calicoctl matches "/<name>.ko" anywhere on the line,
// so a module counts as present when it is only a dependency of another; this does not. Only
// the modules keep wants are kept; nil keeps all.
func parseModuleIndex(data []byte, keep func(key string) bool) map[string]string {
	idx := map[string]string{}
	for len(data) > 0 {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		if i := bytes.IndexByte(line, ':'); i >= 0 {
			line = line[:i]
		}
		entry := string(bytes.TrimSpace(line))
		if key, ok := moduleNameFromPath(entry); ok && (keep == nil || keep(key)) {
			if _, dup := idx[key]; !dup {
				idx[key] = entry
			}
		}
	}
	return idx
}

// kernelConfig returns the running kernel's config and the host path it came from, or nil when
// the host has neither /proc/config.gz (CONFIG_IKCONFIG_PROC) nor /boot/config-<release>. The
// former describes the running kernel by construction, so it comes first.
func (c *cache) kernelConfig(f FS, rel string) (map[string]string, string, error) {
	for _, src := range []struct {
		path    string
		gzipped bool
	}{
		{"/proc/config.gz", true},
		{"/boot/config-" + rel, false},
	} {
		pf, ok, err := c.load(f, src.path, func(p string, data []byte) (*parsedFile, error) {
			if src.gzipped {
				zr, err := gzip.NewReader(bytes.NewReader(data))
				if err != nil {
					return nil, fmt.Errorf("read kernel config %q: %w", p, err)
				}
				data, err = io.ReadAll(io.LimitReader(zr, maxFile))
				if err != nil {
					return nil, fmt.Errorf("read kernel config %q: %w", p, err)
				}
			}
			return &parsedFile{config: parseConfig(data, c.wantSymbol)}, nil
		})
		if err != nil {
			return nil, "", err
		}
		if ok {
			return pf.config, src.path, nil
		}
	}
	return nil, "", nil
}
