//go:build calico

package calico

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/calico-prep/calico-prep/test/kubetest"
	"github.com/calico-prep/calico-prep/test/testkit"
)

var (
	kube kubetest.Shared
	// build is hack/build-calico.sh's output; agentBin the agent built for this run.
	build    calicoBuild
	agentBin string
	// pivotRoot is the helper that starts a container in its root (./pivotroot).
	pivotRoot string
	// upstream holds Calico's release manifests (calico.yaml).
	upstream string
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	root, err := moduleRoot()
	if err == nil {
		build, err = buildCalico(root)
	}
	var dir string
	if err == nil {
		dir, err = os.MkdirTemp("", "calico-prep-calico-")
	}
	if err == nil {
		defer os.RemoveAll(dir)
		agentBin, err = buildAgent(root, dir)
	}
	if err == nil {
		pivotRoot, err = buildGo(root, dir, "./test/calico/pivotroot")
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "calico: %v\n", err)
		return 1
	}
	upstream = os.Getenv("CALICO_PREP_UPSTREAM")
	if upstream == "" {
		upstream = filepath.Join(root, "..", "shared", "upstream")
	}
	upstream = filepath.Join(upstream, "calico-"+build.version)
	return kube.Run(m)
}

// calicoBuild is what hack/build-calico.sh made: binaries and one root filesystem per image.
type calicoBuild struct {
	dir     string
	version string
	images  map[string]image // by image name, e.g. quay.io/calico/node:v3.32.1
}

// image is a root filesystem with the OCI image configuration a runtime would apply.
type image struct {
	rootfs string
	config struct {
		Env        []string
		Entrypoint []string
		Cmd        []string
		WorkingDir string
		User       string
	}
}

func buildCalico(root string) (calicoBuild, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(filepath.Join(root, "hack", "build-calico.sh"))
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return calicoBuild{}, fmt.Errorf("hack/build-calico.sh: %w\n%s", err, testkit.LastLines(stderr.String(), 30))
	}
	b := calicoBuild{dir: strings.TrimSpace(stdout.String()), images: map[string]image{}}
	b.version = strings.TrimPrefix(filepath.Base(b.dir), "calico-")
	for _, name := range []string{"node", "cni", "kube-controllers"} {
		raw, err := os.ReadFile(filepath.Join(b.dir, "rootfs", name+".json"))
		if err != nil {
			return b, err
		}
		var desc struct {
			Name   string          `json:"name"`
			Config json.RawMessage `json:"config"`
		}
		if err := json.Unmarshal(raw, &desc); err != nil {
			return b, fmt.Errorf("decode %s.json: %w", name, err)
		}
		img := image{rootfs: filepath.Join(b.dir, "rootfs", name)}
		if err := json.Unmarshal(desc.Config, &img.config); err != nil {
			return b, fmt.Errorf("decode %s.json config: %w", name, err)
		}
		b.images[desc.Name] = img
	}
	return b, nil
}

// buildAgent builds cmd/agent with the Makefile's build command.
func buildAgent(root, dir string) (string, error) {
	return buildGo(root, dir, "./cmd/agent", "-ldflags", "-s -w -X main.version=calico-e2e")
}

// buildGo builds a static binary of the module's package pkg into dir.
func buildGo(root, dir, pkg string, flags ...string) (string, error) {
	bin := filepath.Join(dir, filepath.Base(pkg))
	args := append(append([]string{"build", "-trimpath"}, flags...), "-o", bin, pkg)
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build %s: %w\n%s", pkg, err, out)
	}
	return bin, nil
}

func moduleRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		if dir == filepath.Dir(dir) {
			return "", errors.New("find the module root: no go.mod above " + wd)
		}
	}
}
