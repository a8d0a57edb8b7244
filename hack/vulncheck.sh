#!/usr/bin/env bash
# Runs the pinned govulncheck over the module against the pinned Go vulnerability database (see
# hack/tools.sh for where that comes from) and prints one line per known vulnerability: REACHABLE
# when our code calls the vulnerable symbol (with one example call path, taken from product code
# under pkg/ or cmd/ when there is one), imported when only the package is imported, required when
# only the module is in the build list. Any REACHABLE one fails the run with exit status 3, as
# govulncheck itself does.
# Usage: hack/vulncheck.sh [PACKAGES]            summary over PACKAGES (default ./...)
#        hack/vulncheck.sh -FLAG... PACKAGES     govulncheck's own report, e.g. -show verbose ./...
#        VULNDB=https://vuln.go.dev hack/vulncheck.sh   another database, where one is reachable
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."

govulncheck=$(hack/tools.sh govulncheck)
db=${VULNDB:-}
if [[ -z $db ]]; then
  osv=$(hack/tools.sh vulndb)
  db=file://$osv
  mod=${osv%/data/osv}
  latest=$(find "$osv" -name "GO-*.json" -printf "%f\n" | sort -V | tail -n 1)
  echo "vulnerability database: golang.org/x/${mod##*/}, newest entry ${latest%.json}"
else
  echo "vulnerability database: $db"
fi
for a in "$@"; do [[ $a != -* ]] || exec "$govulncheck" -db "$db" "$@"; done
[[ $# -gt 0 ]] || set -- ./...

out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$govulncheck" -db "$db" -format json "$@" >"$out"

# govulncheck's JSON is a stream of messages; a finding's trace runs from the vulnerable symbol
# (trace[0]) to the entry point in our code (last frame). Its depth tells the level: a function
# means reachable, a package imported, a bare module required.
jq -rs '
  def level: if .trace[0].function then 3 elif .trace[0].package then 2 else 1 end;
  def name: (.package // .module | split("/") | last) + "."
    + (if .receiver then (.receiver | ltrimstr("*")) + "." else "" end) + (.function // "");
  (map(select(.osv) | .osv | {key: .id, value: .summary}) | from_entries) as $summary
  | map(select(.finding) | .finding | . + {level: level})
  | group_by([.osv, .trace[0].module])
  | map(max_by(.level) as $top
      | map(select(.level == 3)) as $calls
      | ($calls | map(select(.trace[-1].position.filename // "" | test("^(pkg|cmd)/")))) as $product
      | {id: $top.osv, level: $top.level, product: ($product | length > 0),
         module: "\($top.trace[0].module)@\($top.trace[0].version // "")", fixed: ($top.fixed_version // "none"),
         summary: $summary[$top.osv],
         example: (($product + $calls)[0] // null
           | if . then "\(.trace[-1].position.filename // "?"):\(.trace[-1].position.line // "?") \(.trace[-1] | name) -> \(.trace[0] | name)" else null end)})
  | sort_by(-.level, .id)
  | (.[] | "\(["", "required", "imported", "REACHABLE"][.level] | . + " " * (10 - length))\(.id)  \(.module) (fixed in \(.fixed))  \(.summary)"
           + (if .example then "\n            e.g. \(.example)" + (if .product then "" else "  (test helpers only)" end) else "" end)),
    "\(map(select(.level == 3)) | length) reachable (\(map(select(.product)) | length) from pkg/ or cmd/), \(map(select(.level == 2)) | length) only imported, \(map(select(.level == 1)) | length) only required"
' "$out"
if jq -es 'any(.[]; .finding.trace[0].function != null)' "$out" >/dev/null; then
  exit 3
fi
