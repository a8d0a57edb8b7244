#!/usr/bin/env bash
# The whole test suite, as README.md's test command and .ci/run run it. As root on Debian:
# installs what is missing (Debian packages behind a policy-rc.d; the test bed's Kubernetes, the
# lint tools, the version matrix's daemons and Calico built into a cache), then runs formatting,
# vet, lint, every test with the race detector (unit, network-namespace and real-component
# tests), the tests as an unprivileged user, the two-node cluster tests, the version matrix, short
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
  summary+=("$(printf '%-46s %4ds' "$name" $((SECONDS - start)))")
}

# Builds that only later steps need, and the fuzz run, go one after another in the background at
# the lowest CPU priority: they take the CPU the foreground steps leave idle (the cluster tests
# and the version matrix mostly wait on daemons, a cold build on downloads) instead of running
# alone. `await` waits for one, prints its output and fails the suite if it failed.
logs=$(mktemp -d)
background_pid=
cleanup() {
  # setsid made the background job the leader of its own process group.
  if [[ -n $background_pid ]] && kill -0 "$background_pid" 2>/dev/null; then
    kill -- "-$background_pid" 2>/dev/null || true
  fi
  rm -rf "$logs"
}
trap cleanup EXIT
# logged NAME CMD...: runs CMD into $logs/NAME.log; its exit status and seconds into NAME.status.
logged() {
  local name=$1; shift
  local start=$SECONDS rc=0
  "$@" >"$logs/$name.log" 2>&1 || rc=$?
  echo "$rc $((SECONDS - start))" >"$logs/$name.status"
  return "$rc"
}
# background "NAME CMD..." ...: runs each command after the one before it has succeeded.
background() {
  local script job
  # setsid also gives the job its own scheduler autogroup where the kernel has them
  # (CONFIG_SCHED_AUTOGROUP), and autogroups share the CPU equally whatever the nice values of
  # their processes: the job lowers its group's priority too (/proc/self is the job's shell).
  script="logs=$logs; [[ ! -w /proc/self/autogroup ]] || echo 19 >/proc/self/autogroup; $(declare -f logged)"
  for job in "$@"; do
    script+=" && logged $job"
  done
  setsid nice -n 19 bash -c "$script" </dev/null >/dev/null 2>&1 &
  background_pid=$!
}
await() {
  local name=$1 title=$2 start=$SECONDS rc took
  echo "==> $title (in the background)"
  while [[ ! -f $logs/$name.status ]]; do
    if ! kill -0 "$background_pid" 2>/dev/null && [[ ! -f $logs/$name.status ]]; then
      echo "==> step \"$title\" did not run: a background step before it failed" >&2
      exit 1
    fi
    sleep 1
  done
  read -r rc took <"$logs/$name.status"
  cat "$logs/$name.log"
  if [[ $rc -ne 0 ]]; then
    echo "==> step \"$title\" failed after ${took}s" >&2
    exit 1
  fi
  summary+=("$(printf '%-46s %4ds (background %ds)' "$title" $((SECONDS - start)) "$took")")
}

step "install Debian packages" hack/install-deps.sh
background "upstream hack/build-upstream.sh all" "calico hack/calico-images.sh" \
  "fuzz hack/fuzz.sh"
step "build Kubernetes, containerd, helm, Prometheus" hack/build-kube.sh
step "build lint tools" hack/tools.sh
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
await upstream "build firewalld/NetworkManager matrix"
step "version matrix" hack/test-matrix.sh
await calico "build Calico"
# The acceptance test: the real Calico on that cluster, prepared by calico-prep (README, "The proof").
step "e2e Calico" hack/e2e-calico.sh
await fuzz "fuzz (${FUZZTIME:-10s} each)"
step "govulncheck" hack/vulncheck.sh

echo
echo "==> summary"
printf '%s\n' "${summary[@]}"
