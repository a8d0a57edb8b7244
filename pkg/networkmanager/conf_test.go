package networkmanager

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/calico-prep/calico-prep/pkg/calico"

	"github.com/calico-prep/calico-prep/pkg/check"
	"github.com/calico-prep/calico-prep/pkg/config"
)

func TestParseConf(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		want     []specOp
		disabled bool
		wantErr  string
	}{
		{name: "assignment", in: "[keyfile]\nunmanaged-devices=interface-name:cali*\n", want: []specOp{{'=', "interface-name:cali*", 2}}},
		{name: "append and remove", in: "[keyfile]\nunmanaged-devices+=a\nunmanaged-devices-=b\n", want: []specOp{{'+', "a", 2}, {'-', "b", 3}}},
		{name: "blanks around the equals sign", in: "[keyfile]\n  unmanaged-devices  =   a;b  \n", want: []specOp{{'=', "a;b  ", 2}}},
		{name: "a blank before += makes another key", in: "[keyfile]\nunmanaged-devices +=a\n"},
		{name: "other groups do not count", in: "[main]\nunmanaged-devices=a\n[device]\nmatch-device=interface-name:cali*\nmanaged=1\n"},
		{name: "comments and CRLF", in: "# c\r\n\r\n[keyfile]\r\n# unmanaged-devices=x\r\nunmanaged-devices=a\r\n", want: []specOp{{'=', "a", 5}}},
		{name: "a repeated key carries its last value", in: "[keyfile]\nunmanaged-devices=a\nunmanaged-devices+=b\nunmanaged-devices=c\n",
			want: []specOp{{'=', "c", 4}, {'+', "b", 3}, {'=', "c", 4}}},
		{name: "sections of the same name merge", in: "[keyfile]\nunmanaged-devices=a\n[main]\n[keyfile]\nunmanaged-devices+=b\n", want: []specOp{{'=', "a", 2}, {'+', "b", 5}}},
		{name: "locale variants are other keys", in: "[keyfile]\nunmanaged-devices[de]=a\n"},
		{name: "enable=false disables the file", in: "[config]\nenable=false\n[keyfile]\nunmanaged-devices=a\n", want: []specOp{{'=', "a", 4}}, disabled: true},
		{name: "enable as version match counts as enabled", in: "[config]\nenable=nm-version-min:1.40\n[keyfile]\nunmanaged-devices=a\n", want: []specOp{{'=', "a", 4}}},
		{name: "group with trailing blanks", in: "[keyfile]  \nunmanaged-devices=a\n", want: []specOp{{'=', "a", 2}}},
		{name: "key before any group", in: "unmanaged-devices=a\n", wantErr: `line 1: "unmanaged-devices=a" comes before the first [group]`},
		{name: "not a key value pair", in: "[keyfile]\nhello\n", wantErr: `line 2: "hello" is not a group, key=value pair or comment`},
		{name: "bad group", in: "[keyfile\n", wantErr: `line 1: invalid group "[keyfile"`},
		{name: "empty group", in: "[]\n", wantErr: `line 1: invalid group "[]"`},
		{name: "text after group", in: "[keyfile] x\n", wantErr: `invalid group "[keyfile] x"`},
		{name: "empty key", in: "[keyfile]\n=a\n", wantErr: `line 2: invalid key ""`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := parseConf("/x/test.conf", []byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "/x/test.conf") {
					t.Fatalf("error %v, want one naming /x/test.conf and containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(f.ops, tt.want) || f.disabled != tt.disabled {
				t.Fatalf("ops %+v disabled %v, want %+v disabled %v", f.ops, f.disabled, tt.want, tt.disabled)
			}
		})
	}
}

func TestMerge(t *testing.T) {
	parse := func(name, text string) confFile {
		f, err := parseConf(name, []byte(text))
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	tests := []struct {
		name  string
		files []confFile
		want  []specEntry
	}{
		{name: "append keeps what was set before", files: []confFile{
			parse("a", "[keyfile]\nunmanaged-devices=interface-name:docker*\n"),
			parse("b", "[keyfile]\nunmanaged-devices+=interface-name:cali*;interface-name:docker*\n"),
		}, want: []specEntry{{"interface-name:docker*", "a"}, {"interface-name:cali*", "b"}}},
		{name: "assignment replaces", files: []confFile{
			parse("a", "[keyfile]\nunmanaged-devices+=interface-name:cali*\n"),
			parse("b", "[keyfile]\nunmanaged-devices=interface-name:docker*\n"),
		}, want: []specEntry{{"interface-name:docker*", "b"}}},
		{name: "removal drops exact specs only", files: []confFile{
			parse("a", "[keyfile]\nunmanaged-devices=interface-name:cali*;interface-name:tunl*\n"),
			parse("b", "[keyfile]\nunmanaged-devices-=interface-name:cali*;interface-name:tunl0\n"),
		}, want: []specEntry{{"interface-name:tunl*", "a"}}},
		{name: "a disabled file does nothing", files: []confFile{
			parse("a", "[keyfile]\nunmanaged-devices=x\n"),
			parse("b", "[config]\nenable=no\n[keyfile]\nunmanaged-devices=y\n"),
		}, want: []specEntry{{"x", "a"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var cur []specEntry
			for _, f := range tt.files {
				cur = merge(cur, f)
			}
			if !reflect.DeepEqual(cur, tt.want) {
				t.Fatalf("merged %+v, want %+v", cur, tt.want)
			}
		})
	}
}

func TestDropInContent(t *testing.T) {
	got := string(dropIn(calico.UnmanagedGlobs()))
	want := "unmanaged-devices+=interface-name:cali*;interface-name:tunl*;interface-name:vxlan.calico;" +
		"interface-name:vxlan-v6.calico;interface-name:wireguard.cali;interface-name:wg-v6.cali\n"
	if !strings.HasPrefix(got, ownHeader) || !strings.Contains(got, "\n[keyfile]\n") || !strings.HasSuffix(got, want) {
		t.Fatalf("drop-in:\n%s", got)
	}
	f, err := parseConf(ownFile, []byte(got))
	if err != nil {
		t.Fatal(err)
	}
	res := evaluate([]confFile{f}, calico.UnmanagedGlobs())
	for _, r := range res {
		if !r.covered {
			t.Errorf("own drop-in does not cover %s", r.pattern)
		}
	}
}

func TestPatterns(t *testing.T) {
	got, err := Patterns([]string{"interface-name:flannel*", "cali*", "bpf*"})
	if err != nil {
		t.Fatal(err)
	}
	want := append(append([]string(nil), calico.UnmanagedGlobs()...), "flannel*", "bpf*")
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Patterns = %q, want %q", got, want)
	}
	for _, bad := range []string{"a;b", "a,b", "a b", `a\b`, "=eth0", ""} {
		if _, err := Patterns([]string{bad}); err == nil || !strings.Contains(err.Error(), "invalid interface name pattern") {
			t.Errorf("Patterns(%q) error %v", bad, err)
		}
	}
}

// copyScenario copies testdata/conf/<name> (lib, run, etc/NetworkManager.conf, etc/conf.d)
// into a fresh directory and returns its options.
func copyScenario(t *testing.T, name string) Options {
	t.Helper()
	root := t.TempDir()
	src := filepath.Join("testdata", "conf", name)
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		dst := filepath.Join(root, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"lib", "run", "etc/conf.d"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return Options{
		Mode:           config.ModeOn,
		ConfDir:        filepath.Join(root, "etc", "conf.d"),
		SystemConfDirs: []string{filepath.Join(root, "lib"), filepath.Join(root, "run")},
	}
}

// snapshot maps every file under dir, except calico-prep's drop-in, to its content.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() == ownFile {
			return err
		}
		data, err := os.ReadFile(p)
		out[p] = string(data)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestDropInScenarios runs the drop-in check without NetworkManager (mode on, no bus): the
// file logic, conflicts reported by file name, and operators' files left byte for byte.
func TestDropInScenarios(t *testing.T) {
	tests := []struct {
		scenario string
		before   string // reason before a reconcile pass
		after    string // reason after it
		writes   bool
		mention  []string // in the message before the pass
	}{
		{scenario: "empty", before: "DropInMissing", after: "Satisfied", writes: true, mention: []string{"would write", "calico-prep.conf"}},
		{scenario: "calico-docs", before: "Satisfied", after: "Satisfied", mention: []string{"already unmanaged by calico.conf"}},
		{scenario: "kubespray", before: "DropInMissing", after: "Satisfied", writes: true},
		{scenario: "later-override", before: "OperatorConfigConflict", after: "OperatorConfigConflict", writes: true,
			mention: []string{"cali*, tunl*, vxlan.calico, vxlan-v6.calico, wireguard.cali, wg-v6.cali managed again: zz-docker.conf line 3 replaces unmanaged-devices", "would write"}},
		{scenario: "remove", before: "OperatorConfigConflict", after: "OperatorConfigConflict", writes: true,
			mention: []string{"cali* managed again: zz-manage-cali.conf line 2 removes it"}},
		{scenario: "except", before: "OperatorConfigConflict", after: "OperatorConfigConflict", writes: true,
			mention: []string{`cali* managed again: 10-eth.conf excepts it with "except:interface-name:cali0*"`}},
		{scenario: "device-managed", before: "DropInMissing", after: "Satisfied", writes: true},
		{scenario: "disabled", before: "DropInMissing", after: "Satisfied", writes: true},
		{scenario: "invalid", before: "OperatorConfigInvalid", after: "OperatorConfigInvalid", writes: true,
			mention: []string{"50-broken.conf", "line 3"}},
		{scenario: "earlier-kept", before: "DropInMissing", after: "Satisfied", writes: true},
		{scenario: "shadowed", before: "DropInMissing", after: "Satisfied", writes: true},
		{scenario: "main-file", before: "Satisfied", after: "Satisfied", mention: []string{"already unmanaged by NetworkManager.conf"}},
		{scenario: "doubtful", before: "DropInMissing", after: "Satisfied", writes: true, mention: []string{`"except:type:veth" in 05-veth.conf may except Calico devices`}},
	}
	for _, tt := range tests {
		t.Run(tt.scenario, func(t *testing.T) {
			opts := copyScenario(t, tt.scenario)
			root := filepath.Dir(filepath.Dir(opts.ConfDir))
			operator := snapshot(t, root)
			checks := Checks(nil, opts)
			ctx := context.Background()
			first := checks[0].Verify(ctx)
			t.Logf("before: %s: %s", first.Reason, first.Message)
			if first.Reason != tt.before {
				t.Fatalf("before: %s %s: %s, want reason %s", first.Status, first.Reason, first.Message, tt.before)
			}
			for _, m := range tt.mention {
				if !strings.Contains(first.Message, m) {
					t.Errorf("message %q does not mention %q", first.Message, m)
				}
			}
			rep := (&check.Runner{Mode: check.Reconcile}).Run(ctx, checks[:1])
			e := rep.Entries[0]
			if e.Reason != tt.after || e.ApplyError != "" {
				t.Fatalf("after: %s %s: %s (apply error %q), want reason %s", e.Status, e.Reason, e.Message, e.ApplyError, tt.after)
			}
			_, err := os.Stat(filepath.Join(opts.ConfDir, ownFile))
			if written := err == nil; written != tt.writes {
				t.Fatalf("drop-in written = %v, want %v", written, tt.writes)
			}
			if got := snapshot(t, root); !reflect.DeepEqual(got, operator) {
				t.Fatalf("operator files changed:\n%v\nwant\n%v", got, operator)
			}
			if err := Cleanup(ctx, nil, opts.ConfDir); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(opts.ConfDir, ownFile)); !os.IsNotExist(err) {
				t.Fatalf("drop-in still there after cleanup: %v", err)
			}
			if got := snapshot(t, root); !reflect.DeepEqual(got, operator) {
				t.Fatalf("operator files changed by cleanup")
			}
		})
	}
}

func TestDropInSecondPassWritesNothing(t *testing.T) {
	opts := copyScenario(t, "empty")
	opts.ExtraPatterns = []string{"flannel*"}
	ctx := context.Background()
	checks := Checks(nil, opts)
	rep := (&check.Runner{Mode: check.Reconcile}).Run(ctx, checks)
	if e := rep.Entries[0]; !e.Applied || e.Status != check.Pass {
		t.Fatalf("first pass: %+v", e)
	}
	path := filepath.Join(opts.ConfDir, ownFile)
	st1, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st1.Mode().Perm() != 0o644 {
		t.Fatalf("drop-in mode %v, want 0644", st1.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	if !strings.Contains(string(data), "interface-name:flannel*\n") {
		t.Fatalf("extra pattern missing:\n%s", data)
	}
	rep = (&check.Runner{Mode: check.Reconcile}).Run(ctx, checks)
	if e := rep.Entries[0]; e.Applied || e.Status != check.Pass {
		t.Fatalf("second pass: %+v", e)
	}
	st2, _ := os.Stat(path)
	if !st2.ModTime().Equal(st1.ModTime()) || !os.SameFile(st1, st2) {
		t.Fatalf("second pass rewrote the drop-in")
	}
	// A changed pattern list rewrites it; a changed mode too.
	opts.ExtraPatterns = nil
	if r := Checks(nil, opts)[0].Verify(ctx); r.Reason != "DropInOutdated" {
		t.Fatalf("after dropping an extra pattern: %+v", r)
	}
}

func TestForeignFileOfOurName(t *testing.T) {
	opts := copyScenario(t, "empty")
	path := filepath.Join(opts.ConfDir, ownFile)
	if err := os.WriteFile(path, []byte("[keyfile]\nunmanaged-devices=interface-name:x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := Checks(nil, opts)[0]
	if r := c.Verify(context.Background()); r.Reason != "DropInNotOurs" || !strings.Contains(r.Message, path) {
		t.Fatalf("verify: %+v", r)
	}
	if err := c.Apply(context.Background()); err == nil || !strings.Contains(err.Error(), "not written by calico-prep") {
		t.Fatalf("apply: %v, want a refusal", err)
	}
	err := Cleanup(context.Background(), nil, opts.ConfDir)
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "not written by calico-prep") {
		t.Fatalf("error %v, want a refusal naming %s", err, path)
	}
	if data, _ := os.ReadFile(path); string(data) != "[keyfile]\nunmanaged-devices=interface-name:x\n" {
		t.Fatalf("foreign file changed: %q", data)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("foreign file removed: %v", err)
	}
}

func TestUplinkGuard(t *testing.T) {
	opts := copyScenario(t, "empty")
	opts.ExtraPatterns = []string{"ens*"}
	opts.Protected = func() []string { return []string{"ens33"} }
	c := Checks(nil, opts)[0]
	r := c.Verify(context.Background())
	if r.Reason != "PatternMatchesUplink" || !strings.Contains(r.Message, `"ens*" matches ens33`) {
		t.Fatalf("verify: %+v", r)
	}
	if err := c.Apply(context.Background()); err == nil {
		t.Fatal("apply wrote a drop-in that unmanages the uplink")
	}
	if _, err := os.Stat(filepath.Join(opts.ConfDir, ownFile)); !os.IsNotExist(err) {
		t.Fatalf("drop-in written: %v", err)
	}
}

func TestModes(t *testing.T) {
	opts := copyScenario(t, "empty")
	tests := []struct {
		mode          config.Mode
		dropIn, devs  check.Status
		reasonDevices string
	}{
		{mode: config.ModeOff, dropIn: check.NotApplicable, devs: check.NotApplicable, reasonDevices: "NetworkManagerOff"},
		{mode: config.ModeAuto, dropIn: check.NotApplicable, devs: check.NotApplicable, reasonDevices: "NetworkManagerNotRunning"},
		{mode: config.ModeOn, dropIn: check.Fail, devs: check.Fail, reasonDevices: "NetworkManagerNotRunning"},
	}
	for _, tt := range tests {
		t.Run(string(tt.mode), func(t *testing.T) {
			opts.Mode = tt.mode
			cs := Checks(nil, opts)
			d, u := cs[0].Verify(context.Background()), cs[1].Verify(context.Background())
			if d.Status != tt.dropIn || u.Status != tt.devs || u.Reason != tt.reasonDevices {
				t.Fatalf("drop-in %+v, devices %+v", d, u)
			}
			if tt.mode != config.ModeOn {
				if err := cs[0].Apply(context.Background()); err != nil {
					t.Fatal(err)
				}
				if _, err := os.Stat(filepath.Join(opts.ConfDir, ownFile)); !os.IsNotExist(err) {
					t.Fatalf("mode %s wrote the drop-in", tt.mode)
				}
			}
		})
	}
}
