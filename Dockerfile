# syntax=docker/dockerfile:1
# Multi-stage build of the calico-prep agent: a static binary, built with exactly the Makefile's
# GOBUILD line (test/deploy checks that and runs this RUN line), in a distroless base that has CA
# certificates and nothing else.
#   docker build --build-arg VERSION=$(git describe --tags --always) -t ghcr.io/calico-prep/calico-prep:TAG .
# Go 1.27.3 fixes vulnerabilities in 1.26's standard library (see README).
ARG GO_VERSION=1.27.3
FROM golang:${GO_VERSION} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/agent ./cmd/agent

FROM gcr.io/distroless/static-debian12 AS runtime
ARG VERSION=dev
LABEL org.opencontainers.image.title="calico-prep" \
      org.opencontainers.image.description="Prepares every Kubernetes node for Calico before Calico is installed and reports readiness" \
      org.opencontainers.image.source="https://github.com/calico-prep/calico-prep" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/agent /agent
# Root is what the system bus policies of firewalld and NetworkManager allow; the DaemonSet
# drops every capability and forbids privilege escalation.
USER 0:0
ENTRYPOINT ["/agent", "run"]
