#!/usr/bin/env bash
# Builds the pinned upstream Prometheus and promtool from the Go module proxy into a cache outside
# the work tree, for the cluster test's Kubernetes service discovery: Debian's prometheus package is
# built without it ("Kubernetes support has been completely removed", its NEWS.Debian). Only the
# Kubernetes discoverer is compiled in (Prometheus's remove_all_sd and enable_kubernetes_sd build
# tags; file, HTTP and static discovery are always in), and no web UI assets (the API serves
# without them). One directory per version; nothing is moved into place before it has built
# completely; concurrent callers wait for one build.
#
# Usage: hack/prometheus.sh      prints the directory holding prometheus and promtool
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/lib.sh"

# Module v0.316.0 is Prometheus 3.16.0 (the module's versions are v0.<major><minor>.<patch>).
PROMETHEUS_VERSION=${PROMETHEUS_VERSION:-v0.316.0}
cache=${CALICO_PREP_CACHE:-/var/cache/calico-prep}/tools
out=$cache/prometheus-$PROMETHEUS_VERSION
complete() { [[ -x $out/prometheus && -x $out/promtool ]]; }
if complete; then
  echo "$out"
  exit 0
fi

mkdir -p "$cache"
exec 9>"$cache/.prometheus-$PROMETHEUS_VERSION.lock"
flock 9
if complete; then
  echo "$out"
  exit 0
fi

# Prometheus's own go.mod decides its dependencies; this module's go.mod and workspace must not.
export GOWORK=off GOFLAGS=-buildvcs=false CGO_ENABLED=0
tmp=$(mktemp -d "$cache/.build-prometheus.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
minor=${PROMETHEUS_VERSION#v0.}
minor=${minor%%.*}
patch=${PROMETHEUS_VERSION##*.}
version="$((minor / 100)).$((minor % 100)).$patch"
ldflags="-s -w -X github.com/prometheus/common/version.Version=$version"
for cmd in prometheus promtool; do
  if ! (cd "$tmp" && GOBIN=$tmp/bin go install -trimpath -tags remove_all_sd,enable_kubernetes_sd \
    -ldflags "$ldflags" "github.com/prometheus/prometheus/cmd/$cmd@$PROMETHEUS_VERSION") >"$tmp/build.log" 2>&1; then
    cat "$tmp/build.log" >&2
    echo "build github.com/prometheus/prometheus/cmd/$cmd@$PROMETHEUS_VERSION failed" >&2
    exit 1
  fi
done
chmod 755 "$tmp/bin"
rm -rf "$out"
mv "$tmp/bin" "$out"
echo "$out"
