# ecfs — build, test, lint, bench. `make test` is what CI runs (.ci/run).
GO        ?= go
BIN       ?= bin/ecfs
PKGS      := ./...
STATICCHECK_VERSION := v0.8.2

.PHONY: all build deps test test-unit test-integration lint bench proto clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/ecfs

# Installs (as root) or names (otherwise) what the tests need, and fails if
# something is missing.
deps:
	@.ci/deps

test: deps
	$(GO) vet $(PKGS)
	$(GO) test -race -count=1 ./codec/... ./store/... ./cmd/...
	$(GO) test -count=1 -timeout 15m ./integration/...

test-unit:
	$(GO) test -race -count=1 ./codec/... ./store/... ./cmd/...

test-integration: deps
	$(GO) test -count=1 -v -timeout 15m ./integration/...

lint:
	$(GO) vet $(PKGS)
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1; }
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) $(PKGS)

# Codec and object-layer benchmarks, each beside a reference measured in the
# same run (bare reedsolomon; the local disk). See README.md for reading them.
bench: deps
	$(GO) test -run='^$$' -bench=. -benchtime=2s ./codec/
	$(GO) test -run='^$$' -bench=. -benchtime=1x -timeout 20m ./integration/

# Regenerates the metadata service's gRPC code (cluster/metapb) once it exists.
proto:
	@if ls cluster/metapb/*.proto >/dev/null 2>&1; then \
		protoc --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative cluster/metapb/*.proto; \
	else echo "proto: no .proto files yet (cluster/metapb arrives with the metadata service)"; fi

clean:
	rm -rf bin
