#!/usr/bin/env bash
# Builds the test bed's Kubernetes from the Go module proxy (no release downloads are reachable
# here): etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy,
# kubectl, containerd with its runc shim and ctr, helm, and upstream Prometheus with promtool, at
# the versions hack/cluster/go.mod pins. They are one module so that what they share (client-go,
# grpc, OpenTelemetry, ...) resolves to one version and compiles once, and one cache directory
# outside the work tree keyed by that go.mod and go.sum; nothing is moved into place before all
# have built, and concurrent callers (go test runs test binaries in parallel) wait for one build.
#
# Prometheus: Debian's package is built without Kubernetes service discovery ("Kubernetes support
# has been completely removed", its NEWS.Debian); this one has only that discoverer compiled in
# (the remove_all_sd and enable_kubernetes_sd build tags; file, HTTP and static discovery are
# always in) and no web UI assets (the API serves without them).
#
# Usage: hack/build-kube.sh           prints the directory holding the binaries, building them first
#        hack/build-kube.sh --cached  prints it only if they are built, else fails
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/lib.sh"

mod=$(cd "$(dirname "$0")/cluster" && pwd)
cache=${CALICO_PREP_CACHE:-/var/cache/calico-prep}
# Bump when the build line below changes what the binaries are.
recipe=1
key=$( (cat "$mod/go.mod" "$mod/go.sum"; echo "$recipe") | sha256sum | cut -c1-16)
out=$cache/kube-$key
binaries=(etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl
  containerd containerd-shim-runc-v2 ctr helm prometheus promtool)
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
if [[ ${1:-} == --cached ]]; then
  exit 1
fi

mkdir -p "$cache"
exec 9>"$cache/.kube.lock"
flock 9
if complete; then
  echo "$out"
  exit 0
fi

export GOWORK=off GOFLAGS=-buildvcs=false CGO_ENABLED=0
cd "$mod"
work=$(mktemp -d "$cache/.build-kube.XXXXXX")
trap 'rm -rf "$work"' EXIT
version() { go list -m -f '{{.Version}}' "$1"; }
build() {
  local ldflags=$1
  shift
  go build -trimpath -ldflags "-s -w $ldflags" -o "$work/" "$@" >&2
}

# Without the version stamped in, every binary reports v0.0.0-master: kubelets register with that
# version and Helm refuses charts that require a Kubernetes version.
kube=$(version k8s.io/kubernetes)
minor=${kube#v1.}
minor=${minor%%.*}
ldflags=
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$kube -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
done
build "$ldflags" ./etcd k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy \
  k8s.io/kubernetes/cmd/kubectl

containerd=github.com/containerd/containerd/v2
build "-X $containerd/version.Version=$(version $containerd)" \
  $containerd/cmd/containerd $containerd/cmd/containerd-shim-runc-v2 $containerd/cmd/ctr

build "-X helm.sh/helm/v3/internal/version.version=$(version helm.sh/helm/v3)" helm.sh/helm/v3/cmd/helm

# Module v0.316.0 is Prometheus 3.16.0 (the module's versions are v0.<major><minor>.<patch>).
prom=$(version github.com/prometheus/prometheus)
prom_minor=${prom#v0.}
prom_minor=${prom_minor%%.*}
build "-X github.com/prometheus/common/version.Version=$((prom_minor / 100)).$((prom_minor % 100)).${prom##*.}" \
  -tags remove_all_sd,enable_kubernetes_sd \
  github.com/prometheus/prometheus/cmd/prometheus github.com/prometheus/prometheus/cmd/promtool

chmod 755 "$work"
rm -rf "$out"
mv "$work" "$out"
echo "$out"
