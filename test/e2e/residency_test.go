package e2e

import (
	"bufio"
	"bytes"
	"cmp"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// residency is where the agent's file-backed resident memory lies in its own binary: the
// pages of each ELF section the kernel has mapped into the process, and the text and rodata
// pages shared out to the Go modules whose symbols they hold (by bytes, when a page holds
// several). Only symbols with a size can be placed: all functions, but little of rodata (type
// descriptors and strings are sizeless groups in Go's symbol table), so the split by module is
// in effect one of code. pclntab (function metadata) is one blob, not split either.
type residency struct {
	sections []sectionResidency
	modules  []moduleResidency
	// unattributed is resident text and rodata that no symbol with a size covers: most of
	// rodata (type descriptors, strings), padding.
	unattributed int64
}

type sectionResidency struct {
	name           string
	resident, size int64
}

type moduleResidency struct {
	name     string
	resident int64
}

// pagemapFile is bit 61 of a /proc/PID/pagemap entry: a file page (or shared anonymous);
// bit 63 is present. A written private page of the data segment is anonymous and not counted.
const (
	pagemapPresent = 1 << 63
	pagemapFile    = 1 << 61
)

// measureResidency reads which pages of the running binary exe are resident in pid and
// attributes them with the symbol table of syms, an unstripped build of the same source with
// the same layout (stripping drops only sections that are never loaded; checked).
func measureResidency(pid int, exe, syms string) (residency, error) {
	var r residency
	sf, err := elf.Open(syms)
	if err != nil {
		return r, err
	}
	defer sf.Close()
	ef, err := elf.Open(exe)
	if err != nil {
		return r, err
	}
	defer ef.Close()
	for _, s := range ef.Sections {
		if s.Flags&elf.SHF_ALLOC == 0 || s.Type == elf.SHT_NOBITS {
			continue
		}
		t := sf.Section(s.Name)
		if t == nil || t.Addr != s.Addr || t.Size != s.Size {
			return r, fmt.Errorf("%s and %s lay out section %s differently", exe, syms, s.Name)
		}
	}
	present, err := residentFilePages(pid, exe)
	if err != nil {
		return r, err
	}
	page := uint64(os.Getpagesize())
	resident := func(lo, hi uint64) (n int64) { // resident bytes of [lo, hi)
		for p := lo &^ (page - 1); p < hi; p += page {
			if present[p] {
				n += int64(min(hi, p+page) - max(lo, p))
			}
		}
		return n
	}
	for _, s := range ef.Sections {
		if s.Flags&elf.SHF_ALLOC == 0 || s.Type == elf.SHT_NOBITS || s.Size == 0 {
			continue
		}
		r.sections = append(r.sections, sectionResidency{s.Name, resident(s.Addr, s.Addr+s.Size), int64(s.Size)})
	}

	symbols, err := sf.Symbols()
	if err != nil {
		return r, err
	}
	byModule := map[string]int64{}
	var attributed int64
	for _, name := range []string{".text", ".rodata"} {
		s := sf.Section(name)
		for _, sym := range symbols {
			if sym.Size == 0 || sym.Value < s.Addr || sym.Value >= s.Addr+s.Size {
				continue
			}
			n := resident(sym.Value, min(sym.Value+sym.Size, s.Addr+s.Size))
			byModule[moduleOf(sym.Name)] += n
			attributed += n
		}
		for _, sec := range r.sections {
			if sec.name == name {
				r.unattributed += sec.resident
			}
		}
	}
	r.unattributed -= attributed
	for m, n := range byModule {
		r.modules = append(r.modules, moduleResidency{m, n})
	}
	slices.SortFunc(r.modules, func(a, b moduleResidency) int {
		return cmp.Or(cmp.Compare(b.resident, a.resident), strings.Compare(a.name, b.name))
	})
	return r, nil
}

// residentFilePages are the page addresses of exe's mappings in pid that are resident file
// pages.
func residentFilePages(pid int, exe string) (map[uint64]bool, error) {
	fi, err := os.Stat(exe)
	if err != nil {
		return nil, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil, fmt.Errorf("stat %s: no inode", exe)
	}
	// The process may see the binary under another path (its own mount namespace): match the
	// inode.
	inode := strconv.FormatUint(st.Ino, 10)
	maps, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "maps"))
	if err != nil {
		return nil, err
	}
	pm, err := os.Open(filepath.Join("/proc", strconv.Itoa(pid), "pagemap"))
	if err != nil {
		return nil, err
	}
	defer pm.Close()
	page := uint64(os.Getpagesize())
	present := map[uint64]bool{}
	sc := bufio.NewScanner(bytes.NewReader(maps))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 6 || f[4] != inode {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok {
			return nil, fmt.Errorf("maps line %q", sc.Text())
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("maps line %q", sc.Text())
		}
		entries := make([]byte, (end-start)/page*8)
		if _, err := pm.ReadAt(entries, int64(start/page*8)); err != nil {
			return nil, fmt.Errorf("read pagemap: %w", err)
		}
		for i := range (end - start) / page {
			e := binary.LittleEndian.Uint64(entries[i*8:])
			if e&pagemapPresent != 0 && e&pagemapFile != 0 {
				present[start+i*page] = true
			}
		}
	}
	if len(present) == 0 {
		return nil, fmt.Errorf("no resident page of %s in process %d", exe, pid)
	}
	return present, nil
}

// moduleOf is the module a Go symbol belongs to, for the figures: the standard library as
// "std", this module (cmd/agent's package main included) as "calico-prep", else the module
// path's first elements (k8s.io/apimachinery, github.com/godbus/dbus). Generated equality and
// hash functions (type:.eq.T) and itabs (go:itab.T,I) count for their type's package; other
// go: and type: symbols for "(linker)".
func moduleOf(sym string) string {
	s := sym
	for _, p := range []string{"type:.eq.", "type:.hash.", "go:itab."} {
		if rest, ok := strings.CutPrefix(s, p); ok {
			s = rest
			break
		}
	}
	s = strings.TrimLeft(s, "*[]")
	if i := strings.IndexByte(s, ','); i >= 0 && strings.HasPrefix(sym, "go:itab.") {
		s = s[:i] // the type; the interface follows
	}
	if strings.HasPrefix(s, "go:") || strings.HasPrefix(s, "type:") || !strings.Contains(s, ".") {
		return "(linker)"
	}
	// The package path ends at the first dot after its last slash; generic arguments and
	// method receivers come later.
	if i := strings.IndexAny(s, "[("); i >= 0 {
		s = s[:i]
	}
	pkg := s
	if i := strings.LastIndex(s, "/"); i >= 0 {
		if j := strings.Index(s[i:], "."); j >= 0 {
			pkg = s[:i+j]
		}
	} else if j := strings.Index(s, "."); j >= 0 {
		pkg = s[:j]
	}
	elems := strings.Split(pkg, "/")
	switch {
	case pkg == "main" || strings.HasPrefix(pkg, "github.com/calico-prep/calico-prep"):
		return "calico-prep"
	case !strings.Contains(elems[0], "."):
		return "std"
	case elems[0] == "github.com" || elems[0] == "golang.org" || elems[0] == "gopkg.in":
		return strings.Join(elems[:min(3, len(elems))], "/")
	default:
		return strings.Join(elems[:min(2, len(elems))], "/")
	}
}

// The module of a symbol: its package path's, whatever prefix, receiver or generic arguments
// come with it.
func TestModuleOf(t *testing.T) {
	for sym, want := range map[string]string{
		"runtime.mallocgc":        "std",
		"crypto/tls.(*Conn).Read": "std",
		"slices.SortFunc[go.shape.[]uint8,go.shape.func(k8s.io/apimachinery/pkg/util.X)]": "std",
		"k8s.io/apimachinery/pkg/util/runtime.HandleError":                                "k8s.io/apimachinery",
		"github.com/godbus/dbus/v5.(*Conn).Send":                                          "github.com/godbus/dbus",
		"github.com/calico-prep/calico-prep/pkg/agent.(*Agent).Run":                       "calico-prep",
		"main.run":          "calico-prep",
		"main.(*flags).Set": "calico-prep",
		"google.golang.org/protobuf/internal/impl.init":               "google.golang.org/protobuf",
		"type:.eq.k8s.io/api/core/v1.NodeStatus":                      "k8s.io/api",
		"type:.eq.github.com/calico-prep/calico-prep/pkg/check.Entry": "calico-prep",
		"type:.hash.crypto/tls.sessionState":                          "std",
		"go:itab.*os.File,k8s.io/apimachinery/pkg/watch.Interface":    "std",
		"go:itab.*k8s.io/client-go/rest.Request,io.Reader":            "k8s.io/client-go",
		"go:string.*":  "(linker)",
		"type:*":       "(linker)",
		"go:func.*":    "(linker)",
		"runtime.text": "std",
	} {
		if got := moduleOf(sym); got != want {
			t.Errorf("moduleOf(%q) = %q, want %q", sym, got, want)
		}
	}
}

// buildSymbolTwin builds cmd/agent as buildAgent does but keeps the symbol table, for
// measureResidency.
func buildSymbolTwin(t testing.TB) string {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "agent-syms")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-X main.version=e2e", "-o", bin, "./cmd/agent")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the agent with symbols: %v\n%s", err, out)
	}
	return bin
}

// print writes the figures to w: every section, then the modules holding the most resident
// text and rodata. (A benchmark's own log keeps only its first ten lines.)
func (r residency) print(w io.Writer, top int) {
	const kib = 1024
	var b strings.Builder
	fmt.Fprintf(&b, "resident pages of the binary by section (KiB resident / size):\n")
	for _, s := range r.sections {
		fmt.Fprintf(&b, "  %-14s %6d / %6d\n", s.name, s.resident/kib, s.size/kib)
	}
	fmt.Fprintf(&b, "resident text+rodata by module (KiB):\n")
	for i, m := range r.modules {
		if i == top {
			var rest int64
			for _, m := range r.modules[top:] {
				rest += m.resident
			}
			fmt.Fprintf(&b, "  %6d  %d more modules\n", rest/kib, len(r.modules)-top)
			break
		}
		fmt.Fprintf(&b, "  %6d  %s\n", m.resident/kib, m.name)
	}
	fmt.Fprintf(&b, "  %6d  (no symbol)\n", r.unattributed/kib)
	_, _ = io.WriteString(w, b.String())
}

func (r residency) section(name string) int64 {
	for _, s := range r.sections {
		if s.name == name {
			return s.resident
		}
	}
	return 0
}
