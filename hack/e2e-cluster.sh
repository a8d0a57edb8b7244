#!/usr/bin/env bash
# The end-to-end test on a real two-node cluster (README, "Deploy"; test/cluster): the image from
# `make image`, kubelet, containerd and the control plane built into the cache, the DaemonSet from
# deploy/base and the chart under the real kubelet, Calico's manifest gated, Prometheus (upstream,
# hack/build-kube.sh) discovering and scraping the agents, removal.
# As root on Debian, after hack/install-deps.sh. Prints the figures it measures (lines "figure:").
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
  echo "the cluster test needs root: its nodes are network and mount namespaces with their own cgroups" >&2
  exit 1
fi
hack/build-kube.sh >/dev/null
# The builds above are done; what is left is the image, the bring-up and the test (about two
# minutes warm): the timeout bounds a hang, not the work.
go test -count=1 -timeout 20m -v ./test/cluster
