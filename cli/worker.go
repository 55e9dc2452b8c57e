package cli

import (
	"context"

	"github.com/dtf-io/dtf/cli/worker"
)

// runWorker runs "dtf worker", which is the command line of the lean
// dtf-worker binary inside the dtf command.
func (a *App) runWorker(ctx context.Context, args []string) int {
	return worker.Command{Prog: "dtf worker", Stdout: a.Stdout, Stderr: a.Stderr}.Run(ctx, args)
}
