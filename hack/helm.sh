#!/usr/bin/env bash
# Builds the pinned helm from the Go module proxy (no release downloads are reachable here) into a
# cache outside the work tree, one directory per version, so a version bump never reuses a stale
# build and a warm cache returns at once. helm only renders and lints the chart, so unlike the lint
# tools the binary is not keyed by the Go version. Nothing is moved into place before it has built
# completely; concurrent callers (test binaries of several packages) wait for one build.
#
# Usage: hack/helm.sh      prints the path of the helm binary
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/lib.sh"

HELM_VERSION=${HELM_VERSION:-v3.22.0}
cache=${CALICO_PREP_CACHE:-/var/cache/calico-prep}/tools
bin=$cache/helm-$HELM_VERSION/helm
if [[ -x $bin ]]; then
  echo "$bin"
  exit 0
fi

mkdir -p "$cache"
exec 9>"$cache/.helm-$HELM_VERSION.lock"
flock 9
if [[ -x $bin ]]; then
  echo "$bin"
  exit 0
fi

# helm's own go.mod decides its dependencies; this module's go.mod and workspace must not.
export GOWORK=off GOFLAGS=-buildvcs=false CGO_ENABLED=0
tmp=$(mktemp -d "$cache/.build-helm.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# helm reports its version from this variable; without it `helm version` says v3-dev.
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
if ! (cd "$tmp" && GOBIN=$tmp/bin go install -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION") >"$tmp/build.log" 2>&1; then
  cat "$tmp/build.log" >&2
  echo "build helm.sh/helm/v3/cmd/helm@$HELM_VERSION failed" >&2
  exit 1
fi
chmod 755 "$tmp/bin"
rm -rf "$(dirname "$bin")"
mv "$tmp/bin" "$(dirname "$bin")"
echo "$bin"
