package cli

import (
	"context"
	"os"
	"runtime/debug"

	"github.com/dtf-io/dtf/coordinator"
	coordconfig "github.com/dtf-io/dtf/coordinator/config"
	"github.com/dtf-io/dtf/internal/logs"
)

func (a *App) runCoordinator(ctx context.Context, args []string) int {
	fs := a.newFlagSet("coordinator", "-config FILE")
	path := fs.String("config", "", "coordinator config file in HCL, such as configs/coordinator.hcl (required)")
	if err := fs.Parse(args); err != nil {
		return helpOrUsageError(err)
	}
	if !a.noArgs(fs) {
		return ExitError
	}
	if *path == "" {
		return a.errorf("coordinator needs -config FILE, such as configs/coordinator.hcl")
	}

	cfg, err := coordconfig.Load(*path)
	if err != nil {
		return a.errorf("%v", err)
	}
	logger := logs.New("", cfg.LogLevel, a.Stderr)
	if percent, set := coordinatorGCSetting(os.Getenv); set {
		debug.SetGCPercent(percent)
	}
	srv, err := coordinator.New(cfg, logger)
	if err != nil {
		return a.errorf("start coordinator: %v", err)
	}
	if err := srv.Run(ctx); err != nil {
		return a.errorf("coordinator stopped: %v", err)
	}
	return ExitOK
}

// coordinatorGCPercent is the garbage collector setting of the coordinator
// process when the GOGC environment variable does not set one. Most of a
// coordinator's heap is the state of idle worker sessions, which lives as
// long as they do, so the Go default of 100 lets the process grow to about
// twice that state. At 50 an idle worker costs 19.2 KiB instead of 22.9 KiB
// at 10,000 workers (docs/benchmarks.md), for more frequent collections of
// a heap that changes little.
const coordinatorGCPercent = 50

// coordinatorGCSetting returns the GC percent to set and true, or false
// when GOGC is set and the runtime already applied it.
func coordinatorGCSetting(getenv func(string) string) (int, bool) {
	if getenv("GOGC") != "" {
		return 0, false
	}
	return coordinatorGCPercent, true
}
