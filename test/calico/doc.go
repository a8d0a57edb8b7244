// Package calico runs the real Calico — calico-node (Felix) and the CNI plugin of the release
// that hack/build-calico.sh builds from source — in test-bed nodes against a real kube-apiserver,
// without a kubelet: the test plays the kubelet for calico.yaml's calico-node pod.
//
// The manifest is applied unmodified (CRDs, RBAC, ConfigMap, the DaemonSet object; with no
// controller-manager nothing is scheduled) and then patched the way an operator switches it to
// VXLAN. For each node the test reads the DaemonSet's pod template back from the apiserver and
// runs its init containers (upgrade-ipam, install-cni, ebpf-bootstrap) to completion and then
// the calico-node container, each the way a container runtime would:
//
//   - in the node's network namespace (hostNetwork) and fresh mount, PID, UTS and IPC namespaces;
//   - chrooted into an overlay of the image's root filesystem (the build's rootfs directory, read
//     only) with a writable layer of its own, and a fresh /proc, /sys and bpffs;
//   - with the env the kubelet would give: the image's, KUBERNETES_SERVICE_HOST/PORT (a relay to
//     the apiserver inside the node), envFrom and env with configMapKeyRef and fieldRef resolved;
//   - with its volumes: hostPath P is the node's Dir + P (the node's own /var/lib/calico,
//     /run/calico, /run/xtables.lock, /opt/cni/bin, /etc/cni/net.d, …), and the ServiceAccount
//     token is a TokenRequest token of the pod's ServiceAccount, bound to the Node.
//
// Deviations, each because this machine is not a node: hostPath /proc (ebpf-bootstrap's
// /nodeproc) is the container's own /proc, since mountns enters PID 1's mount namespace through
// it and PID 1 of this machine is the host's; hostPath /sys/fs and /sys/fs/bpf are the
// container's own sysfs and a bpffs of its own, so BPF pins do not outlive a container (Felix
// in iptables mode keeps nothing there). Processes that run on the node itself rather than in
// a container — the CNI plugin, which containerd would execute — run chrooted into the node's Dir.
//
// The operator's patch of the DaemonSet sets VXLAN (no BIRD), the pool, kubernetes-internal-ip
// autodetection, no usage reporting, and FELIX_XDPENABLED=false: the build has no BPF objects
// (they need clang), and with XDP on Felix keeps probing for them. The manifest's probes ask for
// BIRD too (-bird-live, -bird-ready) and fail in VXLAN mode; the test runs them, logs that, and
// requires the Felix half to pass. calico-prep (the agent, run once in each node) applies its
// NetworkManager drop-in before Calico starts and its firewalld rules only after the pods exist,
// so that the test first sees cross-node pod traffic fail with firewalld closed.
//
// Every node carries an nftables guard in its network namespace that counts (and drops) any
// packet to an address outside the test's own networks and any DNS query; the tests fail if it
// counted one.
package calico
