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
CNI_BIN  ?= /opt/cni/bin
CNI_CONF ?= /etc/cni/net.d

.PHONY: all build run test unit e2e deps cni-plugins criu lint bench bench-compare clean kubelet-test critest fuzz vm-test vm-cluster-test vm-deps cluster cluster-test

all: build

# deps first: building needs libseccomp-dev and pkg-config.
build: deps
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/husk ./cmd/husk
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/husk-runtime ./cmd/husk-runtime

# System packages the tests and the daemon use. Idempotent and quick when
# everything is there already.
deps:
	@missing=""; for p in iptables iproute2 procps busybox libseccomp-dev pkg-config gcc libc6-dev runc crun; do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi

$(CRICTL):
	GOFLAGS= $(GO) install sigs.k8s.io/cri-tools/cmd/crictl@v1.37.0

$(GOTESTSUM):
	GOFLAGS= $(GO) install gotest.tools/gotestsum@v1.12.3

$(GOLANGCI):
	GOFLAGS= $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@v2.5.0

# CRIU, which checkpoints and restores run, built from Debian's source
# (hack/install-criu.sh says why not Debian 12's package); husk finds it
# next to itself.
criu: deps
	sh hack/install-criu.sh $(BIN)

# The standard CNI plugins, built from the plugins module pinned in go.mod.
cni-plugins:
	sh hack/install-cni-plugins.sh $(CNI_BIN)

# Writes the default pod network (bridge husk0, 10.88.0.0/16) only when
# $(CNI_CONF) has no network config.
run: build deps cni-plugins criu
	$(BIN)/husk default-cni-config --dir $(CNI_CONF)
	$(BIN)/husk serve $(if $(wildcard $(CONFIG)),--config $(CONFIG),) --cni-conf-dir $(CNI_CONF) --cni-bin-dir $(CNI_BIN)

# Lint, the unit tests, every test as root here (e2e), then the same suites
# in a Debian 12 guest with pure cgroup v2 and systemd (make vm-test), where
# the machine can boot one (hack/vm/available.sh).
test: build deps lint unit e2e
	@if reason=$$(sh hack/vm/available.sh 2>&1); then $(MAKE) --no-print-directory vm-test; \
	else echo "vm-test skipped: $$reason"; fi

# Every package's tests as root on this machine: the host's part of `make
# test`. -p 1: the network and e2e tests count host-wide veths, iptables
# rules and cgroups to prove nothing leaks; run at once, they would count
# each other's. critest (cri-tools' validation suite) runs with the e2e
# tests: the critest build tag adds TestCritest, CRITEST names the binary.
e2e: build deps cni-plugins criu $(CRICTL) $(GOTESTSUM) $(BIN)/critest
	go vet ./...
	CRITEST=$(CURDIR)/$(BIN)/critest $(GOTESTSUM) --format testname -- -tags critest -p 1 -count=1 -timeout 40m ./...

# The tests that need neither root nor the machine's namespaces, cgroups
# or network: seconds, with the race detector (which `make test`'s root
# suites, one process per package, do not run under).
UNIT_PKGS := ./cmd/husk ./cri/... ./internal/... ./oci/runtime/engine ./oci/runtime/execserver ./oci/runtime/monitor ./oci/runtime/shim ./oci/runtime/spec ./test/imagetest
unit: deps
	$(GO) test -race -count=1 $(UNIT_PKGS)

# A real kubelet (standalone mode, static pods) on husk; not in `make test`
# because building kubelet takes ~8 minutes. Debian's containerd is the
# peer whose stats kubelet reports the way husk's must be reported.
kubelet-test: build deps cni-plugins
	@dpkg -s containerd >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq containerd; }
	sh hack/build-kubernetes.sh $(CURDIR)/$(BIN) kubelet
	KUBELET=$(CURDIR)/$(BIN)/kubelet $(GO) test -tags kubelet -count=1 -run 'TestKubelet' -v ./test/e2e/

# A one-node Kubernetes cluster on husk (API server, controller manager,
# scheduler, etcd, kubelet, kube-proxy, CoreDNS), tested through kubectl
# (test/e2e/cluster_test.go); the binaries are built once into $(BIN)
# (hack/build-cluster.sh, ~25 minutes the first time). `make cluster`
# leaves it running until interrupted.
cluster-test: build deps cni-plugins $(CRICTL)
	sh hack/build-cluster.sh $(CURDIR)/$(BIN)
	@[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ] || modprobe br_netfilter
	KUBE_BIN=$(CURDIR)/$(BIN) $(GO) test -tags cluster -count=1 -timeout 30m -run TestCluster -v ./test/e2e/

cluster: build deps cni-plugins $(CRICTL)
	sh hack/build-cluster.sh $(CURDIR)/$(BIN)
	@[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ] || modprobe br_netfilter
	HUSK_CLUSTER_HOLD=1 KUBE_BIN=$(CURDIR)/$(BIN) $(GO) test -tags cluster -count=1 -timeout 0 -run TestCluster -v ./test/e2e/

# cri-tools' validation suite against husk, the suites that need images or
# kernel features this machine lacks skipped (test/e2e/critest_test.go).
critest: build deps cni-plugins $(BIN)/critest
	CRITEST=$(CURDIR)/$(BIN)/critest $(GO) test -tags critest -count=1 -timeout 20m -run TestCritest -v ./test/e2e/

$(BIN)/critest:
	sh hack/build-critest.sh $(CURDIR)/$(BIN)

# The cgroup, namespace, network, sandbox and e2e tests as root in a Debian 12
# guest under qemu (systemd PID 1, cgroup v2 only), the e2e suite once per
# cgroup driver; the guest image is built once into /var/cache/husk-vm
# (hack/vm/build-image.sh). VM_SUITES picks suites (hack/vm/test.sh).
vm-test: build vm-deps
	bash hack/vm/test.sh $(VM_SUITES)

# The one-node cluster of cluster-test in the guest, with kubelet's systemd
# cgroup driver (kubeadm's default): some 40 minutes under TCG.
vm-cluster-test: build vm-deps
	bash hack/vm/test.sh cluster

vm-deps:
	@missing=""; for p in qemu-system-x86 debootstrap e2fsprogs; do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi

lint: $(GOLANGCI)
	$(GOLANGCI) run ./...

# Fuzzes each target for FUZZTIME (their seeds run in `make test`); a
# crash is written under the package's testdata/fuzz, where it becomes a
# seed: commit it with the fix.
FUZZTIME ?= 60s
FUZZ_TARGETS := ./cri/validate:FuzzRunPodSandboxRequest ./cri/validate:FuzzCreateContainerRequest \
	./cri/validate:FuzzCPUList ./oci/runtime/spec:FuzzGenerate ./oci/image:FuzzParseReference ./cmd/husk:FuzzLoadConfig ./oci/runtime/shim:FuzzReadExecProfile
fuzz: deps
	@set -e; for t in $(FUZZ_TARGETS); do \
		echo "fuzzing $${t#*:} in $${t%%:*} for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$${t#*:}$$" -fuzztime $(FUZZTIME) "$${t%%:*}"; \
	done

# Figures: see docs/benchmarks.md.
bench: build
	$(GO) test -run '^$$' -bench . -benchtime 10x ./test/e2e/ ./oci/image/

# The workloads of issue 13 against husk and against Debian's containerd
# 1.6 with runc, alternately, in one run (test/e2e/compare*_bench_test.go):
# the per-operation table, then the scale curve to 250 pods. The tables go
# to stdout and, with their data and the scale curve's plots (hack/benchplot,
# a module of its own), to $(BENCH_OUT). COMPARE picks one of the two.
BENCH_OUT ?= $(CURDIR)/$(BIN)/bench
COMPARE ?= ^BenchmarkCompare
bench-compare: build deps cni-plugins
	@dpkg -s containerd >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq containerd; }
	mkdir -p $(BENCH_OUT)
	HUSK_BENCH_OUT=$(BENCH_OUT) $(GO) test -run '^$$' -bench '$(COMPARE)' -benchtime 1x -timeout 90m -v ./test/e2e/
	@if [ -f $(BENCH_OUT)/scale.csv ]; then cd hack/benchplot && $(GO) run . $(BENCH_OUT)/scale.csv $(BENCH_OUT) && echo "plots in $(BENCH_OUT)"; fi

clean:
	rm -rf $(BIN)
