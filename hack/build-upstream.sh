#!/usr/bin/env bash
# Builds upstream firewalld and NetworkManager releases for the test bed's version matrix (the
# versions RHEL 8/9/10 and Fedora ship, besides Debian's own) into a cache outside the work tree,
# keyed by component, version and recipe. A warm cache returns at once; concurrent callers wait
# for one build (flock). The test bed bind-mounts a built tree over Debian's files inside a node's
# private mount namespace only; nothing is installed on this host.
#
# Usage: hack/build-upstream.sh COMPONENT VERSION   prints the built tree (a DESTDIR root)
#        hack/build-upstream.sh all                 builds every version of the matrix
# COMPONENT is firewalld or NetworkManager. The release tarballs (and python-slip, which
# firewalld 0.9 imports) are read from $CALICO_PREP_UPSTREAM, default <repo>/../shared/upstream.
# Build dependencies come from hack/install-deps.sh.
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/lib.sh"

repo=$(cd "$(dirname "$0")/.." && pwd)
upstream=${CALICO_PREP_UPSTREAM:-$repo/../shared/upstream}
cache=${CALICO_PREP_CACHE:-/var/cache/calico-prep}
# Bump when the recipe below changes what a build produces, so cached trees are rebuilt.
recipe=1
# The versions the suite runs; README's compatibility table lists them.
matrix=(firewalld:0.9.11 firewalld:1.3.4 firewalld:2.5.0 NetworkManager:1.40.18 NetworkManager:1.58.1)
slip_version=0.6.5

usage() {
  echo "usage: ${0##*/} firewalld|NetworkManager VERSION | all" >&2
  exit 2
}

tarball() {
  local f=$upstream/$1
  if [[ ! -d $upstream ]]; then
    echo "${0##*/}: upstream directory $upstream does not exist; set CALICO_PREP_UPSTREAM to the directory holding $1" >&2
    exit 1
  fi
  if [[ ! -f $f ]]; then
    echo "${0##*/}: $f not found; set CALICO_PREP_UPSTREAM to the directory holding it" >&2
    exit 1
  fi
  echo "$f"
}

# ready reports whether a built tree is complete: the last step of a build writes .built.
ready() { [[ -f $1/.built ]]; }

build_firewalld() {
  local version=$1 dest=$2 src
  src=$(tarball "firewalld-$version.tar.gz")
  tar -xzf "$src"
  cd "firewalld-$version" || exit 1
  ./autogen.sh >&2
  PYTHON=/usr/bin/python3 ./configure --disable-docs --prefix=/usr --sysconfdir=/etc --localstatedir=/var >&2
  make -j"$(nproc)" >&2
  make install DESTDIR="$dest" >&2
  local site
  site=$(find "$dest/usr/lib" -maxdepth 3 -type d -path '*/site-packages' -o -maxdepth 3 -type d -path '*/dist-packages' | head -n 1)
  if [[ -z $site || ! -d $site/firewall ]]; then
    echo "${0##*/}: firewalld $version installed no firewall Python package under $dest/usr/lib" >&2
    exit 1
  fi
  if [[ $version == 0.* ]]; then
    # firewalld 0.9 imports slip.dbus (pure Python; not packaged by Debian 12).
    src=$(tarball "python-slip-$slip_version.tar.gz")
    tar -xzf "$src"
    cp -r "python-slip-$slip_version/slip" "$site/slip"
  fi
  echo "${site#"$dest"}" >"$dest/.pythonpath"
}

build_networkmanager() {
  local version=$1 dest=$2 src opts=()
  src=$(tarball "NetworkManager-$version.tar.gz")
  tar -xzf "$src"
  cd "NetworkManager-$version" || exit 1
  # Everything the test bed does not use is off; each version gets only the options it knows.
  local o
  for o in session_tracking=no polkit=false selinux=false libaudit=no wifi=false ppp=false \
    modem_manager=false concheck=false ovs=false nmcli=false nmtui=false nm_cloud_setup=false \
    ebpf=false clat=false nbft=false introspection=false vapi=false docs=false man=false tests=no \
    libpsl=false crypto=null qt=false readline=none teamdctl=false bluez5_dun=false ofono=false \
    iwd=false firewalld_zone=false; do
    if grep -q "^option('${o%%=*}'" meson_options.txt; then
      opts+=("-D$o")
    fi
  done
  meson setup build --prefix=/usr --sysconfdir=/etc --localstatedir=/var --buildtype=release \
    "${opts[@]}" >&2
  ninja -C build -j"$(nproc)" >&2
  DESTDIR="$dest" meson install -C build --no-rebuild >&2
  if [[ ! -x $dest/usr/sbin/NetworkManager ]]; then
    echo "${0##*/}: NetworkManager $version installed no usr/sbin/NetworkManager" >&2
    exit 1
  fi
}

build() {
  local component=$1 version=$2 out
  [[ $version =~ ^[0-9]+(\.[0-9]+)+$ ]] || usage
  out="$cache/upstream/$component-$version-r$recipe"
  if ready "$out"; then
    echo "$out"
    return
  fi
  # A missing tarball fails here, before anything is created.
  tarball "$component-$version.tar.gz" >/dev/null
  mkdir -p "$cache/upstream"
  exec 9>"$cache/upstream/.$component-$version.lock"
  flock 9
  if ready "$out"; then
    exec 9>&-
    echo "$out"
    return
  fi
  local work start=$SECONDS
  work=$(mktemp -d "$cache/upstream/build.XXXXXX")
  # The subshell keeps cd and the EXIT trap to this build.
  (
    trap 'rm -rf "$work"' EXIT
    cd "$work" || exit 1
    echo "building $component $version in $work" >&2
    case $component in
    firewalld) build_firewalld "$version" "$work/root" ;;
    NetworkManager) build_networkmanager "$version" "$work/root" ;;
    *) usage ;;
    esac
    touch "$work/root/.built"
    rm -rf "$out"
    mv "$work/root" "$out"
  )
  exec 9>&-
  echo "built $component $version in $((SECONDS - start))s" >&2
  echo "$out"
}

case ${1:-} in
all)
  [[ $# -eq 1 ]] || usage
  for m in "${matrix[@]}"; do
    build "${m%%:*}" "${m#*:}"
  done
  ;;
firewalld | NetworkManager)
  [[ $# -eq 2 ]] || usage
  build "$1" "$2"
  ;;
*) usage ;;
esac
