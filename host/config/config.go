// Package config loads the worker host's HCL configuration: where the worker
// keeps its outbox, how many tasks it runs at once, which coordinator it
// joins and which plugin binaries it launches.
package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/zclconf/go-cty/cty"
	ctyjson "github.com/zclconf/go-cty/cty/json"

	"github.com/dtf-io/dtf/internal/hclutil"
	dtfplugin "github.com/dtf-io/dtf/plugin"
	"github.com/dtf-io/dtf/protocol"
)

// Defaults of optional settings.
const (
	DefaultSlots           = 1
	DefaultLogLevel        = "info"
	DefaultShutdownTimeout = 10 * time.Second
	// DefaultDrainTimeout leaves 10s of the 30s that Kubernetes and
	// similar supervisors wait after SIGTERM by default for releasing
	// the tasks still running, waiting for acknowledgements and stopping
	// the plugins.
	DefaultDrainTimeout = 20 * time.Second
	// DefaultRestartBackoffBase and DefaultRestartBackoffCap bound the
	// delay before a crashed plugin is launched again. A crash caused by
	// a bad binary or config repeats at once, so the delay doubles per
	// crash up to the cap.
	DefaultRestartBackoffBase = 500 * time.Millisecond
	DefaultRestartBackoffCap  = 30 * time.Second
)

// Config is a loaded and validated worker configuration. Paths in it are
// absolute.
type Config struct {
	// File is the absolute path of the loaded file.
	File string
	// DataDir contains the worker's outbox of unacknowledged task outcomes.
	DataDir string
	// Slots is the number of tasks the worker runs at once.
	Slots int
	// LogLevel is one of trace, debug, info, warn, error.
	LogLevel string
	// Labels describe the worker to the coordinator, for example gpu=a100.
	// They always contain os and arch, with the config's values where it
	// sets them and runtime.GOOS and runtime.GOARCH otherwise.
	Labels map[string]string
	// ShutdownTimeout bounds the host's shutdown after its context ends,
	// and each of the two waits at the end of a drain: for released tasks
	// to stop and for the coordinator's acknowledgements.
	ShutdownTimeout time.Duration
	// DrainTimeout is how long a draining worker (after SIGTERM) lets its
	// running tasks finish before it cancels them and releases them to
	// the coordinator.
	DrainTimeout time.Duration
	// RestartBackoffBase is the delay before the first relaunch of a
	// crashed plugin; it doubles per further crash, with full jitter, up
	// to RestartBackoffCap. A plugin that ran for a minute counts as
	// healthy again.
	RestartBackoffBase time.Duration
	RestartBackoffCap  time.Duration
	// PluginDir is the absolute folder where the host looks for the binary
	// of a plugin block without path (see BinaryName). Default: the folder
	// of the running dtf binary.
	PluginDir   string
	Coordinator Coordinator
	// Plugins are in file order; exactly one has kind "connector", at
	// least one has kind "executor", and any number have kind "metrics".
	Plugins []Plugin

	// files are the parsed HCL files, for the source lines of diagnostics.
	files map[string]*hcl.File
}

// Coordinator is the coordinator the worker joins.
type Coordinator struct {
	// URL is the coordinator's base URL as configured, for example
	// ws://127.0.0.1:7070; protocol.ConnectURL accepts it.
	URL      string
	WorkerID string
	// Token is the shared secret of the token mode, which has no per-message
	// tags; empty when the coordinator checks no token. It is used only
	// when neither Secret nor SecretFile is set.
	Token string
	// Secret is the worker's credential secret from `dtf credentials
	// create`. SecretFile is the absolute path of a file that contains it,
	// which the reconnection plugin reads before every handshake. At most
	// one is set. The secret goes only to the reconnection plugin, is never
	// logged and never reaches an executor plugin.
	Secret     string
	SecretFile string
	// CAFile is the absolute path of a PEM file of CA certificates. With
	// it, a wss:// coordinator's certificate must chain to one of them
	// instead of to the system roots. Empty uses the system roots.
	CAFile string
}

// Plugin is one plugin block.
type Plugin struct {
	// Name is the block label, unique in the file.
	Name string
	// Kind is "connector", "executor" or "metrics".
	Kind string
	// Path is the absolute path of the plugin binary: the block's path, or
	// BinaryName(Kind, Name) in PluginDir when the block has none.
	Path string
	Args []string
	// Env lists the names of host environment variables the plugin gets;
	// it gets no others.
	Env []string
	// SHA256 is the expected hex checksum of the binary, or empty.
	SHA256       string
	StartTimeout time.Duration
	// Restart is the block's restart policy.
	Restart RestartPolicy
	// ConfigJSON is the block's config body as a JSON object.
	ConfigJSON []byte

	location pluginLocation
}

// Environ returns the plugin's environment as "NAME=value" entries, taking
// each name in Env from lookup (os.LookupEnv in production) and skipping
// names that are not set.
func (p Plugin) Environ(lookup func(string) (string, bool)) []string {
	env := make([]string, 0, len(p.Env))
	for _, name := range p.Env {
		if value, ok := lookup(name); ok {
			env = append(env, name+"="+value)
		}
	}
	return env
}

// Connector returns the connector plugin.
func (c *Config) Connector() Plugin {
	for _, p := range c.Plugins {
		if p.Kind == dtfplugin.KindConnector {
			return p
		}
	}
	return Plugin{}
}

// Executors returns the executor plugins in file order.
func (c *Config) Executors() []Plugin {
	var out []Plugin
	for _, p := range c.Plugins {
		if p.Kind == dtfplugin.KindExecutor {
			out = append(out, p)
		}
	}
	return out
}

// MetricsPlugins returns the metrics plugins in file order. The first one
// provides the summary that the worker sends to the coordinator.
func (c *Config) MetricsPlugins() []Plugin {
	var out []Plugin
	for _, p := range c.Plugins {
		if p.Kind == dtfplugin.KindMetrics {
			out = append(out, p)
		}
	}
	return out
}

// Overrides replace settings of the file, for example from command-line
// flags when several workers start from one file. Empty fields keep the
// file's value.
type Overrides struct {
	WorkerID string
	// DataDir is resolved against the working directory, as a flag is.
	DataDir string
	URL     string
}

// Apply applies o to c and checks the new values.
func (c *Config) Apply(o Overrides) error {
	if o.WorkerID != "" {
		if err := protocol.CheckWorkerID(o.WorkerID); err != nil {
			return fmt.Errorf("invalid -worker-id: %w", err)
		}
		c.Coordinator.WorkerID = o.WorkerID
	}
	if o.DataDir != "" {
		dir, err := filepath.Abs(o.DataDir)
		if err != nil {
			return fmt.Errorf("resolve data dir override %q: %w", o.DataDir, err)
		}
		c.DataDir = dir
	}
	if o.URL != "" {
		if _, err := protocol.ConnectURL(o.URL); err != nil {
			return err
		}
		c.Coordinator.URL = o.URL
	}
	return nil
}

// DiagnosticsError is the error of Load for a file with problems. Its
// message lists each problem with file:line:col and the source line.
type DiagnosticsError struct {
	Diagnostics hcl.Diagnostics
	text        string
}

func (e *DiagnosticsError) Error() string { return e.text }

// Load reads, decodes and checks the worker configuration in path.
func Load(path string) (*Config, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("resolve config path %q: %w", path, err)
	}
	if _, err := os.Stat(abs); err != nil {
		return nil, fmt.Errorf("read worker config: %w", err)
	}

	parser := hclparse.NewParser()
	file, diags := parser.ParseHCLFile(abs)
	var cfg *Config
	if !diags.HasErrors() {
		var more hcl.Diagnostics
		cfg, more = decode(file.Body, filepath.Dir(abs))
		diags = append(diags, more...)
	}
	if diags.HasErrors() {
		return nil, &DiagnosticsError{Diagnostics: diags, text: formatDiagnostics(abs, diags, parser.Files())}
	}
	cfg.File = abs
	cfg.files = parser.Files()
	for i := range cfg.Plugins {
		cfg.Plugins[i].location.file = abs
		cfg.Plugins[i].location.files = cfg.files
	}
	return cfg, nil
}

// formatDiagnostics renders diags in the format the coordinator config uses too.
func formatDiagnostics(path string, diags hcl.Diagnostics, files map[string]*hcl.File) string {
	return hclutil.FormatDiagnostics("invalid worker config "+path, path, diags, files)
}

func decode(body hcl.Body, dir string) (*Config, hcl.Diagnostics) {
	ctx := hclutil.EvalContext()
	var raw fileSchema
	diags := gohcl.DecodeBody(body, ctx, &raw)
	if diags.HasErrors() {
		return nil, diags
	}

	cfg := &Config{
		DataDir:  resolvePath(dir, raw.DataDir),
		Slots:    DefaultSlots,
		LogLevel: DefaultLogLevel,
		Labels:   platformLabels(raw.Labels),
		Coordinator: Coordinator{
			URL:      raw.Coordinator.URL,
			WorkerID: raw.Coordinator.WorkerID,
		},
	}
	if raw.Coordinator.Token != nil {
		cfg.Coordinator.Token = *raw.Coordinator.Token
	}
	diags = append(diags, decodeSecret(raw.Coordinator, dir, &cfg.Coordinator)...)
	diags = append(diags, decodeCAFile(raw.Coordinator, dir, &cfg.Coordinator)...)
	diags = append(diags, checkTop(&raw, cfg)...)
	var timeoutDiags hcl.Diagnostics
	cfg.ShutdownTimeout, timeoutDiags = parseDuration(raw.ShutdownTimeout, raw.ShutdownTimeoutRange,
		"shutdown_timeout", DefaultShutdownTimeout, maxShutdownTimeout)
	diags = append(diags, timeoutDiags...)
	diags = append(diags, decodeSupervision(&raw, cfg)...)
	var dirDiags hcl.Diagnostics
	cfg.PluginDir, dirDiags = decodePluginDir(&raw, dir)
	diags = append(diags, dirDiags...)

	for _, block := range raw.Plugins {
		plugin, more := decodePlugin(block, dir, cfg, ctx)
		if plugin.Kind == dtfplugin.KindConnector {
			plugin.location.coordinatorValues = coordinatorValues(raw.Coordinator)
		}
		diags = append(diags, more...)
		diags = append(diags, checkPluginEnv(block, cfg.Coordinator, os.LookupEnv)...)
		cfg.Plugins = append(cfg.Plugins, plugin)
	}
	diags = append(diags, checkPluginSet(raw.Plugins)...)
	return cfg, diags
}

// decodeSecret reads secret and secret_file. It checks the format of a
// literal secret, whose diagnostics never show its value, and leaves the
// file to the reconnection plugin, which reads it before every handshake.
func decodeSecret(block coordinatorBlock, dir string, out *Coordinator) hcl.Diagnostics {
	var diags hcl.Diagnostics
	if block.Secret != nil && block.SecretFile != nil {
		return append(diags, errorAt(block.SecretFileRng, "Conflicting worker secret",
			"Set either secret or secret_file in the coordinator block, not both."))
	}
	if block.Secret != nil {
		out.Secret = strings.TrimSpace(*block.Secret)
		if _, err := protocol.CredentialIDOf(out.Secret); err != nil {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid worker secret",
				Detail: err.Error() + ". An empty value usually means that the environment variable " +
					"named in env() is not set."})
		}
	}
	if block.SecretFile != nil {
		if strings.TrimSpace(*block.SecretFile) == "" {
			return append(diags, errorAt(block.SecretFileRng, "Invalid secret_file",
				"secret_file must name the file that contains the worker's secret."))
		}
		out.SecretFile = resolvePath(dir, *block.SecretFile)
	}
	return diags
}

func checkTop(raw *fileSchema, cfg *Config) hcl.Diagnostics {
	var diags hcl.Diagnostics
	if raw.DataDir == "" {
		diags = append(diags, errorAt(raw.DataDirRange, "Invalid data_dir",
			"data_dir must name a folder for the worker's outbox, for example \"../data/worker-1\"."))
	}
	diags = append(diags, decodeSlots(raw.Slots, &cfg.Slots)...)
	if raw.LogLevel != nil {
		cfg.LogLevel = strings.ToLower(*raw.LogLevel)
		if level := hclog.LevelFromString(cfg.LogLevel); level == hclog.NoLevel || level == hclog.Off {
			diags = append(diags, errorAt(raw.LogLevelRange, "Invalid log_level",
				fmt.Sprintf("log_level %q is not one of trace, debug, info, warn, error.", *raw.LogLevel)))
		}
	}
	if _, err := protocol.ConnectURL(raw.Coordinator.URL); err != nil {
		diags = append(diags, errorAt(raw.Coordinator.URLRange, "Invalid coordinator url", err.Error()+"."))
	}
	if err := protocol.CheckWorkerID(raw.Coordinator.WorkerID); err != nil {
		diags = append(diags, errorAt(raw.Coordinator.WorkerIDRange, "Invalid worker_id",
			err.Error()+"."))
	}
	diags = append(diags, checkLabels(raw.Labels, cfg.Labels, raw.LabelsRange)...)
	return diags
}

func decodePlugin(block pluginBlock, dir string, cfg *Config, ctx *hcl.EvalContext) (Plugin, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	p := Plugin{
		Name: block.Name,
		Kind: block.Kind,
		Args: block.Args,
		Env:  block.Env,
		location: pluginLocation{
			block:        block.DefRange,
			path:         block.PathRange,
			sha256:       block.SHA256Range,
			startTimeout: block.StartTimeoutRange,
		},
	}
	p.Path, p.location.conventional = pluginPath(block, dir, cfg.PluginDir)
	if _, err := dtfplugin.VersionedPlugins(block.Kind); err != nil {
		diags = append(diags, errorAt(block.KindRange, "Invalid plugin kind",
			fmt.Sprintf("Plugin %q has kind %q; valid kinds are %s.", block.Name, block.Kind,
				strings.Join(dtfplugin.Kinds(), ", "))))
	}
	if diag := checkPluginPath(block, p, cfg.PluginDir); diag != nil {
		diags = append(diags, diag)
	}
	for _, name := range block.Env {
		if name == "" || strings.ContainsAny(name, "= \t") {
			diags = append(diags, errorAt(block.EnvRange, "Invalid plugin env",
				fmt.Sprintf("env lists variable names to copy from the host, such as \"PATH\"; %q is not a name.", name)))
		}
	}
	if block.SHA256 != nil {
		p.SHA256 = strings.ToLower(strings.TrimSpace(*block.SHA256))
		if len(p.SHA256) != 64 || strings.Trim(p.SHA256, "0123456789abcdef") != "" {
			diags = append(diags, errorAt(block.SHA256Range, "Invalid sha256",
				"sha256 must be the 64 hex digits of the binary's SHA-256, as sha256sum prints them."))
		}
	}
	var more hcl.Diagnostics
	p.StartTimeout, more = parseDuration(block.StartTimeout, block.StartTimeoutRange,
		"start_timeout", dtfplugin.DefaultStartTimeout, maxStartTimeout)
	diags = append(diags, more...)
	p.Restart, more = decodeRestart(block.Restart, cfg)
	diags = append(diags, more...)
	p.ConfigJSON, more = configJSON(block.Config, ctx, &p.location)
	diags = append(diags, more...)
	return p, diags
}

// checkPluginSet checks names and kinds across all plugin blocks.
func checkPluginSet(blocks []pluginBlock) hcl.Diagnostics {
	var diags hcl.Diagnostics
	seen := map[string]pluginBlock{}
	var connectors, executors []pluginBlock
	for _, block := range blocks {
		if block.Name == "" {
			diags = append(diags, errorAt(block.NameRange, "Invalid plugin name",
				`The plugin name is empty; name each plugin block, such as plugin "reconnection" { ... }.`))
			continue
		}
		if first, ok := seen[block.Name]; ok {
			diags = append(diags, errorAt(block.NameRange, "Duplicate plugin name",
				fmt.Sprintf("Plugin %q is already defined at %s; give each plugin block its own name.",
					block.Name, first.DefRange)))
		} else {
			seen[block.Name] = block
		}
		switch block.Kind {
		case dtfplugin.KindConnector:
			connectors = append(connectors, block)
		case dtfplugin.KindExecutor:
			executors = append(executors, block)
		}
	}
	switch {
	case len(connectors) == 0:
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Missing connector plugin", Detail: "Exactly one plugin block needs kind = \"connector\"; add the reconnection plugin."})
	case len(connectors) > 1:
		diags = append(diags, errorAt(connectors[1].DefRange, "Second connector plugin",
			fmt.Sprintf("Only one connector plugin is allowed; %q is already the connector.", connectors[0].Name)))
	}
	if len(executors) == 0 {
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Missing executor plugin", Detail: "At least one plugin block needs kind = \"executor\", or the worker has nothing to run."})
	}
	return diags
}

// configJSON converts the attributes of a plugin's config block to a JSON
// object. Nested blocks are not allowed, but maps and objects are. It
// records in loc where the block and each value in it are.
func configJSON(block *configBlock, ctx *hcl.EvalContext, loc *pluginLocation) ([]byte, hcl.Diagnostics) {
	if block == nil {
		return []byte("{}"), nil
	}
	loc.config = block.DefRange
	loc.configValues = make(map[string]hcl.Range)
	attrs, diags := block.Body.JustAttributes()
	values := make(map[string]cty.Value, len(attrs))
	names := make([]string, 0, len(attrs))
	for name := range attrs {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		value, more := attrs[name].Expr.Value(ctx)
		diags = append(diags, more...)
		values[name] = value
		locateValues(name, attrs[name].Expr, ctx, loc.configValues)
	}
	if diags.HasErrors() {
		return nil, diags
	}
	object := cty.ObjectVal(values)
	data, err := ctyjson.Marshal(object, object.Type())
	if err != nil {
		return nil, append(diags, errorAt(block.DefRange, "Invalid plugin config",
			fmt.Sprintf("The config block cannot be converted to JSON: %v.", err)))
	}
	return data, diags
}

// parseDuration parses a duration attribute such as "2s" that must be
// positive and at most max. A number without a unit is rejected, because
// "10" could mean seconds or milliseconds.
func parseDuration(value *string, rng hcl.Range, name string, def, max time.Duration) (time.Duration, hcl.Diagnostics) {
	if value == nil {
		return def, nil
	}
	text := strings.TrimSpace(*value)
	d, err := time.ParseDuration(text)
	if err != nil {
		detail := fmt.Sprintf("%s %q is not a duration; write a number with a unit, such as \"2s\", \"500ms\" or \"1m\".",
			name, *value)
		switch {
		case strings.Contains(err.Error(), "missing unit"):
			detail = fmt.Sprintf("%s %q has no unit; write for example \"%ss\" for seconds or \"%sms\" for milliseconds.",
				name, *value, *value, *value)
		case durationSyntax.MatchString(text):
			detail = fmt.Sprintf("%s %q is too large; use at most %q.", name, *value, formatDuration(max))
		}
		return 0, hcl.Diagnostics{errorAt(rng, "Invalid duration", detail)}
	}
	if d <= 0 {
		return 0, hcl.Diagnostics{errorAt(rng, "Invalid duration",
			fmt.Sprintf("%s must be positive, got %q.", name, *value))}
	}
	if d > max {
		return 0, hcl.Diagnostics{errorAt(rng, "Invalid duration",
			fmt.Sprintf("%s %q is too long; use at most %q, default %q.", name, *value,
				formatDuration(max), formatDuration(def)))}
	}
	return d, nil
}

// checkBinary reports a plugin path that cannot be launched, so that the
// mistake shows with its line in the config file.
func checkBinary(path string) error {
	info, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("plugin binary %s not found; build it with make build or fix path in the worker config", path)
	case err != nil:
		return fmt.Errorf("stat plugin binary %s: %v", path, err)
	case info.IsDir():
		return fmt.Errorf("plugin path %s is a directory; point path at the plugin binary", path)
	case info.Mode().Perm()&0o111 == 0:
		return fmt.Errorf("plugin binary %s is not executable; run chmod +x on it or rebuild it with make build", path)
	}
	return nil
}

func resolvePath(dir, path string) string {
	if path == "" || filepath.IsAbs(path) {
		return path
	}
	return filepath.Join(dir, path)
}

func errorAt(rng hcl.Range, summary, detail string) *hcl.Diagnostic {
	return &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary, Detail: detail, Subject: rng.Ptr()}
}
