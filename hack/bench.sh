#!/usr/bin/env bash
# Runs every Go benchmark of the module (go test -run='^$' -bench=. -benchmem), one package at
# a time so that no two measure each other, then the agent's end-to-end benchmarks in test/e2e
# with the repetitions each figure needs, and prints the agent's figures against issue #6's
# goals. As root: the end-to-end benchmarks run the agent in a sandboxed node (test/testbed)
# against a real kube-apiserver (test/kubetest).
#
#   BenchmarkNetlinkToCondition  -benchtime=20x   40 samples (20 each way), median and p99
#   BenchmarkStartToReady        -benchtime=10x   per case: fork to /readyz 200 (and to the
#                                                 condition), requests per start
#   BenchmarkIdleFootprint       -benchtime=1x    the long one: ${BENCH_IDLE:-10m} idle, once
#   BenchmarkFelixConfigurationToPort -benchtime=50x  FelixConfiguration change -> port open
#
# Usage: hack/bench.sh              everything (about 20 minutes; 10 of them idle)
#        BENCH_IDLE=1m hack/bench.sh   a shorter idle period
#        hack/bench.sh e2e          only the agent's figures
# Each run's raw output stays in $BENCH_OUT (default: a new directory under /tmp), printed at
# the end.
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
  echo "the benchmarks need root: they build network namespaces and run firewalld and NetworkManager inside them" >&2
  exit 1
fi
idle=${BENCH_IDLE:-10m}
out=${BENCH_OUT:-$(mktemp -d /tmp/calico-prep-bench.XXXXXX)}
mkdir -p "$out"
only=${1:-all}

if [[ $only == all ]]; then
  mapfile -t pkgs < <(go list ./... | grep -v '/test/e2e$')
  echo "==> package benchmarks (${#pkgs[@]} packages, one at a time)"
  go test -run='^$' -bench=. -benchmem -count=1 -p 1 -timeout 60m "${pkgs[@]}" 2>&1 | tee "$out/packages.txt" |
    grep -E '^(Benchmark|ok|FAIL|---)' || true
  [[ ${PIPESTATUS[0]} -eq 0 ]] || { echo "package benchmarks failed; see $out/packages.txt" >&2; exit 1; }
fi

# Without -benchmem: the test process's allocations say nothing about the agent, a process
# of its own whose memory BenchmarkIdleFootprint reads from /proc.
e2e() {
  local name=$1 benchtime=$2
  shift 2
  echo "==> test/e2e $name (-benchtime=$benchtime $*)"
  if ! go test -run='^$' -bench="^${name}\$" -benchtime="$benchtime" -count=1 -timeout 60m \
    ./test/e2e "$@" >"$out/$name.txt" 2>&1; then
    tail -n 40 "$out/$name.txt" >&2
    echo "$name failed; see $out/$name.txt" >&2
    exit 1
  fi
  grep -E '^Benchmark' "$out/$name.txt"
}
e2e BenchmarkNetlinkToCondition 20x
e2e BenchmarkStartToReady 10x
e2e BenchmarkIdleFootprint 1x -idle="$idle"
e2e BenchmarkFelixConfigurationToPort 50x

# The shipped binary, built as the Makefile builds it.
bin=$(mktemp -d)/agent
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=bench" -o "$bin" ./cmd/agent
size=$(stat -c %s "$bin")
rm -rf "$(dirname "$bin")"

# metric FILE BENCHMARK UNIT: the value reported for UNIT on BENCHMARK's result line.
metric() {
  awk -v b="$2" -v u="$3" '$1 ~ "^"b"(-[0-9]+)?$" { for (i = 3; i < NF; i++) if ($(i+1) == u) print $i }' "$out/$1.txt" | tail -n 1
}
lat=BenchmarkNetlinkToCondition start=BenchmarkStartToReady foot=BenchmarkIdleFootprint felix=BenchmarkFelixConfigurationToPort
# row FIGURE VALUE [GOAL-TEXT MET]: MET is an awk condition on v, the value.
row() {
  local verdict=
  if [[ $# -gt 2 ]]; then
    verdict=$(awk -v v="$2" "BEGIN { if (v == \"\") print \"?\"; else if ($4) print \"met\"; else print \"MISSED\" }")
  fi
  printf '%-56s %16s   %-8s %s\n' "$1" "${2:--}" "${3:-}" "$verdict"
}

echo
echo "==> figures (2-core machine; the apiserver, etcd, firewalld and NetworkManager run on it too)"
printf '%-56s %16s   %-8s %s\n' FIGURE MEASURED GOAL ""
row "RSS after $idle idle, scraped every 15 s (MiB)" "$(metric $foot $foot rss-MiB)" "<= 18" "v <= 18"
row "  of it: mapped binary / anonymous (MiB)" "$(metric $foot $foot file-rss-MiB) / $(metric $foot $foot anon-rss-MiB)"
row "  of the binary resident: text / rodata / pclntab (MiB)" "$(metric $foot $foot text-rss-MiB) / $(metric $foot $foot rodata-rss-MiB) / $(metric $foot $foot pclntab-rss-MiB)"
row "  Go heap in use / retained from the OS (MiB)" "$(metric $foot $foot heap-inuse-MiB) / $(metric $foot $foot heap-retained-MiB)"
row "CPU while idle (ms over the idle period)" "$(metric $foot $foot idle-cpu-ms)"
row "CPU while idle (% of one core)" "$(metric $foot $foot idle-cpu-%)"
row "netlink change -> label and condition seen, median (ms)" "$(metric $lat $lat median-ms)" "<= 20" "v <= 20"
row "netlink change -> label and condition seen, p99 (ms)" "$(metric $lat $lat p99-ms)"
row "start -> /readyz 200, Node already ready, median (ms)" "$(metric $start $start/restart readyz-median-ms)" "<= 300" "v <= 300"
row "start -> /readyz 200, Node without status, median (ms)" "$(metric $start $start/fresh-status readyz-median-ms)" "<= 300" "v <= 300"
row "start -> label and condition true seen, median (ms)" "$(metric $start $start/fresh-status condition-median-ms)" "<= 300" "v <= 300"
row "API requests at start, Node already ready" "$(metric $start $start/restart requests/start)" "<= 3" "v <= 3"
row "API requests at start, Node without status" "$(metric $start $start/fresh-status requests/start)" "<= 3" "v <= 3"
row "API requests while idle, per hour" "$(metric $foot $foot requests/hour)" "0" "v == 0"
row "FelixConfiguration change -> port open at runtime, median (ms)" "$(metric $felix $felix runtime-median-ms)"
row "FelixConfiguration change -> port open at runtime, p99 (ms)" "$(metric $felix $felix runtime-p99-ms)"
row "FelixConfiguration change -> port open permanently, median (ms)" "$(metric $felix $felix permanent-median-ms)"
row "agent binary (bytes)" "$size"
echo
# Which modules the resident text and rodata belong to (BenchmarkIdleFootprint prints it).
sed -n '/^resident pages of the binary/,/(no symbol)/p' "$out/$foot.txt"
echo
echo "raw output: $out"
