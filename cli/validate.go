package cli

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"

	"github.com/dtf-io/dtf/cli/worker"
	coordconfig "github.com/dtf-io/dtf/coordinator/config"
)

// ExitInvalidConfig is the exit code of validate for a config with
// problems, as terraform validate and similar checks use it.
const ExitInvalidConfig = worker.ExitInvalidConfig

// Kinds of config file that validate checks.
const (
	kindWorker      = "worker"
	kindCoordinator = "coordinator"
)

func (a *App) runValidate(ctx context.Context, args []string) int {
	fs := a.newFlagSet("validate", "-config FILE [-kind worker|coordinator] [-offline] [-output table|json]")
	path := fs.String("config", "", "worker or coordinator config file in HCL to check (required)")
	kind := fs.String("kind", "", "kind of config, worker or coordinator (default: taken from the file's blocks)")
	offline := fs.Bool("offline", false, "check a worker config without launching its plugins, "+
		"so their config blocks are not checked")
	output := outputFlag(fs)
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
	if err := checkOutput(*output); err != nil {
		return a.errorf("%v", err)
	}
	if *kind == "" {
		*kind = detectKind(*path)
	}

	result := validateResult{Config: *path, Kind: *kind, Offline: *offline}
	var err error
	switch *kind {
	case kindWorker:
		var v worker.Validation
		v, err = worker.Validate(ctx, *path, *offline, a.Stderr)
		result.PluginsChecked, result.PluginDir = v.PluginsChecked, v.PluginDir
	case kindCoordinator:
		_, err = coordconfig.Load(*path)
	default:
		return a.errorf("invalid -kind %q; use worker or coordinator", *kind)
	}
	if err != nil {
		result.Error = err.Error()
	}
	return a.printValidateResult(result, *output)
}

// validateResult is the outcome of validate, and its output with -output
// json.
type validateResult struct {
	Config string `json:"config"`
	Kind   string `json:"kind"`
	Valid  bool   `json:"valid"`
	// Error describes the config's problems when Valid is false.
	Error   string `json:"error,omitempty"`
	Offline bool   `json:"offline"`
	// PluginsChecked counts the plugins launched to check their config
	// block, zero for a coordinator config or with Offline.
	PluginsChecked int `json:"plugins_checked"`
	// PluginDir is a worker config's plugin_dir as this binary resolves
	// it.
	PluginDir string `json:"plugin_dir,omitempty"`
}

// printValidateResult prints the result and returns the exit status. An
// invalid config is also reported on stderr with -output json.
func (a *App) printValidateResult(result validateResult, output string) int {
	result.Valid = result.Error == ""
	if !result.Valid {
		fmt.Fprintf(a.Stderr, "dtf: %s\n", result.Error)
	}
	code := ExitOK
	if !result.Valid {
		code = ExitInvalidConfig
	}
	if output == "json" {
		if err := writeJSON(a.Stdout, result); err != nil {
			return a.errorf("write output: %v", err)
		}
		return code
	}
	switch {
	case !result.Valid:
	case result.Kind == kindCoordinator:
		fmt.Fprintf(a.Stdout, "%s: valid coordinator config\n", result.Config)
	default:
		v := worker.Validation{PluginDir: result.PluginDir, PluginsChecked: result.PluginsChecked,
			Offline: result.Offline}
		fmt.Fprintln(a.Stdout, v.Summary(result.Config))
	}
	return code
}

// Top-level names that only one kind of config file has. Names that both
// kinds have (data_dir, log_level, shutdown_timeout) decide nothing.
var (
	coordinatorOnlyNames = map[string]bool{
		"listen": true, "insecure": true, "max_body_bytes": true, "task_types": true, "max_attempts": true,
		"retry_backoff_base": true, "retry_backoff_max": true, "task_timeout_grace": true,
		"schedule_interval": true, "http_read_header_timeout": true, "http_read_timeout": true,
		"http_idle_timeout": true, "workers": true, "tls": true, "api": true,
	}
	workerOnlyNames = map[string]bool{
		"plugin": true, "slots": true, "labels": true, "drain_timeout": true, "restart_backoff_base": true,
		"restart_backoff_cap": true, "plugin_dir": true,
	}
)

// detectKind returns the kind of the config file at path. A coordinator
// block, which every worker config needs, makes it a worker config.
// Otherwise a setting that only coordinator configs have makes it a
// coordinator config, so that a stray plugin block is reported as the
// coordinator reports it. Otherwise a setting that only worker configs
// have makes it a worker config. A file with syntax errors is judged by
// the part that parsed. When nothing decides, a file that parsed is a
// coordinator config, and one that did not is judged by its name: a
// coordinator config when the name contains "coordinator".
func detectKind(path string) string {
	file, diags := hclparse.NewParser().ParseHCLFile(path)
	var body *hclsyntax.Body
	if file != nil {
		body, _ = file.Body.(*hclsyntax.Body)
	}
	var names []string
	if body != nil {
		for name := range body.Attributes {
			names = append(names, name)
		}
		for _, block := range body.Blocks {
			if block.Type == "coordinator" {
				return kindWorker
			}
			names = append(names, block.Type)
		}
	}
	for _, name := range names {
		if coordinatorOnlyNames[name] {
			return kindCoordinator
		}
	}
	for _, name := range names {
		if workerOnlyNames[name] {
			return kindWorker
		}
	}
	if diags.HasErrors() && !strings.Contains(filepath.Base(path), kindCoordinator) {
		return kindWorker
	}
	return kindCoordinator
}
