GO ?= go
BIN := bin

.PHONY: build
build:
	$(GO) build -o $(BIN)/dtf ./cmd/dtf
	$(GO) build -o $(BIN)/dtf-reconnection ./plugins/reconnection
	$(GO) build -o $(BIN)/dtf-exec-command ./examples/command
	$(GO) build -o $(BIN)/dtf-exec-gotest ./examples/gotest
