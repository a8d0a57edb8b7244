#!/usr/bin/env bash
# Installs the Debian packages the test suite and the demo need, without starting any of them on
# this host: a policy-rc.d that exits 101 stops every maintainer script from starting a service,
# and the real daemons are only ever started inside the test bed's namespaces.
set -euo pipefail

packages=(dbus firewalld network-manager nftables python3-nftables iproute2 iptables prometheus
  make git ca-certificates)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

echo "installing: ${missing[*]}" >&2
policy=/usr/sbin/policy-rc.d
created=
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy"
  chmod 755 "$policy"
  created=1
fi
cleanup() { [[ -n $created ]] && rm -f "$policy"; }
trap cleanup EXIT
if ! grep -q '^exit 101' "$policy"; then
  echo "$policy exists and does not exit 101; refusing to install packages that could start services" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
