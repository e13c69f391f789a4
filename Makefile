# Thaw's build. Everything heavy (Kubernetes, containerd, upstream Knative, Debian packages) is
# cached outside the checkout, under THAW_CACHE, so a clean clone reuses it.
SHELL := /bin/bash
export THAW_CACHE ?= $(HOME)/.cache/thaw
export PATH := /usr/local/go/bin:$(PATH)
GO ?= go
BIN := bin
PKGS := ./...
FUZZTIME ?= 10s
# go test behind gotestsum: the same tests and exit code, plus a closing summary that lists every
# skipped test with its reason, so a tier that skipped instead of running shows in the log.
GOTESTSUM ?= $(GO) run gotest.tools/gotestsum@v1.13.0

.PHONY: all build test test-unit test-fuzz test-pod test-e2e test-e2e-domain lint bench run tools deps clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

# Unit and differential tests: no root, no cluster. Pod-level tests skip here.
test-unit:
	THAW_QUEUE_PROXY= $(GOTESTSUM) --format pkgname-and-test-fails -- -race -count=1 $(PKGS)

# Unit, differential and pod-level tests: real upstream queue-proxy pods in network namespaces (root).
test-pod: $(QUEUE_PROXY)
	THAW_QUEUE_PROXY=$(QUEUE_PROXY) $(GOTESTSUM) --format pkgname-and-test-fails -- -race -count=1 $(PKGS)

# Each fuzz target for a short fixed time (go test -fuzz takes one target at a time). A run that ends
# with the engine's own "context deadline exceeded" and no failing input is the engine, not a finding: once more.
test-fuzz:
	@set -e; for spec in $$(grep -rl --include='*_test.go' '^func Fuzz' pkg | xargs -n1 dirname | sort -u); do \
	  for f in $$(grep -h '^func Fuzz' $$spec/*_test.go | sed 's/func \(Fuzz[A-Za-z0-9_]*\).*/\1/'); do \
	    echo "fuzz $$spec $$f ($(FUZZTIME))"; out=$$(mktemp); rc=0; \
	    $(GO) test -run='^$$' -fuzz="^$$f$$" -fuzztime=$(FUZZTIME) ./$$spec > $$out 2>&1 || rc=$$?; cat $$out; \
	    if [ $$rc -ne 0 ] && grep -q 'context deadline exceeded' $$out && ! grep -q 'Failing input' $$out; then \
	      echo "the fuzz engine ran into its own deadline (no failing input): once more"; rc=0; \
	      $(GO) test -run='^$$' -fuzz="^$$f$$" -fuzztime=$(FUZZTIME) ./$$spec || rc=$$?; \
	    fi; rm -f $$out; [ $$rc -eq 0 ]; \
	  done; done

# The lab suite: brings the lab cluster up once (building what is missing), runs, tears down (root).
test-e2e:
	$(GOTESTSUM) --format standard-verbose -- -tags e2e -count=1 -timeout 40m ./test/e2e/
	$(GO) test -tags e2e -count=1 -v -timeout 10m -run TestSwapOnRealAPIServer ./pkg/swap/

# Only the cluster-domain scenario, on a lab brought up with cluster domain thaw.test (root).
test-e2e-domain:
	THAW_E2E_CLUSTER_DOMAIN=thaw.test $(GO) test -tags e2e -count=1 -v -timeout 15m -run TestZZZClusterDomain ./test/e2e/

# Every test tier that exists.
# test-e2e goes first: its lab bring-up builds the tools (kubectl, etcd, kube-apiserver) that some unit
# tests use, and under CI a test that finds them missing fails rather than skips.
test: lint test-e2e test-pod test-fuzz test-upstream-ci

# All benchmarks, one after the other (the lab's must not share the CPUs with the core ones), then one
# report: bin/bench-report.md holds the core benchstat table and the lab tables.
bench:
	$(MAKE) bench-core
	$(MAKE) bench-lab
	{ echo '# Thaw benchmarks'; echo; echo '## Core: Thaw vs upstream (benchstat, impl=thaw vs impl=upstream)'; \
	  echo; echo '```'; cat $(BIN)/bench-report.txt; echo '```'; echo; \
	  sed -e 's/^#/##/' $(BIN)/perf-lab-report.md; } > $(BIN)/bench-report.md
	@echo "report: $(BIN)/bench-report.md"

# Thaw-vs-upstream benchmark pairs (tag upstreambench builds upstream's Throttler in), compared by
# benchstat, impl=thaw vs impl=upstream. The throttler's pairs are top-level benchmarks (ThawTry,
# UpstreamThrottlerTry), renamed to Try/impl=*/... for the comparison; bench.txt keeps the raw output,
# including the benchmarks without a pair.
bench-core:
	mkdir -p $(BIN)
	set -o pipefail; $(GO) test -tags upstreambench -run='^$$' -bench=. -benchmem -count=6 \
	  ./perf/core ./pkg/activator/throttler | tee $(BIN)/bench.txt
	sed -e 's#^BenchmarkThawTry/#BenchmarkTry/impl=thaw/#' \
	  -e 's#^BenchmarkUpstreamThrottlerTry/#BenchmarkTry/impl=upstream/#' \
	  $(BIN)/bench.txt > $(BIN)/bench-impl.txt
	set -o pipefail; $(GO) run golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da \
	  -filter '/impl:(thaw OR upstream)' -col /impl $(BIN)/bench-impl.txt | tee $(BIN)/bench-report.txt

# Lab benchmarks (perf/lab, root): dataplane-probe, load-test from zero and the activator's RSS under
# overload, each with upstream's activator and autoscaler and then with Thaw's, in one run. Brings the
# lab up (or reuses a running one) and down at the end unless THAW_KEEP_LAB=1; knobs in perf/lab/README.md.
bench-lab:
	mkdir -p $(BIN)
	THAW_PERF_LAB=1 THAW_PERF_LAB_REPORT=$(BIN)/perf-lab-report.md $(GO) test -tags e2e -count=1 \
	  -run '^TestLabPerf$$' -v -timeout 30m ./perf/lab/

.PHONY: bench-core bench-lab

# Upstream Knative Serving's own suites (knative.dev/serving/test/ha and the autoscale tests of test/e2e,
# compiled from the module cache) on the lab, with upstream's activator and autoscaler and then Thaw's, at
# 2 replicas x 1 bucket and 3 x 10 (root). Brings the lab up (or reuses a running one) and down at the end
# unless THAW_KEEP_LAB=1; THAW_UPSTREAM_SIDES, _SHAPES and _SUITES select; see test/upstream/README.md.
test-upstream:
	THAW_UPSTREAM=1 $(GO) test -tags e2e -count=1 -v -timeout 150m ./test/upstream/

# The CI-sized part of it: Thaw's side at upstream CI's shape (3 replicas x 10 buckets), ha's
# TestAutoscalerHA and the autoscale e2e tests (about 8 minutes; the whole matrix takes about 50).
test-upstream-ci:
	THAW_UPSTREAM_SIDES=thaw THAW_UPSTREAM_SHAPES=3x10 THAW_UPSTREAM_SUITES=autoscaler-ha,e2e $(MAKE) test-upstream

.PHONY: test-upstream test-upstream-ci

# Chaos scenarios on the lab (root): each fault under a steady and a cold load, with upstream's activator
# and autoscaler and then Thaw's; every request accounted, report in $(BIN)/chaos (CSV, JSON, timeline
# plot, table). Brings the lab up (or reuses a running one) and down at the end unless THAW_KEEP_LAB=1.
# CHAOS_SCENARIOS and CHAOS_FLAGS (e.g. --duration 2m) select; see the README's "Chaos".
CHAOS_SCENARIOS ?= autoscaler-kill autoscaler-delete activator-kill activator-kill-all activator-delete \
  activator-delete-all autoscaler-cutoff network-loss network-delay apiserver-outage user-pod-kill never-ready
CHAOS_FLAGS ?=
chaos:
	$(GO) build -o $(BIN)/ ./cmd/thaw
	$(BIN)/thaw lab up
	rc=0; $(BIN)/thaw chaos run --compare --out $(BIN)/chaos $(CHAOS_FLAGS) $(CHAOS_SCENARIOS) || rc=$$?; \
	  [ "$$THAW_KEEP_LAB" = 1 ] || $(BIN)/thaw lab down; exit $$rc

.PHONY: chaos

# Thaw's activator and autoscaler images for any cluster: static, non-root, reproducible OCI images in an
# OCI index per component, pushed to $(REGISTRY)/activator and $(REGISTRY)/autoscaler with docker's
# credentials (~/.docker/config.json and its helpers); the overlay then points at them by digest.
#   make images REGISTRY=ghcr.io/me/thaw [TAG=dev] [PLATFORMS=linux/amd64,linux/arm64]
TAG ?= dev
PLATFORMS ?= linux/amd64
OVERLAY ?= config/overlays/thaw/kustomization.yaml
images:
	@test -n "$(REGISTRY)" || { echo "usage: make images REGISTRY=<repository prefix> [TAG=$(TAG)] [PLATFORMS=$(PLATFORMS)]"; exit 2; }
	$(GO) run ./cmd/thaw images push --registry $(REGISTRY) --tag $(TAG) --platform $(PLATFORMS) --overlay $(OVERLAY)

.PHONY: images

# The lab with Thaw swapped in, helloworld-go cold-started and scaled back to zero; the lab stays up.
run:
	$(GO) build -o $(BIN)/thaw ./cmd/thaw
	$(BIN)/thaw lab demo

clean:
	rm -rf $(BIN)

# Upstream queue-proxy for the pod-level tests (static, cached outside the checkout).
QUEUE_PROXY := $(THAW_CACHE)/knative-v0.50.0/bin/queue
$(QUEUE_PROXY):
	mkdir -p $(dir $@)
	cd tools/knative && CGO_ENABLED=0 $(GO) build -trimpath -o $(dir $@) knative.dev/serving/cmd/queue
queue-proxy: $(QUEUE_PROXY)
.PHONY: queue-proxy
