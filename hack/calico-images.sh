#!/usr/bin/env bash
# Packs the root filesystems of hack/build-calico.sh into OCI images under Calico's own names
# (quay.io/calico/node, cni and kube-controllers at the release's tag) with hack/ocibuild, as OCI
# layout tars that `ctr -n k8s.io images import` names. Nothing is pulled. Cached next to the
# build: a warm cache returns at once, a new build or a changed packer packs again, concurrent
# callers wait for one packing.
#
# Layout of the output directory (printed on stdout):
#   node.oci.tar, cni.oci.tar, kube-controllers.oci.tar
#   sizes.txt       each tar's size in bytes (the images' compressed size) and the unpacked size
#
# Usage: hack/calico-images.sh      prints the output directory
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/lib.sh"

repo=$(cd "$(dirname "$0")/.." && pwd)
build=$("$repo/hack/build-calico.sh")
out=${build%/}-images
# The stamp names what the images are made of: the build's recipe and the packer's source.
stamp="build $(<"$build/recipe"); ocibuild $(cat "$repo"/hack/ocibuild/*.go "$repo/hack/ocibuild/go.sum" | sha256sum | cut -d' ' -f1)"
warm() { [[ -f $out/stamp && $(<"$out/stamp") == "$stamp" ]]; }
if warm; then
  echo "$out"
  exit 0
fi

exec 9>"$build.images.lock"
flock 9
if warm; then
  echo "$out"
  exit 0
fi

work=$(mktemp -d "$(dirname "$out")/.calico-images.XXXXXX")
trap 'rm -rf "$work"' EXIT
(cd "$repo/hack/ocibuild" && GOWORK=off go build -trimpath -o "$work/ocibuild" .)
for image in node cni kube-controllers; do
  # NAME.json holds the image's name and its config as Calico's Dockerfile sets it.
  mapfile -t args < <(python3 - "$build/rootfs/$image.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
c = d["config"]
print("-name"); print(d["name"])
for key, flag in (("Entrypoint", "-entrypoint"), ("Cmd", "-cmd")):
    if c.get(key):
        print(flag); print(json.dumps(c[key]))
for key, flag in (("User", "-user"), ("WorkingDir", "-workdir")):
    if c.get(key):
        print(flag); print(c[key])
for e in c.get("Env", []):
    print("-env"); print(e)
PY
  )
  # -owners: kube-controllers runs as user 999 and writes the status file the build gave it.
  "$work/ocibuild" -o "$work/$image.oci.tar" -platform "linux/amd64=$build/rootfs/$image" -owners "${args[@]}" >/dev/null
  printf '%s %s %s\n' "$image" "$(stat -c %s "$work/$image.oci.tar")" "$(du -sb "$build/rootfs/$image" | cut -f1)" >>"$work/sizes.txt"
done
rm "$work/ocibuild"
echo "$stamp" >"$work/stamp"
chmod 755 "$work"
rm -rf "$out"
mv "$work" "$out"
echo "$out"
