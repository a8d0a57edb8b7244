#!/usr/bin/env bash
# The whole test suite, as README.md's test command and .ci/run run it. As root on Debian:
# installs what is missing (Debian packages behind a policy-rc.d, kube-apiserver/etcd/kubectl and
# the lint tools built from the Go module proxy into a cache), then runs formatting, vet, lint,
# every test with the race detector (unit, network-namespace and real-component tests), short
# fuzz runs of every parser and the vulnerability scan. Fails on the first failing step.
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
  echo "the test suite needs root: it builds network namespaces and runs firewalld and NetworkManager inside them" >&2
  exit 1
fi
export CALICO_PREP_CACHE=${CALICO_PREP_CACHE:-/var/cache/calico-prep}
# As root, a test that needs root fails rather than skips (testkit.NeedsRoot).
export CALICO_PREP_TEST_AS_ROOT=1

declare -a summary=()
step() {
  local name=$1; shift
  local start=$SECONDS
  echo "==> $name"
  if ! "$@"; then
    echo "==> step \"$name\" failed after $((SECONDS - start))s: $*" >&2
    exit 1
  fi
  summary+=("$(printf '%-28s %4ds' "$name" $((SECONDS - start)))")
}

step "install Debian packages" hack/install-deps.sh
step "build kube binaries" hack/build-kube.sh
step "build containerd" hack/build-containerd.sh
step "build lint tools" hack/tools.sh
step "build helm" hack/helm.sh
step "build prometheus" hack/prometheus.sh
step "build firewalld/NetworkManager matrix" hack/build-upstream.sh all
step "build Calico" hack/build-calico.sh
gofmt_clean() {
  local files out
  mapfile -t files < <(git ls-files '*.go' 2>/dev/null || find . -name '*.go')
  out=$(gofmt -l "${files[@]}")
  if [[ -n $out ]]; then
    echo "gofmt would change:"
    echo "$out"
    return 1
  fi
}

step "shellcheck" shellcheck hack/*.sh .ci/run
step "gofmt" gofmt_clean
step "go vet" go vet ./...
step "golangci-lint" hack/lint.sh
# test/cluster runs on its own below: a two-node cluster should not share the two cores with
# every other package's tests.
mapfile -t packages < <(go list ./... | grep -v '/test/cluster$')
step "go test -race" go test -race -count=1 -timeout 40m "${packages[@]}"
step "go test without root" hack/test-nonroot.sh
step "e2e cluster" hack/e2e-cluster.sh
# The acceptance test: the real Calico on that cluster, prepared by calico-prep (README, "The proof").
step "e2e Calico" hack/e2e-calico.sh
# The real calico-node in two test-bed nodes (build tag calico: it needs hack/build-calico.sh).
step "real Calico (test/calico)" go test -race -tags calico -count=1 -timeout 20m ./test/calico
step "version matrix" hack/test-matrix.sh
step "fuzz (${FUZZTIME:-10s} each)" hack/fuzz.sh
step "govulncheck" hack/vulncheck.sh

echo
echo "==> summary"
printf '%s\n' "${summary[@]}"
