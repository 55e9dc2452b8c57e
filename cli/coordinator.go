package cli

import (
	"context"

	"github.com/dtf-io/dtf/coordinator"
	coordconfig "github.com/dtf-io/dtf/coordinator/config"
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
	logger := a.logger("", cfg.LogLevel)
	srv, err := coordinator.New(cfg, logger)
	if err != nil {
		return a.errorf("start coordinator: %v", err)
	}
	if err := srv.Run(ctx); err != nil {
		return a.errorf("coordinator stopped: %v", err)
	}
	return ExitOK
}
