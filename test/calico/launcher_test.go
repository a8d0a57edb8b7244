//go:build calico

package calico

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/calico-prep/calico-prep/test/testbed"
)

// TestLauncherRefusesHostNamespaces runs the container launcher outside a node: in the host's
// mount namespace, in the host's network namespace, and in a network namespace that is not the
// node's. Each time it must refuse before its first mount and never run the command.
func TestLauncherRefusesHostNamespaces(t *testing.T) {
	hostNet, err := testbed.HostNamespaces("net")
	if err != nil {
		t.Fatal(err)
	}
	hostMnt, err := testbed.HostNamespaces("mnt")
	if err != nil {
		t.Fatal(err)
	}
	private := []string{"unshare", "--mount", "--propagation", "private", "--"}
	tests := []struct {
		name    string
		prefix  []string
		refused string
	}{
		{"host mount and network namespace", nil, "host mount namespace"},
		{"host network namespace", private, "host network namespace"},
		{"another network namespace", append([]string{"unshare", "--net", "--"}, private...), "not the node's"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tmp := t.TempDir()
			marker := filepath.Join(tmp, "ran")
			// Should the check ever break, stand-ins record the attempts instead of mounting
			// or renaming anything on the host.
			for _, cmd := range []string{"mount", "hostname"} {
				stub := "#!/bin/sh\necho " + cmd + " \"$@\" >> " + filepath.Join(tmp, "tried") + "\nexit 1\n"
				if err := os.WriteFile(filepath.Join(tmp, cmd), []byte(stub), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			// The node's namespace inode is one no namespace has.
			argv := append(tc.prefix, "/bin/sh", "-c", launchScript, "calico-launch", "1", joinInodes(hostNet), joinInodes(hostMnt),
				"node", filepath.Join(tmp, "root"), "", filepath.Join(tmp, "state"), "/bin/true", "--", "touch", marker)
			cmd := exec.CommandContext(t.Context(), argv[0], argv[1:]...)
			cmd.Env = append(os.Environ(), "PATH="+tmp+":/usr/sbin:/usr/bin:/sbin:/bin")
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 97 || !strings.Contains(string(out), tc.refused) {
				t.Errorf("launcher = %v, %s; want exit 97 naming %q", err, out, tc.refused)
			}
			if _, err := os.Stat(marker); err == nil {
				t.Error("the launcher ran the command although it refused")
			}
			if tried, err := os.ReadFile(filepath.Join(tmp, "tried")); err == nil {
				t.Errorf("the launcher tried before refusing: %s", tried)
			}
		})
	}
}
