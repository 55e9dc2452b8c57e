# dtf build, run and test entry points. See README.md.
GO      ?= go
BIN     := bin
TOOLS   := $(CURDIR)/.tools
PROTOS  := protocol/pb/wire.proto plugin/pb/plugin.proto
# Generator versions are pinned so that `make proto` output is reproducible
# and the staleness check in `make test` compares like with like.
PROTOC_GEN_GO      := google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
PROTOC_GEN_GO_GRPC := google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
# Packages whose tests exercise concurrent senders, reconnects and replay run
# again under the race detector.
RACE_PKGS := ./protocol/... ./coordinator/... ./host/... ./plugin/... ./plugins/... ./test/faultproxy/...
# FUZZ_TARGETS lists every fuzz target as package:Target:executions. go test
# -fuzz takes one package and one target per run, so make fuzz runs them in
# turn. make test runs each for its count of executions, sized for about
# five seconds on a 2-core machine, which keeps the step under a minute.
# The limit is a count, not a duration, because Go 1.26 can fail a target
# with "context deadline exceeded" when a -fuzztime duration ends while a
# worker is busy (go.dev/issue/75804, fixed in Go 1.27). For a longer
# search run make fuzz FUZZTIME=5m, which applies to every target. A failing
# input is written to the package's testdata/fuzz/<Target>/ folder: commit
# it with the fix as a regression seed, because go test runs every seed as
# a plain test.
FUZZ_TARGETS := \
	./protocol:FuzzDecode:100000 \
	./protocol:FuzzScanFrame:100000 \
	./protocol:FuzzInflate:30000 \
	./protocol:FuzzWindowReceive:100000 \
	./protocol:FuzzServerHandshake:3000 \
	./protocol:FuzzClientHandshake:50000 \
	./protocol:FuzzOpen:100000 \
	./coordinator/config:FuzzLoad:10000 \
	./host/config:FuzzLoad:8000 \
	./coordinator:FuzzDecodeSubmit:100000 \
	./coordinator:FuzzAPI:40000
FUZZTIME ?=

# build links the binaries without cgo and without gRPC's request tracing
# (build tag grpcnotrace). A worker runs three of these processes, and each
# maps the pages of its own binary and, with cgo, of the C library. The two
# settings lowered an idle worker (host, reconnection plugin and command
# executor, measured with dtf-load -mode host-rss) from 55.1 to 46.9 MiB RSS.
GOBUILD := CGO_ENABLED=0 $(GO) build -tags grpcnotrace

# build puts the dtf command and the plugins in bin/, the default
# plugin_dir of a worker, and the demo and load tools in bin/tools/, where
# the plugin naming rule (dtf-NAME, dtf-exec-NAME) cannot pick them up.
.PHONY: build
build:
	$(GOBUILD) -o $(BIN)/dtf ./cmd/dtf
	$(GOBUILD) -o $(BIN)/dtf-worker ./cmd/dtf-worker
	$(GOBUILD) -o $(BIN)/dtf-reconnection ./plugins/reconnection
	$(GOBUILD) -o $(BIN)/dtf-exec-command ./examples/command
	$(GOBUILD) -o $(BIN)/dtf-exec-gotest ./examples/gotest
	$(GOBUILD) -o $(BIN)/dtf-exec-checkpoint ./examples/checkpoint
	$(GOBUILD) -o $(BIN)/dtf-exec-hello ./examples/hello
	$(GOBUILD) -o $(BIN)/dtf-metrics ./plugins/metrics
	$(GOBUILD) -o $(BIN)/tools/dtf-demo ./test/demo
	$(GOBUILD) -o $(BIN)/tools/dtf-load ./test/load

# run starts a coordinator, a fault proxy and two workers, runs this
# repository's Go packages as gotest tasks, cuts the network mid-run and
# prints the results.
.PHONY: run
run: build
	$(BIN)/tools/dtf-demo -bin $(BIN) -repo $(CURDIR)

.PHONY: test
test: build proto-check
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 20m ./...
	$(GO) test -count=1 -race -short -timeout 15m $(RACE_PKGS)
	$(MAKE) --no-print-directory fuzz

# fuzz runs each target of FUZZ_TARGETS for its count of executions, or
# for FUZZTIME when that is set.
.PHONY: fuzz
fuzz:
	@for entry in $(FUZZ_TARGETS); do \
		pkg=$${entry%%:*}; rest=$${entry#*:}; target=$${rest%%:*}; limit=$${rest##*:}x; \
		if [ -n "$(FUZZTIME)" ]; then limit=$(FUZZTIME); fi; \
		echo "fuzz $$target in $$pkg for $$limit"; \
		$(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime $$limit $$pkg || exit 1; \
	done

.PHONY: bench
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

$(TOOLS)/protoc-gen-go:
	GOBIN=$(TOOLS) $(GO) install $(PROTOC_GEN_GO)

$(TOOLS)/protoc-gen-go-grpc:
	GOBIN=$(TOOLS) $(GO) install $(PROTOC_GEN_GO_GRPC)

.PHONY: tools
tools: $(TOOLS)/protoc-gen-go $(TOOLS)/protoc-gen-go-grpc
	@command -v protoc >/dev/null || { echo "protoc not found: install Debian's protobuf-compiler (apt-get install protobuf-compiler)"; exit 1; }

# proto regenerates the Go code beside each .proto file.
.PHONY: proto
proto: tools
	PATH="$(TOOLS):$$PATH" protoc --go_out=. --go_opt=paths=source_relative \
		--go-grpc_out=. --go-grpc_opt=paths=source_relative $(PROTOS)

# proto-check fails when the committed generated code differs from what the
# .proto files generate.
.PHONY: proto-check
proto-check: tools
	@tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT && \
	PATH="$(TOOLS):$$PATH" protoc --go_out=$$tmp --go_opt=paths=source_relative \
		--go-grpc_out=$$tmp --go-grpc_opt=paths=source_relative $(PROTOS) && \
	for f in $$(cd $$tmp && find . -name '*.go'); do \
		cmp -s $$tmp/$$f $$f || { echo "generated code $$f is stale: run make proto and commit"; exit 1; }; \
	done && echo "generated protobuf code is up to date"

.PHONY: clean
clean:
	rm -rf $(BIN) $(TOOLS)
