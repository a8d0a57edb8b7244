#!/usr/bin/env bash
# Runs the pinned golangci-lint with the committed .golangci.yml over the whole module.
# Usage: hack/lint.sh [golangci-lint run flags and packages; default ./...]   e.g. --fix ./pkg/links/...
set -euo pipefail
# Go 1.27.3 (from the Go module proxy) fixes vulnerabilities in 1.26's standard library; see README.
export GOTOOLCHAIN=${GOTOOLCHAIN:-go1.27.3}
[[ $GOTOOLCHAIN == local ]] && export GOTOOLCHAIN=go1.27.3
cd "$(dirname "$0")/.."

lint=$(hack/tools.sh golangci-lint)
"$lint" config verify
exec "$lint" run "$@"
