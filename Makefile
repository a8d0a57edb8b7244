# See README.md. Every target runs as root on Debian.
SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(PATH)
# Go 1.27.3 (from the Go module proxy) fixes vulnerabilities in 1.26's standard library.
export GOTOOLCHAIN := go1.27.3
# Evaluated once: a recursive variable would re-run git at each use, and a tree that changes
# during `make image` would give the binary and the image tag different versions.
ifeq ($(origin VERSION),undefined)
VERSION := $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
endif
# The one build command; the Dockerfile runs the same line.
GOBUILD = CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$(VERSION)"

.PHONY: build image e2e-cluster e2e-calico demo test check bench fuzz-long soak calico

build:
	$(GOBUILD) -o bin/agent ./cmd/agent

# The agent's OCI image without Docker or a registry: the GOBUILD binary for each platform, alone
# in an empty base (the agent trusts only the cluster CA its ServiceAccount mount brings, so it
# needs no CA bundle), packed by hack/ocibuild into one OCI layout tar with an SPDX SBOM beside it.
# The same sources give the same digest (SOURCE_DATE_EPOCH, default 0, dates everything).
# Load it with `ctr -n k8s.io images import bin/calico-prep.oci.tar` or `skopeo copy oci-archive:…`.
IMAGE_REPO ?= ghcr.io/calico-prep/calico-prep
IMAGE_TAGS ?= $(VERSION)
IMAGE_PLATFORMS ?= linux/amd64 linux/arm64
IMAGE_OUT ?= $(CURDIR)/bin
image:
	rm -rf $(IMAGE_OUT)/image-rootfs
	set -e; for p in $(IMAGE_PLATFORMS); do \
	  GOOS=$${p%/*} GOARCH=$${p#*/} $(GOBUILD) -o $(IMAGE_OUT)/image-rootfs/$${p/\//-}/agent ./cmd/agent; \
	done
	GOWORK=off go -C hack/ocibuild run . -o $(IMAGE_OUT)/calico-prep.oci.tar -sbom $(IMAGE_OUT)/calico-prep.spdx.json \
	  $(foreach p,$(IMAGE_PLATFORMS),-platform $(p)=$(IMAGE_OUT)/image-rootfs/$(subst /,-,$(p))) \
	  $(foreach t,$(IMAGE_TAGS),-name $(IMAGE_REPO):$(t)) \
	  -entrypoint '["/agent","run"]' -user 0:0 \
	  -label org.opencontainers.image.title=calico-prep \
	  -label "org.opencontainers.image.description=Prepares every Kubernetes node for Calico before Calico is installed and reports readiness" \
	  -label org.opencontainers.image.source=https://github.com/calico-prep/calico-prep \
	  -label org.opencontainers.image.version=$(VERSION) \
	  > $(IMAGE_OUT)/calico-prep.oci.digest
	rm -rf $(IMAGE_OUT)/image-rootfs
	@echo "$(IMAGE_OUT)/calico-prep.oci.tar $$(cat $(IMAGE_OUT)/calico-prep.oci.digest)"

# The DaemonSet under a real kubelet and containerd in a two-node test-bed cluster (README,
# "Deploy"); hack/test.sh runs it too.
e2e-cluster:
	hack/e2e-cluster.sh

# The acceptance test: the real Calico, built from source, on a two-node cluster prepared by
# calico-prep (README, "The proof"); hack/test.sh runs it too.
e2e-calico:
	hack/e2e-calico.sh

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

# Calico built from ../shared/upstream's source into the cache: binaries and its images' root filesystems.
calico:
	hack/build-calico.sh

