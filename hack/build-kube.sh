#!/usr/bin/env bash
# Builds etcd, kube-apiserver, kubectl and the rest of a cluster (kube-controller-manager,
# kube-scheduler, kubelet, kube-proxy) from the Go module proxy (no release downloads are reachable
# here) into a cache outside the work tree, keyed by version, in one `go build` so the packages the
# binaries share compile once. A warm cache returns at once.
# Usage: hack/build-kube.sh            prints the directory holding the binaries
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/lib.sh"

KUBE_VERSION=${KUBE_VERSION:-v1.37.2}
cache=${CALICO_PREP_CACHE:-/var/cache/calico-prep}
out="$cache/kube-$KUBE_VERSION"
binaries=(etcd kube-apiserver kubectl kube-controller-manager kube-scheduler kubelet kube-proxy)
# Without the version stamped in, every binary reports v0.0.0-master: kubelets register with that
# version and Helm refuses charts that require a Kubernetes version. A cache built without it
# lacks the stamp file and is rebuilt.
stamp=".version-stamped"
complete() {
  local b
  for b in "${binaries[@]}"; do
    [[ -x $out/$b ]] || return 1
  done
  [[ -f $out/$stamp ]]
}
if complete; then
  echo "$out"
  exit 0
fi

# Test binaries of several packages may ask at once (go test ./... runs them in parallel): one
# builds, the others wait for it and then find the cache warm.
mkdir -p "$cache"
exec 9>"$cache/.kube-$KUBE_VERSION.lock"
flock 9
if complete; then
  echo "$out"
  exit 0
fi

staging_version="v0.${KUBE_VERSION#v1.}"
work=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"

modfile=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
etcd_version=$(awk '$1 == "go.etcd.io/etcd/server/v3" {print $2}' "$modfile")

cat > go.mod <<MOD
module calico-prep.local/kubebuild

go 1.26

tool (
	k8s.io/kubernetes/cmd/kube-apiserver
	k8s.io/kubernetes/cmd/kube-controller-manager
	k8s.io/kubernetes/cmd/kube-proxy
	k8s.io/kubernetes/cmd/kube-scheduler
	k8s.io/kubernetes/cmd/kubectl
	k8s.io/kubernetes/cmd/kubelet
)
MOD
# k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with local paths;
# as a dependency those replaces do not apply, so point each at its published v0.Y.Z.
while read -r m; do
  echo "replace $m => $m $staging_version" >> go.mod
done < <(awk '/=> .\/staging\/src\// {print $1}' "$modfile")
mkdir -p etcd
cat > etcd/main.go <<'GO'
// Command etcd is etcd's server entry point, built here at the version Kubernetes pins.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
go get "k8s.io/kubernetes@$KUBE_VERSION" "go.etcd.io/etcd/server/v3@$etcd_version" >&2
go mod tidy >&2
mkdir -p "$work/bin"
minor=${KUBE_VERSION#v1.}
minor=${minor%%.*}
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
done
CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$work/bin/" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-proxy k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl \
  k8s.io/kubernetes/cmd/kubelet ./etcd >&2
mkdir -p "$out.tmp"
mv "$work/bin/"* "$out.tmp/"
touch "$out.tmp/$stamp"
rm -rf "$out"
mv "$out.tmp" "$out"
echo "$out"
