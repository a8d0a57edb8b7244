// Package deploy holds the tests of deploy/, the Dockerfile and the Helm chart: every manifest is
// accepted by a real kube-apiserver, the chart renders what the kustomize base holds, the
// admission policy confines the agent to its own Node, the Prometheus rules pass promtool, and
// the DaemonSet, emulated as a container on a sandboxed node, runs the agent to Ready.
package deploy
