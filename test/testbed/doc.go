// Package testbed gives integration tests a sandboxed node: a fresh network namespace with its
// own links, a private system bus, and optionally real firewalld and real NetworkManager, so the
// agent's D-Bus and netlink code runs against the real thing without touching the host.
//
// A node is made of
//   - a network namespace /run/netns/cpt-<name>-<id> holding lo, the uplink (a veth, default
//     "ens33" with 192.168.79.128/24, whose peer sits in a second namespace "…-lan" that owns
//     the gateway address, the first host of the uplink prefix, and the default route via it);
//   - with Options.Calico: a veth "cali0a1b2c3d4e5" whose peer "eth0" sits in a pod namespace
//     "…-pod0" with a /32 address routed the way Calico does it (MAC ee:ee:ee:ee:ee:ee, proxy
//     ARP, 169.254.1.1 as the pod's gateway with a static neighbour entry), "tunl0" (a real ipip device when the kernel has the driver, else a TUN
//     device of the same name: Node.TunlIsStandIn) and "vxlan.calico" (VNI 4096, UDP 4789);
//   - a private dbus-daemon with a system-bus configuration (default policy of Debian's
//     system.conf plus the service policies in /usr/share/dbus-1/system.d, no bus activation),
//     listening on the path socket in Node.BusAddress;
//   - firewalld (--nofork --nopid, nftables backend) and NetworkManager (--no-daemon), each in
//     the node's network namespace and a private mount namespace in which /run, /etc/firewalld,
//     /etc/NetworkManager, /var/lib/NetworkManager, /etc/resolv.conf and /etc/hostname are bind
//     mounts of the node's Dir, and /sys is a fresh read-only sysfs of the namespace (without
//     udev, NetworkManager manages devices only when /sys is read-only).
//
// NetworkManager manages the cali veth like any veth and, doing so, removes the pod's route:
// the real breakage calico-prep exists to prevent. RestorePodRoutes puts the routes back,
// as Felix would, once the veth is unmanaged.
//
// Everything lives under Node.Dir (/tmp/calico-prep-testbed-<name>-<id>): the daemons'
// configuration (FirewalldDir, NMConfDir), the agent's StateDir, and the daemons' logs in
// Node.LogDir, whose tails are part of every start failure. IP forwarding stays off, as in
// any fresh namespace: tests that forward turn it on.
//
// Safety. Daemons are started by a shell launcher run with nsenter --net and unshare --mount:
// the Go side refuses a namespace whose inode is the host's (PID 1's, when readable, this
// process's, this thread's, the parent's), and the launcher checks again, as its last step
// before exec, that it is in the node's namespace and not in the host's network or mount
// namespace. Teardown signals only the PIDs it started, after checking that they live in the
// node's namespace, and leaves the host as it found it (no namespaces, mounts, processes,
// nftables changes, files).
//
// Two nodes are joined by Connect, a veth pair named peer0 (peer1, …) in each; the firewalld
// default zone covers those links unless a test assigns them elsewhere.
//
// Tests call Up, which fails the test if any real component cannot start and tears the node
// down in t.Cleanup; programs call Start and Down. cmd/testbed wraps Start for scripts.
package testbed
