// Package worker is the worker host's command line: the flags, the stop
// and reload signals and the reload subcommand. Two programs run it: the
// dtf command as "dtf worker", and the lean dtf-worker binary, which links
// only this package and the host, not the coordinator. On a worker machine
// that runs its host beside two plugin processes, the smaller binary keeps
// about 5 MiB of program text out of memory (figures in docs/architecture.md).
package worker

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"

	"github.com/hashicorp/go-hclog"

	"github.com/dtf-io/dtf/host"
	hostconfig "github.com/dtf-io/dtf/host/config"
	"github.com/dtf-io/dtf/internal/dirlock"
	"github.com/dtf-io/dtf/internal/logs"
)

// Exit statuses, the same as the dtf command's.
const (
	ExitOK    = 0
	ExitError = 2
)

// Command is one run of the worker command line.
type Command struct {
	// Prog names the program in usage lines and errors: "dtf worker" or
	// "dtf-worker".
	Prog   string
	Stdout io.Writer
	Stderr io.Writer
}

// Run parses args, which exclude the program name and for dtf also the
// word worker. It runs the reload or validate subcommand, or the worker
// host until ctx ends or a stop signal arrives.
func (c Command) Run(ctx context.Context, args []string) int {
	if len(args) > 0 {
		switch args[0] {
		case "reload":
			return c.runReload(args[1:])
		case "validate":
			return c.runValidate(ctx, args[1:])
		case "worker":
			if c.Prog == "dtf-worker" {
				return c.errorf("dtf-worker runs the worker itself, so leave out the word worker: dtf-worker %s",
					strings.Join(args[1:], " "))
			}
		}
	}
	fs := c.newFlagSet("", "-config FILE [-worker-id ID] [-data-dir DIR] [-url URL]\n"+
		"       "+c.Prog+" -version\n"+
		"       "+c.Prog+" reload -config FILE [-data-dir DIR]\n"+
		"       "+c.Prog+" validate -config FILE [-offline]")
	path := fs.String("config", "", "worker config file in HCL, such as configs/worker.hcl (required)")
	var overrides hostconfig.Overrides
	fs.StringVar(&overrides.WorkerID, "worker-id", "", "worker id; replaces coordinator.worker_id of the file")
	fs.StringVar(&overrides.DataDir, "data-dir", "", "data folder for the outbox; replaces data_dir of the file")
	fs.StringVar(&overrides.URL, "url", "", "coordinator URL such as ws://127.0.0.1:7070; replaces coordinator.url")
	version := fs.Bool("version", false, "print the worker host's version and exit")
	if code, ok := c.parse(fs, args); !ok {
		return code
	}
	if code, ok := c.rejectEmpty(fs, map[string]string{
		"config":    "a worker config file",
		"worker-id": "a worker id, or leave the flag out to use coordinator.worker_id of the file",
		"data-dir":  "a data folder, or leave the flag out to use data_dir of the file",
		"url":       "a coordinator URL, or leave the flag out to use coordinator.url of the file",
	}); !ok {
		return code
	}
	if *version {
		fmt.Fprintf(c.Stdout, "%s %s (%s %s/%s)\n", c.Prog, host.Version, runtime.Version(),
			runtime.GOOS, runtime.GOARCH)
		return ExitOK
	}
	if *path == "" {
		return c.errorf("worker needs -config FILE, such as configs/worker.hcl")
	}

	cfg, err := hostconfig.Load(*path)
	if err != nil {
		return c.errorf("%v", err)
	}
	if err := cfg.Apply(overrides); err != nil {
		return c.errorf("%v", err)
	}
	logger := logs.New("worker", cfg.LogLevel, c.Stderr).With("worker_id", cfg.Coordinator.WorkerID)
	h, err := host.New(cfg, logger)
	if err != nil {
		return c.errorf("start worker: %v", err)
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
		return c.errorf("worker stopped: %v", err)
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

// causedBySignal reports whether ctx was cancelled by signal.NotifyContext.
// Since Go 1.26 its cause is an error that names the signal and matches
// context.Canceled, while a plain cancel's cause is context.Canceled itself.
func causedBySignal(ctx context.Context) bool {
	cause := context.Cause(ctx)
	return cause != context.Canceled && errors.Is(cause, context.Canceled)
}

// parse parses args into fs and rejects positional arguments. When it
// returns false, the caller exits with code.
func (c Command) parse(fs *flag.FlagSet, args []string) (code int, ok bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK, false
		}
		return ExitError, false
	}
	if fs.NArg() > 0 {
		return c.errorf("%s takes no arguments, got %q; flags go before arguments",
			fs.Name(), strings.Join(fs.Args(), " ")), false
	}
	return ExitOK, true
}

// rejectEmpty reports an error for the first flag of fixes that is set to
// an empty value, such as -worker-id "$ID" with ID unset, which would
// otherwise fall back to the file's value without a word. fixes maps a
// flag name to what the flag expects. When it returns false, the caller
// exits with code.
func (c Command) rejectEmpty(fs *flag.FlagSet, fixes map[string]string) (code int, ok bool) {
	code, ok = ExitOK, true
	fs.Visit(func(f *flag.Flag) {
		if fix, checked := fixes[f.Name]; checked && ok && strings.TrimSpace(f.Value.String()) == "" {
			code, ok = c.errorf("invalid -%s: the value is empty; give %s", f.Name, fix), false
		}
	})
	return code, ok
}

func (c Command) errorf(format string, args ...any) int {
	fmt.Fprintf(c.Stderr, "%s: "+format+"\n", append([]any{strings.Fields(c.Prog)[0]}, args...)...)
	return ExitError
}

// newFlagSet returns the flag set of the command, or of its subcommand sub,
// which prints its usage line and defaults to Stderr.
func (c Command) newFlagSet(sub, usage string) *flag.FlagSet {
	name := strings.TrimSpace(c.Prog + " " + sub)
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(c.Stderr)
	fs.Usage = func() {
		fmt.Fprintf(c.Stderr, "Usage: %s %s\n\nFlags:\n", name, usage)
		fs.PrintDefaults()
	}
	return fs
}

// runReload sends SIGHUP to the worker that runs on the data_dir of a
// worker config, which makes it upgrade its connector plugin.
func (c Command) runReload(args []string) int {
	fs := c.newFlagSet("reload", "-config FILE [-data-dir DIR]")
	path := fs.String("config", "", "config file of the running worker, such as configs/worker.hcl (required)")
	var overrides hostconfig.Overrides
	fs.StringVar(&overrides.DataDir, "data-dir", "", "data folder of the running worker; replaces data_dir of the file")
	if code, ok := c.parse(fs, args); !ok {
		return code
	}
	if code, ok := c.rejectEmpty(fs, map[string]string{
		"config":   "the config file of the running worker",
		"data-dir": "the data folder of the running worker, or leave the flag out to use data_dir of the file",
	}); !ok {
		return code
	}
	if *path == "" {
		return c.errorf("worker reload needs -config FILE, the config file of the running worker")
	}

	cfg, err := hostconfig.Load(*path)
	if err != nil {
		return c.errorf("%v", err)
	}
	if err := cfg.Apply(overrides); err != nil {
		return c.errorf("%v", err)
	}

	pid, err := host.WorkerPID(cfg.DataDir)
	if errors.Is(err, dirlock.ErrNotHeld) {
		return c.errorf("no worker runs on data_dir %s; start one with %s -config %s, "+
			"or pass the running worker's -data-dir", cfg.DataDir, c.Prog, *path)
	}
	if err != nil {
		return c.errorf("find the worker of data_dir %s: %v", cfg.DataDir, err)
	}

	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		return c.errorf("send SIGHUP to worker pid %d: %v", pid, err)
	}
	fmt.Fprintf(c.Stdout, "sent SIGHUP to worker pid %d (data_dir %s); its log reports the upgrade of "+
		"connector plugin %s\n", pid, cfg.DataDir, cfg.Connector().Name)
	return ExitOK
}
