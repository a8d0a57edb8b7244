#!/usr/bin/env bash
# The version matrix: the real-component tests of pkg/firewalld and pkg/networkmanager, and the
# daemon's reload/restart e2e tests, against the firewalld and NetworkManager releases users run
# (built by hack/build-upstream.sh, run in place of Debian's inside each test node's private mount
# namespace only), and firewalld's iptables backend. hack/test.sh has run everything against
# Debian's own firewalld 1.3.3 and NetworkManager 1.42 before this.
#
# Each row pairs a firewalld with a NetworkManager of the same distribution generation, so that one
# run covers both; the race detector already ran over the same code in hack/test.sh.
# Usage: hack/test-matrix.sh [ROW...]     rows by name; all rows without arguments
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."

# name | firewalld | NetworkManager | firewalld backend
rows=(
  "rhel8|0.9.11|1.40.18|nftables"
  "rhel8-iptables|0.9.11|debian|iptables"
  "rhel9|1.3.4|debian|nftables"
  "rhel10|2.5.0|1.58.1|nftables"
  "debian-iptables|debian|debian|iptables"
)
packages=(./pkg/firewalld ./pkg/networkmanager)
# The daemon end to end: firewalld reload and restart, NetworkManager restart and a new veth.
e2e_run='TestFirewalldReloadAndRestartReapplyRules|TestNetworkManagerRestartAndNewVeth'

declare -a summary=()
for row in "${rows[@]}"; do
  IFS='|' read -r name fw nm backend <<<"$row"
  if [[ $# -gt 0 ]] && [[ " $* " != *" $name "* ]]; then
    continue
  fi
  pkgs=("${packages[@]}")
  if [[ $nm == debian && $fw != debian ]] || [[ $backend == iptables ]]; then
    pkgs=(./pkg/firewalld) # Debian's NetworkManager ran in hack/test.sh already
  fi
  start=$SECONDS
  echo "==> matrix $name: firewalld $fw ($backend), NetworkManager $nm"
  export CALICO_PREP_TESTBED_FIREWALLD=$fw CALICO_PREP_TESTBED_NETWORKMANAGER=$nm CALICO_PREP_TESTBED_FIREWALLD_BACKEND=$backend
  go test -count=1 -timeout 20m "${pkgs[@]}"
  go test -count=1 -timeout 20m -run "$e2e_run" ./test/e2e
  # Nothing of this row's daemons reaches the host (files, nftables, iptables-legacy).
  go test -count=1 -timeout 10m -run TestHostUnchanged ./test/testbed
  summary+=("$(printf '%-16s firewalld %-7s %-8s NetworkManager %-8s %4ds' "$name" "$fw" "$backend" "$nm" $((SECONDS - start)))")
done
printf '%s\n' "${summary[@]}"
