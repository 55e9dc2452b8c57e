package cli

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"

	coordconfig "github.com/dtf-io/dtf/coordinator/config"
	"github.com/dtf-io/dtf/host"
	hostconfig "github.com/dtf-io/dtf/host/config"
)

// ExitInvalidConfig is the exit code of validate for a config with
// problems, as terraform validate and similar checks use it.
const ExitInvalidConfig = 1

// Kinds of config file that validate checks.
const (
	kindWorker      = "worker"
	kindCoordinator = "coordinator"
)

// validateTimeout bounds the plugin checks of validate. Each plugin gets
// its own start_timeout within it.
const validateTimeout = 2 * time.Minute

func (a *App) runValidate(ctx context.Context, args []string) int {
	fs := a.newFlagSet("validate", "-config FILE [-kind worker|coordinator] [-offline]")
	path := fs.String("config", "", "worker or coordinator config file in HCL to check (required)")
	kind := fs.String("kind", "", "kind of config, worker or coordinator (default: taken from the file's blocks)")
	offline := fs.Bool("offline", false, "check a worker config without launching its plugins, "+
		"so their config blocks are not checked")
	usage := fs.Usage
	fs.Usage = func() {
		usage()
		fmt.Fprintln(a.Stderr, "\nExit status: 0 valid, 1 the config has problems, 2 a usage error.")
	}
	if err := fs.Parse(args); err != nil {
		return helpOrUsageError(err)
	}
	if !a.noArgs(fs) {
		return ExitError
	}
	if *path == "" {
		return a.errorf("validate needs -config FILE, such as configs/worker.hcl")
	}
	if *kind == "" {
		*kind = detectKind(*path)
	}

	switch *kind {
	case kindWorker:
		return a.validateWorker(ctx, *path, *offline)
	case kindCoordinator:
		if _, err := coordconfig.Load(*path); err != nil {
			fmt.Fprintf(a.Stderr, "dtf: %v\n", err)
			return ExitInvalidConfig
		}
		fmt.Fprintf(a.Stdout, "%s: valid coordinator config\n", *path)
		return ExitOK
	default:
		return a.errorf("invalid -kind %q; use worker or coordinator", *kind)
	}
}

// validateWorker loads a worker config and, unless offline, launches each
// plugin once to check its config block.
func (a *App) validateWorker(ctx context.Context, path string, offline bool) int {
	cfg, err := hostconfig.Load(path)
	if err != nil {
		fmt.Fprintf(a.Stderr, "dtf: %v\n", err)
		return ExitInvalidConfig
	}
	if offline {
		fmt.Fprintf(a.Stdout, "%s: valid worker config (0 plugins checked: -offline)\n", path)
		return ExitOK
	}

	ctx, cancel := context.WithTimeout(ctx, validateTimeout)
	defer cancel()
	// Plugins log only warnings and errors, so a problem that a plugin
	// logs instead of reporting still shows.
	logger := hclog.New(&hclog.LoggerOptions{Name: "validate", Level: hclog.Warn, Output: a.Stderr})
	checked, err := host.ValidatePlugins(ctx, cfg, logger)
	if err != nil {
		fmt.Fprintf(a.Stderr, "dtf: %v\n", err)
		return ExitInvalidConfig
	}
	noun := "plugins"
	if checked == 1 {
		noun = "plugin"
	}
	fmt.Fprintf(a.Stdout, "%s: valid worker config (%d %s checked)\n", path, checked, noun)
	return ExitOK
}

// detectKind returns the kind of the config file at path: worker when it
// has a coordinator or plugin block, which only worker configs have, and
// coordinator otherwise. A file that does not parse is taken for a
// coordinator config only when its name contains "coordinator", so its
// syntax errors are reported in either case.
func detectKind(path string) string {
	file, diags := hclparse.NewParser().ParseHCLFile(path)
	if diags.HasErrors() || file == nil {
		if strings.Contains(filepath.Base(path), kindCoordinator) {
			return kindCoordinator
		}
		return kindWorker
	}
	body, ok := file.Body.(*hclsyntax.Body)
	if !ok {
		return kindWorker
	}
	for _, block := range body.Blocks {
		if block.Type == "plugin" || block.Type == "coordinator" {
			return kindWorker
		}
	}
	return kindCoordinator
}
