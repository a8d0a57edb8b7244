package testbed

// What packages that build on nodes (test/cluster) need of the namespaces and the guard.

// LANNetNS is the path of the namespace on the uplink's far side, which holds Gateway.
func (n *Node) LANNetNS() string { return n.lanNS() }

// NetNSInode is the inode of the node's network namespace, what launchers compare against
// right before exec.
func (n *Node) NetNSInode() uint64 { return n.netnsIno }

// HostNamespaces are the inodes of the namespaces of kind ("net", "mnt") that count as the
// host's; a launcher refuses to start anything in them.
func HostNamespaces(kind string) (map[uint64]bool, error) { return hostNamespaces(kind) }

// NamespaceInode is the inode of a namespace file (e.g. /proc/PID/ns/mnt), which must be on nsfs.
func NamespaceInode(path string) (uint64, error) { return nsInode(path) }
