package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/hashicorp/go-hclog"

	"github.com/dtf-io/dtf/host"
	hostconfig "github.com/dtf-io/dtf/host/config"
	"github.com/dtf-io/dtf/internal/dirlock"
)

func (a *App) runWorker(ctx context.Context, args []string) int {
	if len(args) > 0 && args[0] == "reload" {
		return a.runWorkerReload(args[1:])
	}
	fs := a.newFlagSet("worker", "-config FILE [-worker-id ID] [-data-dir DIR] [-url URL]\n"+
		"       dtf worker reload -config FILE [-data-dir DIR]")
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
	// SIGHUP reads the file again and upgrades the connector plugin to
	// its block's path and sha256; the rest of the file applies at the
	// next start.
	reload := func(ctx context.Context) {
		next, err := hostconfig.Load(*path)
		if err == nil {
			err = next.Apply(overrides)
		}
		if err != nil {
			logger.Error("reload failed: the worker config is invalid; keeping the current connector plugin",
				"config", *path, "error", err)
			return
		}
		_, _ = h.UpgradeConnector(ctx, next.Connector())
	}
	if err := runUntilSignalled(ctx, h, logger, reload); err != nil {
		return a.errorf("worker stopped: %v", err)
	}
	return ExitOK
}

// runUntilSignalled runs the host and handles the stop signals itself: the
// first SIGTERM starts a drain, and SIGINT or a second SIGTERM stops the
// worker at once. Main's context also ends on these signals, so its end
// stops the worker only when it was cancelled for another reason.
func runUntilSignalled(ctx context.Context, h *host.Host, logger hclog.Logger,
	reload func(context.Context),
) error {
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGTERM, os.Interrupt)
	defer signal.Stop(signals)
	reloads := make(chan os.Signal, 1)
	signal.Notify(reloads, syscall.SIGHUP)
	defer signal.Stop(reloads)

	runCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	finished := make(chan struct{})
	defer close(finished)
	go func() {
		parentDone := ctx.Done()
		draining := false
		for {
			select {
			case <-finished:
				return
			case <-reloads:
				// The host serializes upgrades. The reload runs beside
				// this loop, so that a stop signal is handled during it.
				logger.Info("SIGHUP received, reloading the connector plugin")
				go reload(runCtx)
			case sig := <-signals:
				if sig == syscall.SIGTERM && !draining {
					draining = true
					logger.Info("SIGTERM received, draining: send SIGINT or SIGTERM again to stop at once")
					h.Drain("SIGTERM received")
					continue
				}
				logger.Info("stopping at once", "signal", sig.String())
				stop()
				return
			case <-parentDone:
				if causedBySignal(ctx) {
					parentDone = nil // the signal arrives on signals too
					continue
				}
				stop()
				return
			}
		}
	}()
	return h.Run(runCtx)
}

// runWorkerReload sends SIGHUP to the worker that runs on the data_dir of a
// worker config, which makes it upgrade its connector plugin.
func (a *App) runWorkerReload(args []string) int {
	fs := a.newFlagSet("worker reload", "-config FILE [-data-dir DIR]")
	path := fs.String("config", "", "config file of the running worker, such as configs/worker.hcl (required)")
	var overrides hostconfig.Overrides
	fs.StringVar(&overrides.DataDir, "data-dir", "", "data folder of the running worker; replaces data_dir of the file")
	if err := fs.Parse(args); err != nil {
		return helpOrUsageError(err)
	}
	if !a.noArgs(fs) {
		return ExitError
	}
	if *path == "" {
		return a.errorf("worker reload needs -config FILE, the config file of the running worker")
	}
	cfg, err := hostconfig.Load(*path)
	if err != nil {
		return a.errorf("%v", err)
	}
	if err := cfg.Apply(overrides); err != nil {
		return a.errorf("%v", err)
	}
	pid, err := host.WorkerPID(cfg.DataDir)
	if errors.Is(err, dirlock.ErrNotHeld) {
		return a.errorf("no worker runs on data_dir %s; start one with dtf worker -config %s, "+
			"or pass the running worker's -data-dir", cfg.DataDir, *path)
	}
	if err != nil {
		return a.errorf("find the worker of data_dir %s: %v", cfg.DataDir, err)
	}
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		return a.errorf("send SIGHUP to worker pid %d: %v", pid, err)
	}
	fmt.Fprintf(a.Stdout, "sent SIGHUP to worker pid %d (data_dir %s); its log reports the upgrade of "+
		"connector plugin %s\n", pid, cfg.DataDir, cfg.Connector().Name)
	return ExitOK
}

// causedBySignal reports whether ctx was cancelled by signal.NotifyContext.
// Since Go 1.26 its cause is an error that names the signal and matches
// context.Canceled, while a plain cancel's cause is context.Canceled itself.
func causedBySignal(ctx context.Context) bool {
	cause := context.Cause(ctx)
	return cause != context.Canceled && errors.Is(cause, context.Canceled)
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
