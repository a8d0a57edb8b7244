// Package e2e proves the agent daemon end to end: the agent binary, built as the Makefile builds
// it, runs inside a sandboxed node (test/testbed: its own network namespace with real firewalld
// and NetworkManager on a private bus) and reports to a real kube-apiserver (test/kubetest)
// through a relay into that namespace, with the ServiceAccount and RBAC the deployment ships.
// Tests observe only from outside, as an operator would: the Node object and its Events, the
// apiserver's audit log, firewalld and NetworkManager over D-Bus, the node's links, files and
// nftables, and the agent's /healthz, /readyz and /metrics.
//
// Its benchmarks measure the figures of the daemon (footprint while idle, the time from a
// netlink change to the NodeCondition, start to ready, API requests); hack/bench.sh runs them
// and prints the figures.
//
// Every test needs root, firewalld, NetworkManager, dbus-daemon and the kube-apiserver build of
// hack/build-kube.sh, and fails when any is missing. Tests run one after another: each takes a
// node of its own, and requests in the shared apiserver's audit log are told apart by time.
package e2e
