# ecfs — build, test, lint, bench. `make test` is what CI runs (.ci/run).
GO        ?= go
BIN       ?= bin/ecfs
PKGS      := ./...
STATICCHECK_VERSION := v0.8.2

.PHONY: all build deps test test-unit test-integration test-faults lint bench proto clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/ecfs

# Installs (as root) or names (otherwise) what the tests need, and fails if
# something is missing.
deps:
	@.ci/deps

test: deps
	$(GO) vet $(PKGS)
	$(GO) vet -tags lockcheck ./fs/...
	$(GO) vet -tags cluster ./fs/...
	$(MAKE) test-unit
	$(GO) test -count=1 -timeout 15m -skip '^TestFaults' ./integration/...
	$(MAKE) test-faults

# The fault harness (root: network namespaces, veth, tmpfs; FUSE): real
# processes partitioned, frozen, killed, slowed and out of disk under
# concurrent clients, their histories checked with porcupine. About 5 min.
test-faults: deps
	$(GO) test -count=1 -v -run '^TestFaults' -timeout 10m ./integration/

# The mount's core (fs) runs its tests on in-memory fakes (fs/fstest), in the
# lock-checked build: every mutex acquisition is checked against the lock
# hierarchy (fs/locking.go). Those named TestCluster... run the core on an
# in-process real cluster (-tags cluster).
test-unit:
	$(GO) test -race -count=1 ./codec/... ./store/... ./cluster/... ./cmd/...
	$(GO) test -race -tags lockcheck -count=1 ./fs/...
	$(GO) test -race -tags 'lockcheck cluster' -count=1 -run '^TestCluster' ./fs/...

test-integration: deps
	$(GO) test -count=1 -v -timeout 15m ./integration/...

lint:
	$(GO) vet $(PKGS)
	$(GO) vet -tags lockcheck ./fs/...
	$(GO) vet -tags cluster ./fs/...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1; }
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) $(PKGS)

# Codec, object-layer and mount benchmarks, each beside a reference measured
# in the same run (bare reedsolomon; the local disk). See README.md for reading
# them. BenchmarkMount takes ECFS_BENCH_SEQ_MIB, ECFS_BENCH_FILES and
# ECFS_BENCH_RSYNC_DIR (a subtree of $GOROOT/src to rsync instead of all of it);
# BenchmarkHeal takes ECFS_BENCH_HEAL_MIB.
bench: deps
	$(GO) test -run='^$$' -bench=. -benchtime=2s ./codec/
	$(GO) test -run='^$$' -bench=. -benchtime=2s ./store/
	$(GO) test -run='^$$' -bench=MemoryPerFile -benchtime=1x ./cluster/namespace/
	$(GO) test -run='^$$' -bench=Snapshot1M -benchtime=1x ./cluster/
	$(GO) test -run='^$$' -bench='^Benchmark(ObjectsVsDisk|Meta)$$' -benchtime=1x -timeout 20m ./integration/
	$(GO) test -run='^$$' -bench='^BenchmarkHeal$$' -benchtime=1x -timeout 20m ./integration/
	$(GO) test -run='^$$' -bench='^BenchmarkMount$$' -benchtime=1x -timeout 60m ./integration/
	$(GO) test -run='^$$' -bench='^BenchmarkMountMemory$$' -benchtime=1x -timeout 60m ./integration/
	$(GO) test -run='^$$' -bench='^BenchmarkMountTLS$$' -benchtime=1x -timeout 30m ./integration/

# Regenerates the metadata service's gRPC code (cluster/metapb), installing
# protoc (apt, as root) and the pinned Go plugins into bin/tools.
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.5.1
TOOLS := $(CURDIR)/bin/tools
proto:
	@command -v protoc >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y -qq protobuf-compiler >/dev/null; } || { echo "proto: protoc is missing: apt-get install protobuf-compiler"; exit 1; }
	GOBIN=$(TOOLS) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(TOOLS) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	PATH=$(TOOLS):$$PATH protoc --go_out=. --go_opt=paths=source_relative \
		--go-grpc_out=. --go-grpc_opt=paths=source_relative cluster/metapb/*.proto

clean:
	rm -rf bin
