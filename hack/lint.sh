#!/usr/bin/env bash
# Runs the pinned golangci-lint with the committed .golangci.yml over the whole module.
# Usage: hack/lint.sh [golangci-lint run flags and packages; default ./...]   e.g. --fix ./pkg/links/...
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."

lint=$(hack/tools.sh golangci-lint)
"$lint" config verify
exec "$lint" run "$@"
