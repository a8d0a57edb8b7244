#!/usr/bin/env bash
# The demo (make demo): a sandboxed lab node (ens33 in 192.168.79.0/24, firewalld and
# NetworkManager running), before and after the agent's full job. Needs root; installs missing Debian packages first (nothing starts on the host).
# The API server part runs when its binaries are cached; KUBE=1 builds them first (minutes, once).
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."
if [[ $(id -u) -ne 0 ]]; then
  echo "the demo needs root: it builds a network namespace and runs firewalld and NetworkManager inside it" >&2
  exit 1
fi
hack/install-deps.sh
if [[ ${KUBE:-} == 1 ]]; then
  hack/build-kube.sh >/dev/null
elif ! hack/build-kube.sh --cached >/dev/null; then
  export CALICO_PREP_DEMO_KUBE=off
fi
go test -count=1 -v -run '^TestDemo$' ./test/demo | grep -Ev '^(=== RUN|--- PASS|PASS$|ok )'
