// Package cluster runs a real Kubernetes cluster on the test bed, so the DaemonSet runs the way
// users run it: etcd, kube-apiserver, kube-controller-manager and kube-scheduler on loopback, and
// nodes that are test-bed nodes (test/testbed: network namespace, private bus, real firewalld
// and NetworkManager) with a real kubelet, containerd 2 with Debian's runc, and kube-proxy.
// Nothing is pulled: the images (a pause image and whatever the test imports) are built here.
//
// Network. Each node's uplink leads to its own LAN namespace (the test bed's), and a core
// namespace of the cluster routes between the LANs and holds the apiserver's advertise address
// (VIP), where a relay forwards to the apiserver on the host's loopback: the kubelets and
// kube-proxies reach the apiserver at VIP, and pods at the "kubernetes" Service's ClusterIP
// through kube-proxy (nftables mode), whose rules live in the node's namespace only. No CNI is
// installed, so every node stays NotReady, the state calico-prep is deployed into; hostNetwork
// pods run. Options.Seed lays the nodes out like the seed guide's hosts instead: every ens33 in
// 192.168.79.0/24 on one LAN (a bridge in the core namespace holding the gateway), plus a
// second NIC, ens34, on a host-only network of the node's own. Options.EgressGuard puts the test
// bed's egress guard into every node before anything runs there.
//
// Each node's own processes. Every node has its own PID namespace with its own /proc, whose PID
// 1 is the node's init (the pause program, which reaps orphans): kubelet, containerd, kube-proxy
// and every container run in it, so a pod that enters PID 1's mount namespace through a hostPath
// /proc (Calico's ebpf-bootstrap does, with mountns) enters the node's and never the host's.
// containerd reports PIDs of that namespace; Node.HostPID translates them.
//
// Each node's own filesystem. kubelet, containerd, kube-proxy and every container share one
// mount namespace per node (kubelet's volume mounts must be visible to containerd), set up
// before anything runs in it:
//   - /etc, /var and /opt are overlays whose upper layers are in the node's directory: whatever
//     the node writes there lands in its directory, and the host's files stay as they are;
//   - the paths the node's components and pods write are bind mounts of the node's own
//     directories: /var/lib/{kubelet,containerd,calico,calico-prep,cni}, /var/log/{pods,
//     containers,calico}, /opt/cni/bin, /etc/cni/net.d, /etc/kubernetes, /etc/containerd, the
//     test bed's /etc/firewalld, /etc/NetworkManager, /var/lib/NetworkManager, /etc/resolv.conf
//     and /etc/hostname, /tmp, and /run, which holds the node's bus socket (/run/dbus, the
//     DaemonSet's hostPath), /run/containerd and /run/xtables.lock (/var/run is /run);
//   - /sys is the node's own sysfs (its links), read-only, with the host's cgroup tree moved in;
//   - /proc/sys is read-only but for /proc/sys/net, which is the node's namespace's. The six
//     machine-wide tunables the kubelet insists on (vm.overcommit_memory=1, vm.panic_on_oom=0,
//     kernel.panic=10, kernel.panic_on_oops=1, kernel.keys.root_maxkeys, root_maxbytes) are
//     files holding those values bound over the real ones, and the kubelet runs with
//     protectKernelDefaults, so it verifies them and never writes the host's kernel settings;
//   - the root is made rshared afterwards, as on a systemd host, for mountPropagation
//     Bidirectional (calico-node's init container asks for it).
//
// Cgroups (v1 hybrid here). Every node has a cgroup root of its own, /calico-prep-<name>-<id> in
// every hierarchy: containerd (and so its shims), kubelet and kube-proxy are put into their own
// cgroups under it before they exec, the kubelet's cgroupRoot is it (pods go below), and
// containerd's runc uses the cgroupfs driver, which the kubelet learns from containerd's
// RuntimeConfig. Teardown kills what is left in that tree — only processes the node started
// are ever there — and removes it.
//
// Safety is the test bed's: every process is started by a launcher that checks, right before
// exec, that it runs in the node's network namespace and not in the host's network or mount
// namespace; the kubelet writes no kernel setting; kube-proxy keeps conntrack sysctls as they
// are; containerd never loads AppArmor profiles.
package cluster
