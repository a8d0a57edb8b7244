package testbed

import (
	"context"
	"fmt"
	"path/filepath"
)

// NewNetNS creates an empty network namespace owned by the node (as a pod's sandbox would be),
// named after the node with suffix, with lo up, and returns its path. Down removes it.
func (n *Node) NewNetNS(ctx context.Context, suffix string) (string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.downed {
		return "", fmt.Errorf("create namespace %q: node %s is down", suffix, n.Name)
	}
	path := filepath.Join(netnsDir, fmt.Sprintf("cpt-%s-%s-%s", n.Name, n.id, suffix))
	if err := newNetNS(path); err != nil {
		return "", err
	}
	n.owned = append(n.owned, path)
	if err := ipBatch(ctx, path, "link set lo up"); err != nil {
		return "", fmt.Errorf("bring up lo in %q: %w", path, err)
	}
	return path, nil
}
