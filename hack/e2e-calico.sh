#!/usr/bin/env bash
# The mission's acceptance test (README, "The proof"; test/cluster, build tag calico): the real
# Calico v3.32.1, built from source and packed into images here, installed onto a two-node
# cluster prepared by calico-prep, pods talking across the nodes through firewalld, and what
# breaks without calico-prep. As root on Debian, after hack/install-deps.sh. Prints the figures
# it measures (lines "figure:").
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
  echo "the Calico test needs root: its nodes are network and mount namespaces with their own cgroups" >&2
  exit 1
fi
hack/build-kube.sh >/dev/null
hack/calico-images.sh >/dev/null
go test -tags calico -count=1 -timeout 45m -v -run '^TestRealCalico$' ./test/cluster
