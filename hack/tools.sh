#!/usr/bin/env bash
# Builds the pinned lint and vulnerability tools from the Go module proxy into a cache outside the
# work tree, one directory per tool and version, so a version bump never reuses a stale build and a
# warm cache returns at once. Binaries are keyed by the Go version too: golangci-lint cannot analyse
# code written for a newer Go than the one it was built with. Nothing is moved into place before it
# has built completely.
#
# vulndb is the Go vulnerability database for `govulncheck -db file://DIR`. vuln.go.dev cannot be
# reached from here, but the Go module proxy serves the database's source repository
# (golang.org/x/vulndb), whose data/osv holds one OSV file per entry; govulncheck indexes such a
# flat directory itself, so the module cache is the database and nothing needs building. Bump
# VULNDB_VERSION (`go list -m golang.org/x/vulndb@latest`) for newer entries.
#
# Usage: hack/tools.sh            build or fetch everything that is missing; prints nothing
#        hack/tools.sh NAME...    the same for NAME; prints the path of each (binary, or database dir)
#        NAME: golangci-lint, govulncheck, vulndb
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/lib.sh"

GOLANGCI_LINT_VERSION=${GOLANGCI_LINT_VERSION:-v2.15.0}
GOVULNCHECK_VERSION=${GOVULNCHECK_VERSION:-v1.9.0}
VULNDB_VERSION=${VULNDB_VERSION:-v0.0.0-20261105234957-e22db6528018}
cache=${CALICO_PREP_CACHE:-/var/cache/calico-prep}/tools

goversion=$(go env GOVERSION)
# The tools' own go.mod decides their dependencies; this module's go.mod and workspace must not.
export GOWORK=off GOFLAGS=-buildvcs=false CGO_ENABLED=0

path_of() {
  case $1 in
    golangci-lint) echo "$cache/golangci-lint-$GOLANGCI_LINT_VERSION-$goversion/golangci-lint" ;;
    govulncheck) echo "$cache/govulncheck-$GOVULNCHECK_VERSION-$goversion/govulncheck" ;;
  esac
}

install() {
  local name=$1 module bin tmp
  case $name in
    golangci-lint) module=github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$GOLANGCI_LINT_VERSION ;;
    govulncheck) module=golang.org/x/vuln/cmd/govulncheck@$GOVULNCHECK_VERSION ;;
  esac
  bin=$(path_of "$name")
  [[ -x $bin ]] && return
  mkdir -p "$cache"
  tmp=$(mktemp -d "$cache/.build-$name.XXXXXX")
  if ! (cd "$tmp" && GOBIN=$tmp go install -trimpath "$module") >"$tmp/build.log" 2>&1; then
    cat "$tmp/build.log" >&2
    rm -rf "$tmp"
    echo "build $module failed" >&2
    return 1
  fi
  rm -f "$tmp/build.log"
  chmod 755 "$tmp"
  rm -rf "$(dirname "$bin")"
  mv "$tmp" "$(dirname "$bin")"
}

# vulndb prints the OSV directory of the pinned database, downloading the module if needed.
vulndb() {
  local json dir
  json=$(cd / && go mod download -json "golang.org/x/vulndb@$VULNDB_VERSION") || { echo "$json" >&2; return 1; }
  dir=$(sed -n 's/^\t"Dir": "\(.*\)",$/\1/p' <<<"$json")
  if [[ ! -d $dir/data/osv ]]; then
    echo "download golang.org/x/vulndb@$VULNDB_VERSION: no data/osv in ${dir:-the module cache}" >&2
    return 1
  fi
  echo "$dir/data/osv"
}

if [[ $# -eq 0 ]]; then
  install golangci-lint
  install govulncheck
  vulndb >/dev/null
  exit 0
fi
for name in "$@"; do
  case $name in
    golangci-lint | govulncheck) install "$name" && path_of "$name" ;;
    vulndb) vulndb ;;
    *) echo "unknown tool $name (known: golangci-lint, govulncheck, vulndb)" >&2; exit 2 ;;
  esac
done
