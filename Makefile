# husk: `make run` starts the daemon, `make test` runs every test. Both
# install what they need on a fresh Debian 12 machine (as root).

GO       ?= go
BIN      := bin
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo 0.1.0-dev)
LDFLAGS  := -X main.version=$(VERSION)
GOBIN    := $(shell $(GO) env GOPATH)/bin
CRICTL   := $(GOBIN)/crictl
GOTESTSUM := $(GOBIN)/gotestsum
GOLANGCI := $(GOBIN)/golangci-lint
CONFIG   ?= /etc/husk/config.toml

.PHONY: all build run test test-unit test-e2e deps lint bench clean

all: build

build:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/husk ./cmd/husk

# System packages the tests and the daemon use. Idempotent and quick when
# everything is there already.
deps:
	@missing=""; for p in iptables busybox; do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi

$(CRICTL):
	GOFLAGS= $(GO) install sigs.k8s.io/cri-tools/cmd/crictl@v1.37.0

$(GOTESTSUM):
	GOFLAGS= $(GO) install gotest.tools/gotestsum@v1.12.3

$(GOLANGCI):
	GOFLAGS= $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@v2.5.0

run: build deps
	$(BIN)/husk serve --config $(CONFIG)

test: build deps lint $(CRICTL) $(GOTESTSUM)
	go vet ./...
	$(GOTESTSUM) --format testname -- -count=1 -timeout 40m ./...

lint: $(GOLANGCI)
	$(GOLANGCI) run ./...

# Figures: see docs/benchmarks.md.
bench: build
	$(GO) test -run '^$$' -bench . -benchtime 10x ./test/e2e/ ./oci/image/

clean:
	rm -rf $(BIN)
