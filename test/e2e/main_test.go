package e2e

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/calico-prep/calico-prep/test/kubetest"
)

// kube is the apiserver the tests share; the outage test takes one of its own.
var kube kubetest.Shared

// agentBin is the agent binary TestMain builds, or the one -agent names.
var agentBin string

var agentFlag = flag.String("agent", "", "run this agent binary instead of building cmd/agent (to measure a variant)")

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	flag.Parse()
	agentBin = *agentFlag
	if agentBin == "" {
		dir, err := os.MkdirTemp("", "calico-prep-e2e-")
		if err != nil {
			fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
			return 1
		}
		defer os.RemoveAll(dir)
		if agentBin, err = buildAgent(dir); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
			return 1
		}
	}
	return kube.Run(m)
}

// buildAgent builds cmd/agent into dir with the Makefile's build command (its GOBUILD line):
// a static, stripped binary, so that footprint figures are those of what ships.
func buildAgent(dir string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "agent")
	// go test puts its own toolchain's bin directory first in PATH.
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version=e2e", "-o", bin, "./cmd/agent")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("build the agent: %w\n%s", err, out.String())
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
