#!/usr/bin/env bash
# Installs the Debian packages the test suite and the demo need, without starting any of them on
# this host: a policy-rc.d that exits 101 stops every maintainer script from starting a service,
# and the real daemons are only ever started inside the test bed's namespaces. An existing
# policy-rc.d is used as it is (and left as it is) when it exits 101; otherwise nothing is installed.
#
# Usage: hack/install-deps.sh     exit 0 when every package is installed afterwards
# POLICY_RC_D overrides the policy file's path (for the script's own test).
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/lib.sh"

packages=(dbus firewalld network-manager nftables python3-nftables iproute2 iptables prometheus
  make git ca-certificates jq shellcheck systemd runc)
# Build dependencies of the firewalld and NetworkManager versions hack/build-upstream.sh builds for
# the version matrix, and python3-decorator, which firewalld 0.9's python-slip imports.
packages+=(autoconf automake intltool gettext xsltproc pkg-config libglib2.0-dev python3-gi python3-dbus
  python3-decorator python3-setuptools meson ninja-build gcc libudev-dev libndp-dev libdbus-1-dev
  uuid-dev libsystemd-dev ipset)
# Build dependencies of Calico (hack/build-calico.sh): libbpf needs libelf and zlib; Felix's BPF
# filter code imports gopacket/pcap.
packages+=(libelf-dev libpcap-dev zlib1g-dev)
policy=${POLICY_RC_D:-/usr/sbin/policy-rc.d}

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

missing=()
for p in "${packages[@]}"; do
  if ! installed "$p"; then
    missing+=("$p")
  fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi

echo "installing: ${missing[*]}" >&2
if [[ -e $policy ]]; then
  if ! grep -qx 'exit 101' "$policy"; then
    echo "install-deps.sh: $policy exists and does not exit 101; refusing to install packages that could start services" >&2
    exit 1
  fi
else
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  trap 'rm -f "$policy"' EXIT
fi

export DEBIAN_FRONTEND=noninteractive
if ! apt-get update -qq; then
  echo "install-deps.sh: apt-get update failed" >&2
  exit 1
fi
if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
  echo "install-deps.sh: apt-get install ${missing[*]} failed" >&2
  exit 1
fi
for p in "${missing[@]}"; do
  if ! installed "$p"; then
    echo "install-deps.sh: $p is still not installed after apt-get install" >&2
    exit 1
  fi
done
