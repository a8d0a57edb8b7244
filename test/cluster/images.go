package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// BuildImage builds the commands (file in the image → Go package of this repository, e.g.
// "bin/calico-node" → "./test/cluster/cmd/calico-standin") statically for linux/amd64, packs them
// with hack/ocibuild as an image named names and returns the OCI layout tar. links are symbolic
// links to add (path in the image → target).
func (c *Cluster) BuildImage(ctx context.Context, name string, names, entrypoint []string, user string,
	commands map[string]string, links ...[2]string) (string, error) {
	root := filepath.Join(c.Dir, "images", name)
	for file, pkg := range commands {
		out := filepath.Join(root, file)
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out, pkg)
		cmd.Dir = c.repo
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("build %s: %w: %s", pkg, err, bytes.TrimSpace(out))
		}
	}
	for _, l := range links {
		p := filepath.Join(root, l[0])
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return "", err
		}
		if err := os.Symlink(l[1], p); err != nil {
			return "", err
		}
	}
	ep, err := json.Marshal(entrypoint)
	if err != nil {
		return "", err
	}
	tar := filepath.Join(c.Dir, "images", name+".oci.tar")
	args := []string{"-C", filepath.Join(c.repo, "hack", "ocibuild"), "run", ".", "-o", tar,
		"-platform", "linux/amd64=" + root, "-entrypoint", string(ep),
		"-env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	if user != "" {
		args = append(args, "-user", user)
	}
	for _, n := range names {
		args = append(args, "-name", n)
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Env = append(os.Environ(), "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("pack image %s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	return tar, nil
}
