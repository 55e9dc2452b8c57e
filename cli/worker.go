package cli

import (
	"context"

	"github.com/hashicorp/go-hclog"

	"github.com/dtf-io/dtf/host"
	hostconfig "github.com/dtf-io/dtf/host/config"
)

func (a *App) runWorker(ctx context.Context, args []string) int {
	fs := a.newFlagSet("worker", "-config FILE [-worker-id ID] [-data-dir DIR] [-url URL]")
	path := fs.String("config", "", "worker config file in HCL, such as configs/worker.hcl (required)")
	var overrides hostconfig.Overrides
	fs.StringVar(&overrides.WorkerID, "worker-id", "", "worker id; replaces coordinator.worker_id of the file")
	fs.StringVar(&overrides.DataDir, "data-dir", "", "data folder for the outbox; replaces data_dir of the file")
	fs.StringVar(&overrides.URL, "url", "", "coordinator URL such as ws://127.0.0.1:7070; replaces coordinator.url")
	if err := fs.Parse(args); err != nil {
		return helpOrUsageError(err)
	}
	if !a.noArgs(fs) {
		return ExitError
	}
	if *path == "" {
		return a.errorf("worker needs -config FILE, such as configs/worker.hcl")
	}

	cfg, err := hostconfig.Load(*path)
	if err != nil {
		return a.errorf("%v", err)
	}
	if err := cfg.Apply(overrides); err != nil {
		return a.errorf("%v", err)
	}
	logger := a.logger("worker", cfg.LogLevel).With("worker_id", cfg.Coordinator.WorkerID)
	h, err := host.New(cfg, logger)
	if err != nil {
		return a.errorf("start worker: %v", err)
	}
	if err := h.Run(ctx); err != nil {
		return a.errorf("worker stopped: %v", err)
	}
	return ExitOK
}

// logger returns the server's root logger on Stderr at the configured level.
func (a *App) logger(name, level string) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:   name,
		Level:  hclog.LevelFromString(level),
		Output: a.Stderr,
		Color:  hclog.AutoColor,
		// Colors only apply when Output is a terminal file.
		ColorHeaderOnly: true,
	})
}
