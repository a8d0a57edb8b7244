# See README.md. Every target runs as root on Debian.
SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(PATH)
# Go 1.27.3 (from the Go module proxy) fixes vulnerabilities in 1.26's standard library.
export GOTOOLCHAIN := go1.27.3
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# The one build command; the Dockerfile runs the same line.
GOBUILD = CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$(VERSION)"

.PHONY: build demo test check bench fuzz-long soak

build:
	$(GOBUILD) -o bin/agent ./cmd/agent

# The agent's full job against a sandboxed node (real firewalld, NetworkManager, netlink links).
demo:
	hack/demo.sh

# The whole suite, installing what it needs (README's test command; .ci/run runs it).
test:
	hack/test.sh

# Quick gates before a commit: format, vet, lint, race tests of pkg and cmd, short fuzz, vulnerabilities.
check:
	hack/tools.sh
	@out=$$(gofmt -l $$(git ls-files '*.go')); [[ -z $$out ]] || { echo "gofmt would change:"; echo "$$out"; exit 1; }
	go vet ./...
	hack/lint.sh
	go test -race -count=1 ./pkg/... ./cmd/...
	FUZZTIME=5s hack/fuzz.sh
	hack/vulncheck.sh

bench:
	hack/bench.sh

fuzz-long:
	FUZZTIME=10m hack/fuzz.sh

# The fault soak for SOAK (default an hour; the suite runs its sequence once, in minutes): the
# agent against real firewalld, NetworkManager, dbus-daemon and kube-apiserver under repeated
# faults. Its last lines are the figures: faults survived, worst recoveries, RSS/fds/goroutines.
SOAK ?= 1h
soak:
	go test -run '^TestFaultSoak$$' -count=1 -timeout 3h -v ./test/e2e -soak=$(SOAK)
