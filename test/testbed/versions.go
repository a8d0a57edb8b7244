package testbed

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"

	"github.com/calico-prep/calico-prep/test/testkit"
)

// The version matrix: hack/test.sh runs the real-component tests once per entry with these set,
// so that every node a test starts runs that firewalld or NetworkManager. Options win over them.
const (
	// EnvFirewalld names an upstream firewalld release to run in place of Debian's package.
	EnvFirewalld = "CALICO_PREP_TESTBED_FIREWALLD"
	// EnvNetworkManager names an upstream NetworkManager release to run in place of Debian's.
	EnvNetworkManager = "CALICO_PREP_TESTBED_NETWORKMANAGER"
	// EnvFirewalldBackend is firewalld's FirewallBackend: nftables (the default) or iptables.
	EnvFirewalldBackend = "CALICO_PREP_TESTBED_FIREWALLD_BACKEND"
)

// Debian is the version value meaning Debian's own package.
const Debian = "debian"

var versionRE = regexp.MustCompile(`^[0-9]+(\.[0-9]+)+$`)

// withEnv fills the daemon variants the options leave empty from the environment.
func (o Options) withEnv(getenv func(string) string) Options {
	if o.FirewalldVersion == "" {
		o.FirewalldVersion = getenv(EnvFirewalld)
	}
	if o.NetworkManagerVersion == "" {
		o.NetworkManagerVersion = getenv(EnvNetworkManager)
	}
	if o.FirewalldBackend == "" {
		o.FirewalldBackend = getenv(EnvFirewalldBackend)
	}
	return o
}

func (o Options) variantDefaults() (Options, error) {
	if o.FirewalldBackend == "" {
		o.FirewalldBackend = "nftables"
	}
	if o.FirewalldBackend != "nftables" && o.FirewalldBackend != "iptables" {
		return o, fmt.Errorf("invalid Options.FirewalldBackend %q: want nftables or iptables", o.FirewalldBackend)
	}
	for _, v := range []struct {
		field string
		value *string
	}{{"FirewalldVersion", &o.FirewalldVersion}, {"NetworkManagerVersion", &o.NetworkManagerVersion}} {
		if *v.value == "" {
			*v.value = Debian
		}
		if *v.value != Debian && !versionRE.MatchString(*v.value) {
			return o, fmt.Errorf("invalid Options.%s %q: want a release such as 1.3.4, or %q", v.field, *v.value, Debian)
		}
	}
	return o, nil
}

// upstream builds (once, into the cache) and returns the tree of an upstream release.
var upstreamOnce sync.Map // component+version → func() (string, error)

func upstreamTree(component, version string) (string, error) {
	f, _ := upstreamOnce.LoadOrStore(component+"-"+version, sync.OnceValues(func() (string, error) {
		return buildUpstream(component, version)
	}))
	return f.(func() (string, error))()
}

// buildUpstream runs hack/build-upstream.sh of the repository holding the working directory.
func buildUpstream(component, version string) (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find repository root: %w", err)
	}
	script := ""
	for dir := wd; ; dir = filepath.Dir(dir) {
		if c := filepath.Join(dir, "hack", "build-upstream.sh"); fileExists(c) {
			script = c
			break
		}
		if dir == filepath.Dir(dir) {
			return "", fmt.Errorf("find hack/build-upstream.sh above %q: not found", wd)
		}
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(script, component, version)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("build %s %s: %w; last output:\n%s", component, version, err, testkit.LastLines(stderr.String(), 30))
	}
	return strings.TrimSpace(stdout.String()), nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// firewalldExtra is what firewalld of the node's version needs: for an upstream build, its
// Python package, helpers and script over Debian's, and its packaged /etc/firewalld content
// (firewalld.conf stays the test bed's).
func (n *Node) firewalldExtra() (launchExtra, []string, error) {
	args := []string{"--log-target=console"}
	v := n.opts.FirewalldVersion
	if v == Debian {
		return launchExtra{}, args, nil
	}
	if strings.HasPrefix(v, "0.") {
		// 0.9 has no --log-target; its log file would otherwise be the host's /var/log/firewalld.
		args = []string{"--log-file=/dev/stderr"}
	}
	tree, err := upstreamTree("firewalld", v)
	if err != nil {
		return launchExtra{}, nil, err
	}
	pp, err := os.ReadFile(filepath.Join(tree, ".pythonpath"))
	if err != nil {
		return launchExtra{}, nil, fmt.Errorf("firewalld %s build: %w", v, err)
	}
	site := filepath.Join(tree, strings.TrimSpace(string(pp)))
	debianPkg, err := debianFirewallPackage()
	if err != nil {
		return launchExtra{}, nil, err
	}
	if err := copyTree(filepath.Join(tree, "etc", "firewalld"), n.FirewalldDir, "firewalld.conf"); err != nil {
		return launchExtra{}, nil, fmt.Errorf("firewalld %s: %w", v, err)
	}
	return launchExtra{
		env: []string{"PYTHONPATH=" + site},
		binds: map[string]string{
			"/usr/sbin/firewalld": filepath.Join(tree, "usr", "sbin", "firewalld"),
			"/usr/lib/firewalld":  filepath.Join(tree, "usr", "lib", "firewalld"),
			debianPkg:             filepath.Join(site, "firewall"),
		},
	}, args, nil
}

// debianFirewallPackage is where Debian's firewalld keeps its Python package.
func debianFirewallPackage() (string, error) {
	const p = "/usr/lib/python3/dist-packages/firewall"
	if !fileExists(p) {
		return "", fmt.Errorf("debian's firewalld Python package %q is missing: install firewalld (hack/install-deps.sh)", p)
	}
	return p, nil
}

// networkManagerExtra is what NetworkManager of the node's version needs: for an upstream
// build, its daemon, helpers and device plugins over Debian's.
func (n *Node) networkManagerExtra() (launchExtra, error) {
	v := n.opts.NetworkManagerVersion
	if v == Debian {
		return launchExtra{}, nil
	}
	tree, err := upstreamTree("NetworkManager", v)
	if err != nil {
		return launchExtra{}, err
	}
	binds := map[string]string{
		"/usr/sbin/NetworkManager": filepath.Join(tree, "usr", "sbin", "NetworkManager"),
		"/usr/libexec":             filepath.Join(tree, "usr", "libexec"),
	}
	// Plugins live in <libdir>/NetworkManager/<version>; the build's libdir is Debian's
	// multiarch one, which Debian's package uses too.
	plugins, _ := filepath.Glob(filepath.Join(tree, "usr", "lib", "*", "NetworkManager"))
	for _, p := range plugins {
		rel, _ := filepath.Rel(tree, p)
		if target := "/" + rel; fileExists(target) {
			binds[target] = p
		}
	}
	return launchExtra{binds: binds}, nil
}

// copyTree copies the regular files under src into dst, keeping dst's files of the same name
// and leaving out skip.
func copyTree(src, dst, skip string) error {
	return filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if rel == skip || fileExists(target) || !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
}
