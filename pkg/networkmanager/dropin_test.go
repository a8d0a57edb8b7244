package networkmanager

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/calico-prep/calico-prep/test/testkit"

	"github.com/calico-prep/calico-prep/pkg/calico"

	"golang.org/x/sys/unix"

	"github.com/calico-prep/calico-prep/pkg/check"
)

func TestValidateConfDir(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, dir, want string
	}{
		{name: "missing", dir: filepath.Join(dir, "nope"), want: "no such file or directory"},
		{name: "a file", dir: file, want: "not a directory"},
		{name: "relative", dir: "conf.d", want: "not an absolute path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateConfDir(tt.dir)
			if err == nil || !strings.Contains(err.Error(), `"`+tt.dir+`"`) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ValidateConfDir(%q) = %v, want an error naming it and saying %q", tt.dir, err, tt.want)
			}
		})
	}
	if err := ValidateConfDir(dir); err != nil {
		t.Fatalf("ValidateConfDir(%q) = %v", dir, err)
	}
}

// inReadOnlyMount runs fn on a thread of its own in a private mount namespace in which dir is
// covered by an empty read-only tmpfs. Root may write anywhere else, so only a read-only mount
// shows "not writable" honestly. The thread ends with fn; the host's mounts never change.
func inReadOnlyMount(t *testing.T, dir string, fn func()) {
	t.Helper()
	testkit.NeedsRoot(t, "makes a private read-only bind mount")
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the thread dies with this goroutine, and its namespace with it.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
			errc <- err
			return
		}
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			errc <- err
			return
		}
		if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_RDONLY, "size=64k"); err != nil {
			errc <- err
			return
		}
		fn()
		errc <- nil
	}()
	if err := <-errc; err != nil {
		t.Fatalf("private read-only mount on %s: %v", dir, err)
	}
}

func TestReadOnlyConfDir(t *testing.T) {
	opts := copyScenario(t, "empty")
	inReadOnlyMount(t, opts.ConfDir, func() {
		err := ValidateConfDir(opts.ConfDir)
		if err == nil || !strings.Contains(err.Error(), `"`+opts.ConfDir+`"`) || !strings.Contains(err.Error(), "not writable") {
			t.Errorf("ValidateConfDir = %v, want not writable naming %s", err, opts.ConfDir)
		}
		rep := (&check.Runner{Mode: check.Reconcile}).Run(context.Background(), Checks(nil, opts)[:1])
		if e := rep.Entries[0]; e.Status != check.Fail || !strings.Contains(e.ApplyError, opts.ConfDir) {
			t.Errorf("apply on a read-only directory: %+v", e)
		}
		if entries, err := os.ReadDir(opts.ConfDir); err != nil || len(entries) != 0 {
			t.Errorf("read-only directory holds %v (%v), want nothing", entries, err)
		}
	})
	// Outside the private namespace the directory was never touched either.
	if entries, err := os.ReadDir(opts.ConfDir); err != nil || len(entries) != 0 {
		t.Fatalf("conf dir holds %v (%v), want nothing", entries, err)
	}
}

func TestWriteOwnLeavesNoTemporaryFile(t *testing.T) {
	dir := t.TempDir()
	if err := writeOwn(dir, dropIn(calico.UnmanagedGlobs())); err != nil {
		t.Fatal(err)
	}
	if err := writeOwn(dir, dropIn(append(calico.UnmanagedGlobs(), "x*"))); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != ownFile {
		t.Fatalf("directory holds %v, want only %s", entries, ownFile)
	}
	data, _ := os.ReadFile(filepath.Join(dir, ownFile))
	if !strings.Contains(string(data), "interface-name:x*\n") {
		t.Fatalf("second write lost:\n%s", data)
	}
}

func TestMissingConfDir(t *testing.T) {
	opts := copyScenario(t, "empty")
	parent := filepath.Dir(opts.ConfDir)
	opts.ConfDir = filepath.Join(parent, "no-such-conf.d")
	c := Checks(nil, opts)[0]
	if r := c.Verify(context.Background()); r.Status != check.Fail || !strings.Contains(r.Message, `"`+opts.ConfDir+`"`) {
		t.Fatalf("verify: %+v", r)
	}
	if err := c.Apply(context.Background()); err == nil || !strings.Contains(err.Error(), `"`+opts.ConfDir+`"`) {
		t.Fatalf("apply: %v", err)
	}
	if _, err := os.Stat(opts.ConfDir); !os.IsNotExist(err) {
		t.Fatalf("apply created %s: %v", opts.ConfDir, err)
	}
}
