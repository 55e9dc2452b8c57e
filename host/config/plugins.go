package config

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/hcl/v2"

	dtfplugin "github.com/dtf-io/dtf/plugin"
)

// Restart policies of a plugin block's restart block.
const (
	// RestartAlways launches a crashed plugin again after the restart
	// backoff, without limit. It is the default.
	RestartAlways = "always"
	// RestartNever leaves a crashed plugin down and reports it. For the
	// connector, the worker then stops with an error, because a worker
	// without a connection cannot do any work.
	RestartNever = "never"
)

// RestartPolicy is the host's response to the crash of one plugin.
type RestartPolicy struct {
	// Policy is RestartAlways or RestartNever; empty means RestartAlways.
	Policy string
	// BackoffBase and BackoffCap bound this plugin's restart delay in the
	// way restart_backoff_base and restart_backoff_cap do for all plugins.
	// Load sets both, taking the top-level values for what the restart
	// block leaves out; zero, in a Config built without Load, means the
	// top-level values.
	BackoffBase time.Duration
	BackoffCap  time.Duration
}

// Never reports whether a crashed plugin stays down.
func (r RestartPolicy) Never() bool { return r.Policy == RestartNever }

// WorkerBinary is the file name of the lean worker host binary, which make
// build puts beside the plugins. No plugin may take this name by default.
const WorkerBinary = "dtf-worker"

// BinaryName returns the file name that the host looks for in plugin_dir
// when a plugin block leaves out path: dtf-exec-NAME for an executor and
// dtf-NAME for the other kinds, as make build names the shipped binaries.
func BinaryName(kind, name string) string {
	if kind == dtfplugin.KindExecutor {
		return "dtf-exec-" + name
	}
	return "dtf-" + name
}

// executableDir returns the folder of the running program, which is the
// default plugin_dir. Tests replace it, because a test binary lives in a
// temporary folder without plugins.
var executableDir = func() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", err
	}
	if resolved, err := filepath.EvalSymlinks(exe); err == nil {
		exe = resolved
	}
	return filepath.Dir(exe), nil
}

// decodePluginDir returns the absolute plugin_dir: the setting resolved
// against dir, or the folder of the running dtf or dtf-worker binary when
// it is unset.
func decodePluginDir(raw *fileSchema, dir string) (string, hcl.Diagnostics) {
	if raw.PluginDir != nil {
		if *raw.PluginDir == "" {
			return "", hcl.Diagnostics{errorAt(raw.PluginDirRange, "Invalid plugin_dir",
				"plugin_dir must name the folder of the plugin binaries, such as \"../bin\"; "+
					"leave it out to use the folder of the running dtf or dtf-worker binary.")}
		}
		return resolvePath(dir, *raw.PluginDir), nil
	}
	exeDir, err := executableDir()
	if err != nil {
		return "", hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Unknown plugin_dir",
			Detail: fmt.Sprintf("The folder of the running dtf or dtf-worker binary, the default plugin_dir, "+
				"is unknown: %v; set plugin_dir or give each plugin block a path.", err)}}
	}
	return exeDir, nil
}

// pluginPath returns the plugin's binary: path resolved against dir, or
// the conventional name in pluginDir when path is left out. conventional
// reports the second case.
func pluginPath(block pluginBlock, dir, pluginDir string) (path string, conventional bool) {
	if block.Path != nil {
		return resolvePath(dir, *block.Path), false
	}
	if pluginDir == "" {
		return "", true
	}
	return filepath.Join(pluginDir, BinaryName(block.Kind, block.Name)), true
}

// checkPluginPath checks the plugin's binary and returns the diagnostic of
// a path that cannot be launched. A conventional path is reported at the
// block's header, with the rule that produced it.
func checkPluginPath(block pluginBlock, p Plugin, pluginDir string) *hcl.Diagnostic {
	if block.Path != nil && *block.Path == "" {
		return errorAt(block.PathRange, "Invalid plugin path",
			"path must name the plugin binary; leave path out to use "+
				BinaryName(block.Kind, block.Name)+" in plugin_dir.")
	}
	if block.Path == nil && BinaryName(block.Kind, block.Name) == WorkerBinary {
		return errorAt(block.DefRange, "Reserved plugin name", fmt.Sprintf(
			"A plugin %q of kind %q without path would run %s, the worker host binary, not a plugin; "+
				"rename the plugin or set its path.", block.Name, block.Kind, WorkerBinary))
	}
	if p.Path == "" {
		// decodePluginDir has reported why plugin_dir is unknown.
		return nil
	}
	err := checkBinary(p.Path)
	if err == nil {
		return nil
	}
	if block.Path != nil {
		return errorAt(block.PathRange, "Invalid plugin path", err.Error())
	}
	return errorAt(block.DefRange, "Invalid plugin path", fmt.Sprintf(
		"%v. The block has no path, so the host looks for %s, the name for a plugin %q of kind %q, "+
			"in plugin_dir %s; set path or plugin_dir.",
		err, BinaryName(block.Kind, block.Name), block.Name, block.Kind, pluginDir))
}

// decodeRestart parses a plugin's restart block. Backoff settings that
// the block leaves out come from cfg's top-level values, which decode has
// parsed before the plugins.
func decodeRestart(block *restartBlock, cfg *Config) (RestartPolicy, hcl.Diagnostics) {
	policy := RestartPolicy{
		Policy:      RestartAlways,
		BackoffBase: cfg.RestartBackoffBase,
		BackoffCap:  cfg.RestartBackoffCap,
	}
	if block == nil {
		return policy, nil
	}
	var diags, more hcl.Diagnostics
	if block.Policy != nil {
		policy.Policy = *block.Policy
		if policy.Policy != RestartAlways && policy.Policy != RestartNever {
			diags = append(diags, errorAt(block.PolicyRange, "Invalid restart policy",
				fmt.Sprintf("policy %q is not one of %q (launch the crashed plugin again, the default) "+
					"and %q (leave it down).", *block.Policy, RestartAlways, RestartNever)))
		}
	}
	if block.BackoffBase != nil {
		policy.BackoffBase, more = parseDuration(block.BackoffBase, block.BackoffBaseRange,
			"backoff_base", cfg.RestartBackoffBase, maxRestartBackoffBase)
		diags = append(diags, more...)
		if !more.HasErrors() && policy.BackoffBase < minRestartBackoffBase {
			diags = append(diags, errorAt(block.BackoffBaseRange, "Invalid duration",
				fmt.Sprintf("backoff_base %q is too short; use at least %q.",
					*block.BackoffBase, formatDuration(minRestartBackoffBase))))
		}
	}
	if block.BackoffCap != nil {
		policy.BackoffCap, more = parseDuration(block.BackoffCap, block.BackoffCapRange,
			"backoff_cap", cfg.RestartBackoffCap, maxRestartBackoffCap)
		diags = append(diags, more...)
	}
	if diags.HasErrors() || policy.BackoffCap >= policy.BackoffBase {
		return policy, diags
	}
	rng := block.BackoffCapRange
	if block.BackoffCap == nil {
		rng = block.BackoffBaseRange
	}
	return policy, append(diags, errorAt(rng, "Invalid duration",
		fmt.Sprintf("The restart backoff cap %s is below its base %s; raise backoff_cap or lower "+
			"backoff_base in this restart block (unset ones take restart_backoff_base and "+
			"restart_backoff_cap).", formatDuration(policy.BackoffCap), formatDuration(policy.BackoffBase))))
}
