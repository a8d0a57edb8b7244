#!/usr/bin/env bash
# Builds containerd, its runc shim (containerd-shim-runc-v2) and ctr from the Go module proxy (no
# release downloads are reachable here) into a cache outside the work tree, one directory per
# version, so a version bump never reuses a stale build and a warm cache returns at once. Nothing is
# moved into place before it has built completely; concurrent callers wait for one build.
#
# containerd 2 is needed, not Debian's 1.6: since Kubernetes 1.36 the kubelet takes the cgroup
# driver from the runtime's RuntimeConfig CRI call (KEP-4033), which containerd has since 2.0. The
# runtime it starts is Debian's runc (hack/install-deps.sh).
#
# Usage: hack/build-containerd.sh      prints the directory holding the three binaries
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/lib.sh"

CONTAINERD_VERSION=${CONTAINERD_VERSION:-v2.4.2}
cache=${CALICO_PREP_CACHE:-/var/cache/calico-prep}
out=$cache/containerd-$CONTAINERD_VERSION
binaries=(containerd containerd-shim-runc-v2 ctr)
complete() {
  local b
  for b in "${binaries[@]}"; do
    [[ -x $out/$b ]] || return 1
  done
}
if complete; then
  echo "$out"
  exit 0
fi

mkdir -p "$cache"
exec 9>"$cache/.containerd-$CONTAINERD_VERSION.lock"
flock 9
if complete; then
  echo "$out"
  exit 0
fi

# containerd's own go.mod decides its dependencies; this module's go.mod and workspace must not.
# Static: without cgo only the btrfs snapshotter is left out, which nothing here uses.
export GOWORK=off GOFLAGS=-buildvcs=false CGO_ENABLED=0
tmp=$(mktemp -d "$cache/.build-containerd.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
module=github.com/containerd/containerd/v2
ldflags="-s -w -X $module/version.Version=$CONTAINERD_VERSION"
pkgs=()
for b in "${binaries[@]}"; do
  pkgs+=("$module/cmd/$b@$CONTAINERD_VERSION")
done
if ! (cd "$tmp" && GOBIN=$tmp/bin go install -trimpath -ldflags "$ldflags" "${pkgs[@]}") >"$tmp/build.log" 2>&1; then
  cat "$tmp/build.log" >&2
  echo "build $module@$CONTAINERD_VERSION failed" >&2
  exit 1
fi
chmod 755 "$tmp/bin"
rm -rf "$out"
mv "$tmp/bin" "$out"
echo "$out"
