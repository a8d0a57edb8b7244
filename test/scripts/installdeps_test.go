// Package scripts tests the shell scripts under hack/ with stand-ins for the system tools they
// call, so their logic runs on every CI run without touching the machine's packages.
package scripts

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// repoRoot is the module root, two levels above this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Stand-ins for dpkg-query and apt-get. State lives in $STATE: a package is installed unless its
// name is a line of $STATE/missing; apt-get logs each call and, for install, records whether
// policy-rc.d existed and exited 101 at that moment, then marks the packages installed.
const dpkgQuery = `#!/bin/sh
# dpkg-query -W -f=FORMAT PACKAGE
for pkg; do :; done
if grep -qx "$pkg" "$STATE/missing" 2>/dev/null; then
  echo "dpkg-query: no packages found matching $pkg" >&2
  exit 1
fi
printf 'install ok installed'
`

const aptGet = `#!/bin/sh
echo "$*" >> "$STATE/apt.log"
case $1 in
update)
  [ ! -e "$STATE/fail-update" ] || exit 100 ;;
install)
  if grep -qx 'exit 101' "$POLICY_RC_D" 2>/dev/null; then echo guarded >> "$STATE/policy.log"; else echo UNGUARDED >> "$STATE/policy.log"; fi
  [ ! -e "$STATE/fail-install" ] || exit 100
  for a; do
    case $a in install|-*) ;; *) grep -vx "$a" "$STATE/missing" > "$STATE/missing.new"; mv "$STATE/missing.new" "$STATE/missing" ;; esac
  done ;;
esac
`

// dockerPolicy is the policy-rc.d Debian container images ship.
const dockerPolicy = "#!/bin/sh\n\n# For most Docker users, \"apt-get install\" only happens during \"docker build\".\n\nexit 101\n"

type installRun struct {
	code         int
	stderr       string
	apt          []string // one line per apt-get call
	policyDuring []string // per install: guarded or UNGUARDED
}

// runInstallDeps runs hack/install-deps.sh with the stand-ins first on PATH.
func runInstallDeps(t *testing.T, state, policy string) installRun {
	t.Helper()
	bin := filepath.Join(state, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{"dpkg-query": dpkgQuery, "apt-get": aptGet} {
		if err := os.WriteFile(filepath.Join(bin, name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("bash", filepath.Join(repoRoot(t), "hack", "install-deps.sh"))
	cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "STATE="+state, "POLICY_RC_D="+policy)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	r := installRun{stderr: stderr.String(), apt: lines(t, filepath.Join(state, "apt.log")),
		policyDuring: lines(t, filepath.Join(state, "policy.log"))}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run install-deps.sh: %v", err)
	}
	return r
}

func lines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

type fileState struct {
	exists  bool
	content string
	mode    os.FileMode
	mtime   time.Time
}

func stat(t *testing.T, path string) fileState {
	t.Helper()
	fi, err := os.Stat(path)
	if os.IsNotExist(err) {
		return fileState{}
	}
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return fileState{exists: true, content: string(b), mode: fi.Mode(), mtime: fi.ModTime()}
}

func TestInstallDeps(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash is not installed")
	}
	old := time.Date(2025, 5, 20, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name    string
		policy  string // content of a pre-existing policy-rc.d; empty: none
		missing []string
		failOn  string // "update" or "install": that apt-get call fails
		// want
		code        int
		installs    bool   // apt-get install ran, with the missing packages, behind the policy
		stderrHas   string // a line the script must print
		policyAfter string // content afterwards; empty: must not exist
	}{
		{name: "nothing missing, no policy", code: 0},
		{name: "nothing missing, policy present", policy: dockerPolicy, code: 0, policyAfter: dockerPolicy},
		{name: "missing, no policy", missing: []string{"firewalld", "shellcheck"}, code: 0, installs: true,
			stderrHas: "installing: firewalld shellcheck"},
		{name: "missing, policy present", policy: dockerPolicy, missing: []string{"network-manager"}, code: 0,
			installs: true, stderrHas: "installing: network-manager", policyAfter: dockerPolicy},
		{name: "missing, policy that lets services start", policy: "#!/bin/sh\nexit 0\n", missing: []string{"firewalld"},
			code: 1, stderrHas: "does not exit 101; refusing", policyAfter: "#!/bin/sh\nexit 0\n"},
		{name: "apt-get update fails", missing: []string{"firewalld"}, failOn: "update", code: 1,
			stderrHas: "apt-get update failed"},
		{name: "apt-get install fails, policy present", policy: dockerPolicy, missing: []string{"firewalld"}, failOn: "install",
			code: 1, installs: true, stderrHas: "apt-get install firewalld failed", policyAfter: dockerPolicy},
	} {
		t.Run(tc.name, func(t *testing.T) {
			state := t.TempDir()
			policy := filepath.Join(state, "policy-rc.d")
			if tc.policy != "" {
				if err := os.WriteFile(policy, []byte(tc.policy), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.Chtimes(policy, old, old); err != nil {
					t.Fatal(err)
				}
			}
			before := stat(t, policy)
			if err := os.WriteFile(filepath.Join(state, "missing"), []byte(strings.Join(tc.missing, "\n")+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			if tc.failOn != "" {
				if err := os.WriteFile(filepath.Join(state, "fail-"+tc.failOn), nil, 0o644); err != nil {
					t.Fatal(err)
				}
			}

			r := runInstallDeps(t, state, policy)

			if r.code != tc.code {
				t.Fatalf("exit status %d, want %d; stderr:\n%s", r.code, tc.code, r.stderr)
			}
			if tc.code != 0 && strings.TrimSpace(r.stderr) == "" {
				t.Error("failed without a word on stderr")
			}
			if tc.stderrHas != "" && !strings.Contains(r.stderr, tc.stderrHas) {
				t.Errorf("stderr does not say %q:\n%s", tc.stderrHas, r.stderr)
			}
			wantInstall := "install -y -qq --no-install-recommends " + strings.Join(tc.missing, " ")
			if got := slices.Contains(r.apt, wantInstall); got != tc.installs {
				t.Errorf("apt-get calls %q; want install of %v: %v", r.apt, tc.missing, tc.installs)
			}
			if len(tc.missing) == 0 && len(r.apt) > 0 {
				t.Errorf("apt-get ran although nothing was missing: %q", r.apt)
			}
			for _, p := range r.policyDuring {
				if p != "guarded" {
					t.Errorf("apt-get install ran without a policy-rc.d that exits 101")
				}
			}
			if tc.code == 0 && len(tc.missing) > 0 {
				if left := lines(t, filepath.Join(state, "missing")); len(left) > 0 && left[0] != "" {
					t.Errorf("still missing after the install: %q", left)
				}
			}
			after := stat(t, policy)
			switch {
			case tc.policyAfter == "" && after.exists:
				t.Errorf("policy-rc.d left behind:\n%s", after.content)
			case tc.policyAfter != "" && after != before:
				t.Errorf("pre-existing policy-rc.d changed: before %+v, after %+v", before, after)
			}
		})
	}
}
