#!/usr/bin/env bash
# Runs every native fuzz target in the module (func FuzzXxx in a _test.go file) for FUZZTIME each
# (default 10s; `make fuzz-long` runs 10m), one after another since go test fuzzes one target at a
# time, and ends with a table of executions per target. Fails if any target fails; a crashing
# input is written by go test to the package's testdata/fuzz/FuzzXxx/ and should be committed as a
# regression case together with the fix.
# Usage: hack/fuzz.sh [REGEXP]   only targets whose name matches REGEXP
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."

fuzztime=${FUZZTIME:-10s}
filter=${1:-.}
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

# "dir name" per target; testdata and vendored trees hold no targets of ours.
mapfile -t targets < <(
  grep -rE --include='*_test.go' --exclude-dir=testdata --exclude-dir=vendor --exclude-dir=.git \
    -o '^func Fuzz[A-Za-z0-9_]*\(' . |
    sed -E 's#^\./(.*)/[^/]*:func (Fuzz[A-Za-z0-9_]*)\($#\1 \2#; s#^\./[^/]*:func (Fuzz[A-Za-z0-9_]*)\($#. \1#' |
    awk -v re="$filter" '$2 ~ re' | sort -u
)
if [[ ${#targets[@]} -eq 0 ]]; then
  echo "no fuzz targets match $filter"
  exit 0
fi

rows=()
failed=0
for t in "${targets[@]}"; do
  dir=${t% *} name=${t#* }
  log="$logs/${dir//\//_}.$name.log"
  start=$SECONDS
  if go test -run='^$' -fuzz="^${name}\$" -fuzztime="$fuzztime" "./$dir" >"$log" 2>&1; then
    result=ok
  else
    result=FAIL
    failed=1
    echo "--- $name in ./$dir failed:"
    cat "$log"
  fi
  # go test prints "fuzz: elapsed: 10s, execs: 123456 (12345/sec), ..." every 3s and at the end; the
  # rate there covers only the last interval, so the table shows the totals.
  elapsed='' execs=''
  read -r elapsed execs < <(sed -nE 's/^fuzz: elapsed: ([0-9hms.]+), execs: ([0-9]+) .*/\1 \2/p' "$log" |
    tail -n 1) || true
  rows+=("$(printf '%-30s %-20s %12s %8s %6ss  %s' "$name" "./$dir" "${execs:--}" "${elapsed:--}" \
    $((SECONDS - start)) "$result")")
done

echo
printf '%-30s %-20s %12s %8s %7s  %s\n' TARGET PACKAGE EXECS FUZZED WALL RESULT
printf '%s\n' "${rows[@]}"
exit "$failed"
