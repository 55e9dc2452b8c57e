package worker

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/dtf-io/dtf/host"
	hostconfig "github.com/dtf-io/dtf/host/config"
)

// ExitInvalidConfig is the exit status of validate for a config with
// problems, the same as dtf validate's.
const ExitInvalidConfig = 1

// validateTimeout bounds the check of all plugins of a worker config; each
// plugin launch has its own start_timeout within it.
const validateTimeout = 2 * time.Minute

// Validation is the result of checking a worker config.
type Validation struct {
	// PluginDir is the folder of the plugin binaries of blocks without
	// path, as the running binary resolves it.
	PluginDir string
	// PluginsChecked counts the plugins launched to check their config
	// block; zero when offline.
	PluginsChecked int
	Offline        bool
}

// Validate loads the worker config at path and, unless offline, launches
// each plugin once to check its config block. The plugins log warnings and
// errors to stderr.
func Validate(ctx context.Context, path string, offline bool, stderr io.Writer) (Validation, error) {
	cfg, err := hostconfig.Load(path)
	if err != nil {
		return Validation{}, err
	}
	v := Validation{PluginDir: cfg.PluginDir, Offline: offline}
	if offline {
		return v, nil
	}

	ctx, cancel := context.WithTimeout(ctx, validateTimeout)
	defer cancel()
	// Plugins log only warnings and errors, so a problem that a plugin
	// logs instead of reporting still shows.
	logger := hclog.New(&hclog.LoggerOptions{Name: "validate", Level: hclog.Warn, Output: stderr})
	v.PluginsChecked, err = host.ValidatePlugins(ctx, cfg, logger)
	return v, err
}

// Summary returns the line that reports a valid worker config at path,
// without its newline.
func (v Validation) Summary(path string) string {
	if v.Offline {
		return fmt.Sprintf("%s: valid worker config (0 plugins checked: -offline; plugin_dir %s)", path, v.PluginDir)
	}
	noun := "plugins"
	if v.PluginsChecked == 1 {
		noun = "plugin"
	}
	return fmt.Sprintf("%s: valid worker config (%d %s checked; plugin_dir %s)", path, v.PluginsChecked, noun,
		v.PluginDir)
}

// runValidate checks a worker config as dtf validate does, with the plugin
// folder of this binary.
func (c Command) runValidate(ctx context.Context, args []string) int {
	fs := c.newFlagSet("validate", "-config FILE [-offline]")
	path := fs.String("config", "", "worker config file in HCL to check (required)")
	offline := fs.Bool("offline", false, "check the config without launching its plugins, "+
		"so their config blocks are not checked")
	usage := fs.Usage
	fs.Usage = func() {
		usage()
		fmt.Fprintln(c.Stderr, "\nExit status: 0 valid, 1 the config has problems, 2 a usage error.")
	}
	if code, ok := c.parse(fs, args); !ok {
		return code
	}
	if *path == "" {
		return c.errorf("validate needs -config FILE, such as configs/worker.hcl")
	}

	v, err := Validate(ctx, *path, *offline, c.Stderr)
	if err != nil {
		c.errorf("%v", err)
		return ExitInvalidConfig
	}
	fmt.Fprintln(c.Stdout, v.Summary(*path))
	return ExitOK
}
