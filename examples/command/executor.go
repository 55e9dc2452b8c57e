package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dtf-io/dtf/examples/internal/procgroup"
	"github.com/dtf-io/dtf/sdk"
)

// TaskType is the task type this executor declares.
const TaskType = "command"

const pluginName = "dtf-exec-command"

// version is the plugin's release version; builds may set it with
// -ldflags "-X main.version=...".
var version = "0.1.0"

// Defaults for the plugin config.
const (
	// defaultMaxOutputBytes keeps the last 1 MiB of a command's output, which
	// holds the end of a long test log and stays far below the 16 MiB gRPC
	// message limit between plugin and host.
	defaultMaxOutputBytes = 1 << 20
	defaultTimeout        = 10 * time.Minute
)

// Config is the plugin block's config in worker.hcl, passed as JSON.
type Config struct {
	// EnvAllowlist names the variables of the plugin's own environment that a
	// command inherits. Everything else is dropped so that host secrets do
	// not reach user commands.
	EnvAllowlist []string `json:"env_allowlist"`
	// MaxOutputBytes is the most output kept per task, the last bytes win.
	// Default 1 MiB. A payload may lower it but not raise it.
	MaxOutputBytes int `json:"max_output_bytes"`
	// DefaultTimeout applies to tasks submitted without a timeout, as a Go
	// duration string. Default "10m"; "0s" means no limit.
	DefaultTimeout string `json:"default_timeout"`
	// KillGrace is the time between SIGTERM and SIGKILL when a task is
	// cancelled or times out, as a Go duration string. Default "5s".
	KillGrace string `json:"kill_grace"`
}

// Payload is the JSON object of a "command" task.
type Payload struct {
	// Argv is the program and its arguments; it runs without a shell.
	Argv []string `json:"argv"`
	// Env is added on top of the allowed part of the plugin's environment.
	Env map[string]string `json:"env"`
	// Dir is the working directory; a relative path is resolved against the
	// plugin's working directory. Empty means the plugin's working directory.
	Dir string `json:"dir"`
	// MaxOutputBytes lowers the config's output limit for this task.
	MaxOutputBytes int `json:"max_output_bytes"`
}

// Executor runs "command" tasks: one program per task, in its own process
// group, with a filtered environment and a bounded output tail.
type Executor struct {
	mu             sync.Mutex
	envAllowlist   []string
	maxOutputBytes int
	defaultTimeout time.Duration
	killGrace      time.Duration
}

var _ sdk.Executor = (*Executor)(nil)

// NewExecutor returns an Executor with the default config.
func NewExecutor() *Executor {
	return &Executor{
		maxOutputBytes: defaultMaxOutputBytes,
		defaultTimeout: defaultTimeout,
		killGrace:      procgroup.DefaultKillGrace,
	}
}

// Info describes the plugin.
func (e *Executor) Info() sdk.Info {
	return sdk.Info{Name: pluginName, Version: version, TaskTypes: []string{TaskType}}
}

// Configure applies the plugin config; an empty config keeps the defaults.
// It reports every invalid setting as an *sdk.ConfigError, so the worker
// host shows each one at its line in worker.hcl.
func (e *Executor) Configure(raw json.RawMessage) error {
	cfg := Config{}
	problems := sdk.DecodeConfig(raw, &cfg)

	maxOutput := defaultMaxOutputBytes
	if cfg.MaxOutputBytes < 0 {
		problems = append(problems, sdk.ConfigProblem{Path: "max_output_bytes", Summary: "Invalid max_output_bytes",
			Detail: fmt.Sprintf("max_output_bytes is %d; set a positive number of bytes", cfg.MaxOutputBytes)})
	}
	if cfg.MaxOutputBytes > 0 {
		maxOutput = cfg.MaxOutputBytes
	}
	timeout, problem := parseDuration("default_timeout", cfg.DefaultTimeout, defaultTimeout)
	problems = append(problems, problem...)
	grace, problem := parseDuration("kill_grace", cfg.KillGrace, procgroup.DefaultKillGrace)
	problems = append(problems, problem...)
	for i, name := range cfg.EnvAllowlist {
		if name == "" || strings.ContainsAny(name, "=\x00") {
			problems = append(problems, sdk.ConfigProblem{Path: fmt.Sprintf("env_allowlist[%d]", i),
				Summary: "Invalid env_allowlist", Detail: fmt.Sprintf("%q is not a variable name", name)})
		}
	}
	if len(problems) > 0 {
		return &sdk.ConfigError{Problems: problems}
	}

	e.mu.Lock()
	defer e.mu.Unlock()
	e.envAllowlist = cfg.EnvAllowlist
	e.maxOutputBytes = maxOutput
	e.defaultTimeout = timeout
	e.killGrace = grace
	return nil
}

// parseDuration parses an optional duration setting; it returns fallback
// for an empty value, and a problem for an invalid one.
func parseDuration(field, value string, fallback time.Duration) (time.Duration, []sdk.ConfigProblem) {
	if value == "" {
		return fallback, nil
	}
	d, err := time.ParseDuration(value)
	if err != nil || d < 0 {
		return 0, []sdk.ConfigProblem{{Path: field, Summary: "Invalid duration", Detail: fmt.Sprintf(
			"%s is %q; use a non-negative Go duration such as \"30s\" or \"10m\"", field, value)}}
	}
	return d, nil
}

// Execute runs the task's command and returns its exit code as the outcome.
// It returns an error, and starts nothing, when the payload is invalid or the
// program cannot be started.
func (e *Executor) Execute(ctx context.Context, task sdk.Task, _ sdk.Reporter) (sdk.Result, error) {
	e.mu.Lock()
	allowlist := e.envAllowlist
	maxOutput := e.maxOutputBytes
	timeout := e.defaultTimeout
	grace := e.killGrace
	e.mu.Unlock()

	payload, err := decodePayload(task.Payload)
	if err != nil {
		return sdk.Result{}, err
	}
	if payload.MaxOutputBytes > 0 && payload.MaxOutputBytes < maxOutput {
		maxOutput = payload.MaxOutputBytes
	}
	if task.Timeout > 0 {
		timeout = task.Timeout
	}

	env := buildEnv(allowlist, os.LookupEnv, payload.Env)
	program, err := resolveProgram(payload.Argv[0], payload.Env)
	if err != nil {
		return sdk.Result{}, err
	}
	cmd := exec.Command(program, payload.Argv[1:]...)
	cmd.Args[0] = payload.Argv[0]
	cmd.Env = env
	cmd.Dir = payload.Dir

	output := procgroup.NewTail(maxOutput)
	run, err := procgroup.Run(ctx, procgroup.Spec{
		Cmd:       cmd,
		Stdout:    output,
		Stderr:    output,
		Timeout:   timeout,
		KillGrace: grace,
	})
	if err != nil {
		return sdk.Result{}, err
	}
	return commandResult(run, timeout, output), nil
}

// decodePayload parses and checks a payload; errors name the field.
func decodePayload(raw json.RawMessage) (Payload, error) {
	var p Payload
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return p, fmt.Errorf("invalid command payload: %w; known fields: "+
			"argv, env, dir, max_output_bytes", err)
	}
	if len(p.Argv) == 0 || p.Argv[0] == "" {
		return p, errors.New(`invalid command payload: argv is missing; ` +
			`set it to the program and its arguments, for example ["sh", "-c", "make test"]`)
	}
	for name := range p.Env {
		if name == "" || strings.ContainsAny(name, "=\x00") {
			return p, fmt.Errorf("invalid command payload: env name %q is not a variable name", name)
		}
	}
	if p.MaxOutputBytes < 0 {
		return p, fmt.Errorf("invalid command payload: max_output_bytes is %d; "+
			"set a positive number of bytes or leave it out", p.MaxOutputBytes)
	}
	if p.Dir != "" {
		info, err := os.Stat(p.Dir)
		if err != nil {
			return p, fmt.Errorf("invalid command payload: dir %q: %w", p.Dir, err)
		}
		if !info.IsDir() {
			return p, fmt.Errorf("invalid command payload: dir %q is not a directory", p.Dir)
		}
	}
	return p, nil
}

// buildEnv returns the allowed variables of the plugin's environment followed
// by the payload's variables in name order; a payload variable replaces an
// inherited one. The result is never nil, because a nil Cmd.Env would inherit
// the whole environment.
func buildEnv(
	allowlist []string,
	lookup func(string) (string, bool),
	extra map[string]string,
) []string {
	env := make([]string, 0, len(allowlist)+len(extra))
	for _, name := range allowlist {
		if _, override := extra[name]; override {
			continue
		}
		if value, ok := lookup(name); ok {
			env = append(env, name+"="+value)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(extra)) {
		env = append(env, name+"="+extra[name])
	}
	return env
}

// resolveProgram finds argv[0]. A name with a slash is used as given, and a
// relative one is resolved against the working directory by os/exec. A bare
// name is looked up in the payload's PATH when the payload sets one, as a
// shell with that environment would, and otherwise in the plugin's PATH.
func resolveProgram(name string, payloadEnv map[string]string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	path, ok := payloadEnv["PATH"]
	if !ok {
		found, err := exec.LookPath(name)
		if err != nil {
			return "", fmt.Errorf("invalid command payload: argv[0] %q: %w", name, err)
		}
		return found, nil
	}
	for _, dir := range filepath.SplitList(path) {
		if !filepath.IsAbs(dir) {
			continue
		}
		candidate := filepath.Join(dir, name)
		info, err := os.Stat(candidate)
		if err == nil && info.Mode().IsRegular() && info.Mode().Perm()&0o111 != 0 {
			return candidate, nil
		}
	}
	return "", fmt.Errorf("invalid command payload: argv[0] %q not found in the payload's PATH %q",
		name, path)
}

// commandResult turns a finished run into the task's outcome.
func commandResult(run procgroup.Result, timeout time.Duration, output *procgroup.Tail) sdk.Result {
	res := sdk.Result{Output: output.Bytes(), ExitCode: run.ExitCode()}

	switch run.Stop {
	case procgroup.TimedOut:
		res.Status = sdk.StatusTimedOut
		res.Message = fmt.Sprintf("timed out after %s; the process group was killed", timeout)
	case procgroup.Cancelled:
		res.Status = sdk.StatusCancelled
		res.Message = "cancelled; the process group was killed"
	default:
		if res.ExitCode == 0 {
			res.Status = sdk.StatusSucceeded
			res.Message = "exit code 0"
		} else {
			res.Status = sdk.StatusFailed
			res.Message = fmt.Sprintf("exit code %d", res.ExitCode)
			if sig := run.Signal(); sig != 0 {
				res.Message = fmt.Sprintf("killed by signal %s (exit code %d)", sig, res.ExitCode)
			}
		}
	}

	if dropped := output.Dropped(); dropped > 0 {
		res.Message += fmt.Sprintf("; output truncated to the last %d bytes, %d bytes dropped",
			output.Len(), dropped)
	}
	return res
}
