// Command dtf-worker runs a worker host, the same as "dtf worker", from a
// binary that leaves out the coordinator and the API client commands. See
// package worker for the flags.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/dtf-io/dtf/cli/worker"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(worker.Command{Prog: "dtf-worker", Stdout: os.Stdout, Stderr: os.Stderr}.Run(ctx, os.Args[1:]))
}
