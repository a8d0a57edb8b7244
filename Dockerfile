# syntax=docker/dockerfile:1
# Multi-stage build of the calico-prep agent: a static binary (the same `make build` line the
# tests use) in a distroless base that has CA certificates and nothing else.
ARG GO_VERSION=1.27.3
FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/agent ./cmd/agent

FROM gcr.io/distroless/static-debian12:nonroot AS runtime
ARG VERSION=dev
LABEL org.opencontainers.image.title="calico-prep" \
      org.opencontainers.image.description="Prepares every Kubernetes node for Calico before Calico is installed and reports readiness" \
      org.opencontainers.image.source="https://github.com/calico-prep/calico-prep" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/agent /agent
# Root is needed for the system bus policy of firewalld and NetworkManager; the DaemonSet sets it.
USER 0:0
ENTRYPOINT ["/agent", "run"]
