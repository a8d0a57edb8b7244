# Sourced by every script under hack/: strict mode, one line on stderr naming the command and line
# of any failure that the script does not report itself (no silent non-zero exit), and the Go
# toolchain the project builds with.
# shellcheck shell=bash
set -Eeuo pipefail

# hack_failed reports the first failing command only: with errtrace (-E) the trap also fires in
# every function the failure returns through.
hack_failed() {
  [[ -z ${hack_reported:-} ]] || return 0
  hack_reported=1
  echo "${0##*/}: line $3: '$2' failed with exit status $1" >&2
}
trap 'hack_failed $? "$BASH_COMMAND" "$LINENO"' ERR

# Go 1.27.3 (from the Go module proxy) fixes vulnerabilities in 1.26's standard library; see README.
export GOTOOLCHAIN=${GOTOOLCHAIN:-go1.27.3}
if [[ $GOTOOLCHAIN == local ]]; then
  export GOTOOLCHAIN=go1.27.3
fi
export PATH=/usr/local/go/bin:$PATH
