#!/usr/bin/env bash
# Builds Calico from its released source for the tests that run the real Calico in the test bed:
# the binaries of calico-node, the CNI plugin and the kube-controllers, and one root filesystem per
# Calico image (quay.io/calico/node, quay.io/calico/cni, quay.io/calico/kube-controllers) made of
# those binaries and what they execute at run time, taken from Debian packages with
# `apt-get download` + `dpkg -x` (never installed on this host). No registry is reachable here, so
# nothing is pulled; an OCI packer turns the directories into images.
#
# The source is Calico's git archive of the release tag and libbpf's release tarball, read from
# $CALICO_PREP_UPSTREAM (default: ../shared/upstream beside the repository). The result goes to
# a cache outside the work tree, one directory per version, moved into place only once complete;
# concurrent callers wait for one build; a warm cache returns at once. Needs root (the rootfs
# check runs the rootfs's own dynamic loader under chroot).
#
# Layout of the output directory (printed on stdout):
#   bin/                       calico-node, mountns, calico, calico-ipam, install, host-local,
#                              portmap, loopback, tuning, kube-controllers, check-status
#   rootfs/node/               quay.io/calico/node:$CALICO_VERSION
#   rootfs/cni/                quay.io/calico/cni:$CALICO_VERSION
#   rootfs/kube-controllers/   quay.io/calico/kube-controllers:$CALICO_VERSION
#   rootfs/NAME.json           image name and OCI image config (Entrypoint, Cmd, Env, WorkingDir, User)
#   debs.txt                   the Debian packages in rootfs/node, with versions
#
# Usage: hack/build-calico.sh      prints the output directory
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/lib.sh"

CALICO_VERSION=${CALICO_VERSION:-v3.32.1}
LIBBPF_VERSION=${LIBBPF_VERSION:-1.6.2}
# The containernetworking plugins Calico's CNI image ships (cni-plugin/Makefile, CN_FILES), at the
# version Calico's go.mod requires.
CNI_PLUGINS_VERSION=${CNI_PLUGINS_VERSION:-v1.9.0}
# Bumped whenever this recipe changes what it produces, so a warm cache of an older recipe is
# rebuilt rather than reused.
RECIPE=2

repo=$(cd "$(dirname "$0")/.." && pwd)
upstream=${CALICO_PREP_UPSTREAM:-$repo/../shared/upstream}
cache=${CALICO_PREP_CACHE:-/var/cache/calico-prep}
out=$cache/calico-$CALICO_VERSION

warm() { [[ -f $out/recipe && $(<"$out/recipe") == "$RECIPE" ]]; }
if warm; then
  echo "$out"
  exit 0
fi

src_tar=$upstream/calico-${CALICO_VERSION#v}-src.tar.gz
libbpf_tar=$upstream/libbpf-$LIBBPF_VERSION.tar.gz
for f in "$src_tar" "$libbpf_tar"; do
  if [[ ! -f $f ]]; then
    echo "build-calico.sh: $f not found: set CALICO_PREP_UPSTREAM to the directory holding Calico's source archive and libbpf's tarball" >&2
    exit 2
  fi
done
if [[ $(id -u) -ne 0 ]]; then
  echo "build-calico.sh: needs root: the root filesystems are checked by running their own loader under chroot" >&2
  exit 1
fi
for cmd in gcc make pkg-config apt-get dpkg-deb chroot; do
  command -v "$cmd" >/dev/null || { echo "build-calico.sh: $cmd not found: run hack/install-deps.sh" >&2; exit 1; }
done
for h in /usr/include/gelf.h /usr/include/pcap/pcap.h /usr/include/zlib.h; do
  [[ -f $h ]] || { echo "build-calico.sh: $h not found (libelf-dev, libpcap-dev, zlib1g-dev): run hack/install-deps.sh" >&2; exit 1; }
done

mkdir -p "$cache"
exec 9>"$cache/.calico-$CALICO_VERSION.lock"
flock 9
if warm; then
  echo "$out"
  exit 0
fi

work=$(mktemp -d "$cache/.build-calico.XXXXXX")
# The source goes to the same path every time (under the lock), so a rebuild for a new recipe
# finds Go's build cache warm for Calico's own packages too.
src=$cache/.src-calico-$CALICO_VERSION
trap 'rm -rf "$work" "$src"' EXIT
began=$SECONDS
log() { echo "build-calico.sh: $* ($((SECONDS - began))s)" >&2; }

# --- binaries -------------------------------------------------------------------------------
rm -rf "$src"
mkdir -p "$src" "$work/bin"
tar -xzf "$src_tar" -C "$src"
libbpf=$src/felix/bpf-gpl/libbpf
mkdir -p "$libbpf"
tar -xzf "$libbpf_tar" -C "$libbpf" --strip-components=1
# As Calico's felix/Makefile builds it: a static libbpf in src/amd64, linked into calico-node.
make -s -C "$libbpf/src" -j"$(nproc)" BUILD_STATIC_ONLY=1 OBJDIR=amd64 >&2
log "libbpf built"

# The module's go.mod replaces ./api and ./lib/*: build inside the tree. The archive has no .git.
export GOWORK=off GOFLAGS=-buildvcs=false
ldflags="-s -w -X github.com/projectcalico/calico/pkg/buildinfo.Version=$CALICO_VERSION"
# calico-node with cgo, as node/Makefile builds it: Felix's BPF code needs libbpf, and the
# CGO_ENABLED=0 build's BPF stubs panic when Felix touches BPF maps at start-up. mountns (run by
# `calico-node -init`) is cgo too: its constructor enters the namespaces before Go starts.
(cd "$src" && CGO_ENABLED=1 \
  CGO_CFLAGS="-I$libbpf/src -I$src/felix/bpf-gpl" \
  CGO_LDFLAGS="-L$libbpf/src/amd64 -lbpf -lelf -lz" \
  go build -trimpath -ldflags "$ldflags" -o "$work/bin/" ./node/cmd/calico-node ./node/cmd/mountns) >&2
log "calico-node and mountns built"
# The CNI plugin (calico and calico-ipam are one binary that looks at its name), its installer
# and the kube-controllers are static, as their Makefiles build them.
(cd "$src" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$work/bin/" \
  ./cni-plugin/cmd/calico ./cni-plugin/cmd/install \
  ./kube-controllers/cmd/kube-controllers ./kube-controllers/cmd/check-status) >&2
cp "$work/bin/calico" "$work/bin/calico-ipam"
# Calico's image builds these from its fork of containernetworking/plugins; the upstream module
# at the version Calico requires is what the proxy has. flannel (for Canal) is left out.
(cd "$work" && CGO_ENABLED=0 GOBIN=$work/bin go install -trimpath -ldflags "-s -w" \
  "github.com/containernetworking/plugins/plugins/ipam/host-local@$CNI_PLUGINS_VERSION" \
  "github.com/containernetworking/plugins/plugins/meta/portmap@$CNI_PLUGINS_VERSION" \
  "github.com/containernetworking/plugins/plugins/main/loopback@$CNI_PLUGINS_VERSION" \
  "github.com/containernetworking/plugins/plugins/meta/tuning@$CNI_PLUGINS_VERSION") >&2
log "CNI plugin, kube-controllers and containernetworking plugins built"
version=$("$work/bin/calico-node" -v)
if [[ $version != "Version:      $CALICO_VERSION"$'\n'* ]]; then
  echo "build-calico.sh: calico-node -v printed \"$version\", want version $CALICO_VERSION" >&2
  exit 1
fi

# --- root filesystems -----------------------------------------------------------------------
# What calico-node and the programs it executes need at run time (felix: iptables-*-save/restore
# of both backends, ipset, conntrack, nft, bpftool; the image's scripts: sh, runit's runsvdir, sv;
# every shared library they load). Missing libraries are found by the check below, not guessed.
debs=(
  libc6 libgcc-s1
  busybox-static runit netbase
  libpcap0.8 libdbus-1-3 libsystemd0 libcap2 libgcrypt20 libgpg-error0 liblz4-1 liblzma5 libzstd1
  libelf1 zlib1g
  iptables libxtables12 libip4tc2 libip6tc2 libnftnl11 libmnl0 libnfnetlink0 libnetfilter-conntrack3
  ipset libipset13
  nftables libnftables1 libjansson4 libgmp10 libedit2 libbsd0 libmd0 libtinfo6
  conntrack libnetfilter-cthelper0 libnetfilter-cttimeout1 libnetfilter-queue1
  bpftool
)
mkdir -p "$work/debs"
if ! (cd "$work/debs" && apt-get download -q -o APT::Sandbox::User=root "${debs[@]}" >/dev/null 2>"$work/apt.log"); then
  # A fresh machine's package lists may be missing or stale.
  apt-get update -qq >&2
  (cd "$work/debs" && apt-get download -q -o APT::Sandbox::User=root "${debs[@]}" >/dev/null) || {
    cat "$work/apt.log" >&2
    echo "build-calico.sh: apt-get download ${debs[*]} failed" >&2
    exit 1
  }
fi

rootfs=$work/out/rootfs
node=$rootfs/node
mkdir -p "$node"
for deb in "$work/debs"/*.deb; do
  dpkg-deb -x "$deb" "$node"
  # shellcheck disable=SC2016 # dpkg-deb expands the fields
  dpkg-deb -W --showformat='${Package} ${Version}\n' "$deb" >>"$work/out/debs.txt"
done
sort -o "$work/out/debs.txt" "$work/out/debs.txt"
rm -rf "${node:?}/usr/share/doc" "$node/usr/share/man" "$node/usr/share/info" "$node/usr/share/lintian" \
  "$node/usr/share/bug" "$node/etc/init.d" "$node/etc/sv" "$node/etc/runit" "$node/etc/service"
# Maintainer scripts do not run under dpkg -x: make the links they would have made. busybox
# provides the shell and the utilities the image's scripts call (cat, cp, mkdir, env, which, …);
# iptables points at the nft backend, Debian's default and what Calico's image installs.
for applet in $("$node/bin/busybox" --list-full); do
  [[ -e $node/$applet || -L $node/$applet ]] || { mkdir -p "$node/$(dirname "$applet")"; ln -s /bin/busybox "$node/$applet"; }
done
for t in iptables ip6tables; do
  for suffix in "" -save -restore; do
    ln -sf "$t-nft$suffix" "$node/usr/sbin/$t$suffix"
  done
done
# Calico's image: node/filesystem/etc → /etc, node/filesystem/sbin → /usr/sbin (start_runit,
# rc.local and the runit service scripts that run -startup, -allocate-tunnel-addrs, -felix and
# -node-services), calico-node and mountns in /bin.
cp -a "$src/node/filesystem/etc/." "$node/etc/"
cp -a "$src/node/filesystem/sbin/." "$node/usr/sbin/"
install -m 0755 "$work/bin/calico-node" "$work/bin/mountns" "$node/bin/"
mkdir -p "$node/licenses" && cp "$src/LICENSE.md" "$node/licenses/LICENSE"

# cni: the static plugins in /opt/cni/bin (install copies all of them to the host's).
cni=$rootfs/cni
mkdir -p "$cni/opt/cni/bin" "$cni/licenses" "$cni/tmp"
install -m 0755 "$work/bin/"{calico,calico-ipam,install,host-local,portmap,loopback,tuning} "$cni/opt/cni/bin/"
cp "$src/LICENSE.md" "$cni/licenses/LICENSE"

# kube-controllers: static binaries; its status and profile files writable by user 999.
kc=$rootfs/kube-controllers
mkdir -p "$kc/usr/bin" "$kc/status" "$kc/profiles" "$kc/licenses" "$kc/tmp"
install -m 0755 "$work/bin/kube-controllers" "$work/bin/check-status" "$kc/usr/bin/"
touch "$kc/status/status.json" "$kc/profiles/mem.pprof" "$kc/profiles/cpu.pprof"
chown 999 "$kc/status/status.json" "$kc/profiles/mem.pprof" "$kc/profiles/cpu.pprof"
cp "$src/LICENSE.md" "$kc/licenses/LICENSE"

# What a container runtime expects to find or mount over in every image.
for fs in "$node" "$cni" "$kc"; do
  mkdir -p "$fs/proc" "$fs/sys" "$fs/dev" "$fs/etc" "$fs/run" "$fs/tmp" "$fs/var"
  chmod 1777 "$fs/tmp"
  [[ -e $fs/var/run ]] || ln -s ../run "$fs/var/run"
  [[ -e $fs/etc/passwd ]] || printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n' >"$fs/etc/passwd"
  [[ -e $fs/etc/group ]] || printf 'root:x:0:\nnogroup:x:65534:\n' >"$fs/etc/group"
  touch "$fs/etc/hosts" "$fs/etc/hostname" "$fs/etc/resolv.conf"
done

# Image names and configurations, as Calico's Dockerfiles set them.
path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
cat >"$rootfs/node.json" <<JSON
{"name": "quay.io/calico/node:$CALICO_VERSION",
 "config": {"Env": ["PATH=$path", "SVDIR=/etc/service/enabled"], "Cmd": ["start_runit"]}}
JSON
cat >"$rootfs/cni.json" <<JSON
{"name": "quay.io/calico/cni:$CALICO_VERSION",
 "config": {"Env": ["PATH=/opt/cni/bin:$path"], "Cmd": ["/opt/cni/bin/install"], "WorkingDir": "/opt/cni/bin"}}
JSON
cat >"$rootfs/kube-controllers.json" <<JSON
{"name": "quay.io/calico/kube-controllers:$CALICO_VERSION",
 "config": {"Env": ["PATH=$path"], "Entrypoint": ["/usr/bin/kube-controllers"], "User": "999"}}
JSON

# Every dynamically linked program in the node rootfs must find all its libraries inside it:
# ask the rootfs's own loader, under chroot so that nothing of the host can stand in.
missing=0
while IFS= read -r -d '' f; do
  head -c4 "$f" | grep -q $'^\x7fELF' || continue
  rel=/${f#"$node"/}
  if ! listing=$(chroot "$node" /lib64/ld-linux-x86-64.so.2 --list "$rel" 2>&1); then
    grep -q "not a dynamic executable" <<<"$listing" && continue
  fi
  if grep -q "not found" <<<"$listing"; then
    echo "build-calico.sh: $rel: $(grep "not found" <<<"$listing" | paste -sd' ')" >&2
    missing=1
  fi
done < <(find "$node/bin" "$node/sbin" "$node/usr/bin" "$node/usr/sbin" -type f -print0)
if [[ $missing -ne 0 ]]; then
  echo "build-calico.sh: libraries missing from the node rootfs: add their Debian packages to debs" >&2
  exit 1
fi
log "root filesystems made"

mv "$work/bin" "$work/out/bin"
echo "$RECIPE" >"$work/out/recipe"
chmod 755 "$work/out"
rm -rf "$out"
mv "$work/out" "$out"
log "done"
echo "$out"
