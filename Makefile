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
# FUZZ_TARGETS lists every fuzz target as package:Target. go test -fuzz
# takes one package and one target per run, so make fuzz runs them in
# turn, each for FUZZTIME. make test runs them for the short default, which
# keeps the step near a minute and a half; run make fuzz FUZZTIME=5m for a
# longer search. A failing input is written to the package's
# testdata/fuzz/<Target>/ folder: commit it with the fix as a regression
# seed, because go test runs every seed as a plain test.
FUZZ_TARGETS := \
	./protocol:FuzzDecode \
	./protocol:FuzzScanFrame \
	./protocol:FuzzInflate \
	./protocol:FuzzWindowReceive \
	./protocol:FuzzServerHandshake \
	./protocol:FuzzClientHandshake \
	./protocol:FuzzOpen \
	./coordinator/config:FuzzLoad \
	./host/config:FuzzLoad \
	./coordinator:FuzzDecodeSubmit \
	./coordinator:FuzzAPI
FUZZTIME ?= 6s

# build links the binaries without cgo and without gRPC's request tracing
# (build tag grpcnotrace). A worker runs three of these processes, and each
# maps the pages of its own binary and, with cgo, of the C library. The two
# settings lowered an idle worker (host, reconnection plugin and command
# executor, measured with dtf-load -mode host-rss) from 55.1 to 46.9 MiB RSS.
GOBUILD := CGO_ENABLED=0 $(GO) build -tags grpcnotrace

.PHONY: build
build:
	$(GOBUILD) -o $(BIN)/dtf ./cmd/dtf
	$(GOBUILD) -o $(BIN)/dtf-reconnection ./plugins/reconnection
	$(GOBUILD) -o $(BIN)/dtf-exec-command ./examples/command
	$(GOBUILD) -o $(BIN)/dtf-exec-gotest ./examples/gotest
	$(GOBUILD) -o $(BIN)/dtf-exec-checkpoint ./examples/checkpoint
	$(GOBUILD) -o $(BIN)/dtf-demo ./test/demo
	$(GOBUILD) -o $(BIN)/dtf-load ./test/load

# run starts a coordinator, a fault proxy and two workers, runs this
# repository's Go packages as gotest tasks, cuts the network mid-run and
# prints the results.
.PHONY: run
run: build
	$(BIN)/dtf-demo -bin $(BIN) -repo $(CURDIR)

.PHONY: test
test: build proto-check
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 20m ./...
	$(GO) test -count=1 -race -short -timeout 15m $(RACE_PKGS)
	$(MAKE) --no-print-directory fuzz

# fuzz runs each target of FUZZ_TARGETS for FUZZTIME.
.PHONY: fuzz
fuzz:
	@for entry in $(FUZZ_TARGETS); do \
		pkg=$${entry%%:*}; target=$${entry##*:}; \
		echo "fuzz $$target in $$pkg for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
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
