#!/usr/bin/env bash
# Runs the tests of pkg/ and cmd/ as an unprivileged user (nobody), the way a contributor without
# root runs them: every test that needs no root must pass, and those that need namespaces, daemons
# or the machine-wide cache must skip, saying why (testkit.NeedsRoot). The test binaries are built
# as the caller (root in the suite, so the Go caches stay writable) into a directory nobody can
# read, then run as nobody from their package directories.
# Usage: hack/test-nonroot.sh [PACKAGES]     default ./pkg/... ./cmd/...
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."

[[ $# -gt 0 ]] || set -- ./pkg/... ./cmd/...
if [[ $(id -u) -ne 0 ]]; then
  exec go test -count=1 "$@"
fi
bins=$(mktemp -d)
trap 'rm -rf "$bins"' EXIT
chmod 755 "$bins"
mapfile -t pkgs < <(go list -f '{{if or .TestGoFiles .XTestGoFiles}}{{.ImportPath}} {{.Dir}}{{end}}' "$@")
failed=()
for p in "${pkgs[@]}"; do
  path=${p% *} dir=${p#* }
  bin=$bins/${path//\//_}.test
  go test -c -o "$bin" "$path"
  # A fresh HOME and TMPDIR nobody can write; no capability survives the switch.
  if ! (cd "$dir" && env -u CALICO_PREP_TEST_AS_ROOT HOME=/tmp TMPDIR=/tmp \
    setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all --bounding-set=-all \
    "$bin" -test.count=1 -test.v >"$bin.log" 2>&1); then
    failed+=("$path")
    echo "--- $path failed as nobody:"
    grep -v -e '^=== ' -e '^    --- PASS' -e '^--- PASS' "$bin.log"
  else
    skips=$(grep -c -- '--- SKIP' "$bin.log" || true)
    echo "ok   $path (as nobody; $skips skipped)"
  fi
done
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "failed without root: ${failed[*]}" >&2
  exit 1
fi
