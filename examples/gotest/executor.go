package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/dtf-io/dtf/examples/internal/procgroup"
	"github.com/dtf-io/dtf/sdk"
)

// TaskType is the task type this executor declares.
const TaskType = "gotest"

const pluginName = "dtf-exec-gotest"

// version is the plugin's release version; builds may set it with
// -ldflags "-X main.version=...".
var version = "0.1.0"

// Defaults for the plugin config.
const (
	// defaultMaxTestOutputBytes keeps the last 16 KiB of each failing test,
	// which holds its failure messages and the end of its log.
	defaultMaxTestOutputBytes = 16 << 10
	// defaultMaxOutputBytes bounds the failure output of a whole task, far
	// below the 16 MiB gRPC message limit between plugin and host.
	defaultMaxOutputBytes = 1 << 20
	defaultTimeout        = 30 * time.Minute
	// maxLineBytes bounds one line of go test -json output.
	maxLineBytes = 1 << 20
	// stderrBytes is how much of go test's stderr is kept for the result.
	stderrBytes = 64 << 10
)

// Config is the plugin block's config in worker.hcl, passed as JSON.
type Config struct {
	// Go is the go command to run, a path or a name looked up in PATH.
	// Default "go".
	Go string `json:"go"`
	// MaxTestOutputBytes is the most output kept per failing test, the last
	// bytes win. Default 16 KiB.
	MaxTestOutputBytes int `json:"max_test_output_bytes"`
	// MaxOutputBytes is the most failure output kept per task over all
	// tests. Default 1 MiB.
	MaxOutputBytes int `json:"max_output_bytes"`
	// DefaultTimeout applies to tasks submitted without a timeout, as a Go
	// duration string. Default "30m"; "0s" means no limit.
	DefaultTimeout string `json:"default_timeout"`
	// KillGrace is the time between SIGTERM and SIGKILL when a task is
	// cancelled or times out. Default "5s".
	KillGrace string `json:"kill_grace"`
}

// Payload is the JSON object of a "gotest" task.
type Payload struct {
	// Dir is the root of the Go module to test; it must contain go.mod.
	Dir string `json:"dir"`
	// Packages are the package patterns to test. Default ["./..."].
	Packages []string `json:"packages"`
	// Args are go test flags placed before the packages, such as "-count=1"
	// or "-run", "TestX".
	Args []string `json:"args"`
}

// Executor runs "gotest" tasks with `go test -json` and reports per-test
// results. The go command inherits the plugin's environment, which the host
// already limits to the names in the plugin block's env list.
type Executor struct {
	mu        sync.Mutex
	goCommand string
	perTest   int
	total     int
	timeout   time.Duration
	killGrace time.Duration
}

var _ sdk.Executor = (*Executor)(nil)

// NewExecutor returns an Executor with the default config.
func NewExecutor() *Executor {
	return &Executor{
		goCommand: "go",
		perTest:   defaultMaxTestOutputBytes,
		total:     defaultMaxOutputBytes,
		timeout:   defaultTimeout,
		killGrace: procgroup.DefaultKillGrace,
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
	perTest, problem := positiveOr("max_test_output_bytes", cfg.MaxTestOutputBytes, defaultMaxTestOutputBytes)
	problems = append(problems, problem...)
	total, problem := positiveOr("max_output_bytes", cfg.MaxOutputBytes, defaultMaxOutputBytes)
	problems = append(problems, problem...)
	timeout, problem := durationOr("default_timeout", cfg.DefaultTimeout, defaultTimeout)
	problems = append(problems, problem...)
	grace, problem := durationOr("kill_grace", cfg.KillGrace, procgroup.DefaultKillGrace)
	problems = append(problems, problem...)
	if len(problems) > 0 {
		return &sdk.ConfigError{Problems: problems}
	}

	e.mu.Lock()
	defer e.mu.Unlock()
	if cfg.Go != "" {
		e.goCommand = cfg.Go
	}
	e.perTest, e.total, e.timeout, e.killGrace = perTest, total, timeout, grace
	return nil
}

func positiveOr(field string, value, fallback int) (int, []sdk.ConfigProblem) {
	if value < 0 {
		return 0, []sdk.ConfigProblem{{Path: field, Summary: "Invalid " + field,
			Detail: fmt.Sprintf("%s is %d; set a positive number of bytes", field, value)}}
	}
	if value == 0 {
		return fallback, nil
	}
	return value, nil
}

func durationOr(field, value string, fallback time.Duration) (time.Duration, []sdk.ConfigProblem) {
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

// Execute runs go test on the payload's packages. It returns an error, and
// starts nothing, when the payload is invalid or go cannot be started.
func (e *Executor) Execute(ctx context.Context, task sdk.Task, reporter sdk.Reporter) (sdk.Result, error) {
	e.mu.Lock()
	goCommand, perTest, total := e.goCommand, e.perTest, e.total
	timeout, grace := e.timeout, e.killGrace
	e.mu.Unlock()

	payload, err := decodePayload(task.Payload)
	if err != nil {
		return sdk.Result{}, err
	}
	if task.Timeout > 0 {
		timeout = task.Timeout
	}

	args := append([]string{"test", "-json"}, payload.Args...)
	args = append(args, payload.Packages...)
	cmd := exec.Command(goCommand, args...)
	cmd.Dir = payload.Dir

	collect := newCollector(perTest, total, func(done, started, failed int) {
		if reporter == nil {
			return
		}
		// NOTE: go test starts packages as it goes, so the number started
		// can grow and the fraction can drop between two reports.
		reporter.Progress(float64(done)/float64(started),
			fmt.Sprintf("%d of %d packages done, %d failed", done, started, failed))
	})
	lines := &lineWriter{max: maxLineBytes, onLine: collect.line}
	stderr := procgroup.NewTail(stderrBytes)

	run, err := procgroup.Run(ctx, procgroup.Spec{
		Cmd:       cmd,
		Stdout:    lines,
		Stderr:    stderr,
		Timeout:   timeout,
		KillGrace: grace,
	})
	if err != nil {
		return sdk.Result{}, fmt.Errorf("run go test in %s: %w; set go in the gotest plugin config "+
			"or add PATH to the plugin's env list", payload.Dir, err)
	}
	lines.flush()

	report := collect.finish()
	return buildResult(run, timeout, report, collect.buildOutput(), stderr.Bytes(), total)
}

// decodePayload parses and checks a payload; errors name the field.
func decodePayload(raw json.RawMessage) (Payload, error) {
	var p Payload
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return p, fmt.Errorf("invalid gotest payload: %w; known fields: dir, packages, args", err)
	}
	if p.Dir == "" {
		return p, errors.New("invalid gotest payload: dir is missing; " +
			"set it to the root folder of the Go module to test")
	}
	info, err := os.Stat(filepath.Join(p.Dir, "go.mod"))
	if err != nil || info.IsDir() {
		return p, fmt.Errorf("invalid gotest payload: dir %q contains no go.mod file; "+
			"set it to the root folder of a Go module", p.Dir)
	}
	if len(p.Packages) == 0 {
		p.Packages = []string{"./..."}
	}
	for i, pkg := range p.Packages {
		if pkg == "" || strings.HasPrefix(pkg, "-") {
			return p, fmt.Errorf("invalid gotest payload: packages[%d] is %q, which is not "+
				"a package pattern; put go test flags in args", i, pkg)
		}
	}
	return p, nil
}

// buildResult turns a finished go test run into the task's outcome.
func buildResult(
	run procgroup.Result,
	timeout time.Duration,
	report Report,
	buildOutput, stderr []byte,
	total int,
) (sdk.Result, error) {
	data, err := json.Marshal(report)
	if err != nil {
		return sdk.Result{}, fmt.Errorf("encode gotest report: %w", err)
	}
	res := sdk.Result{Data: data, ExitCode: run.ExitCode()}

	switch {
	case run.Stop == procgroup.TimedOut:
		res.Status = sdk.StatusTimedOut
		res.Message = fmt.Sprintf("timed out after %s; %s", timeout, summary(report))
	case run.Stop == procgroup.Cancelled:
		res.Status = sdk.StatusCancelled
		res.Message = "cancelled; " + summary(report)
	case res.ExitCode == 0:
		res.Status = sdk.StatusSucceeded
		res.Message = "ok: " + summary(report)
	default:
		res.Status = sdk.StatusFailed
		res.Message = fmt.Sprintf("FAIL (exit code %d): %s", res.ExitCode, summary(report))
	}
	if res.Status != sdk.StatusSucceeded {
		res.Output = failureOutput(report, buildOutput, stderr, total)
	}
	return res, nil
}

// summary is a one-line count of tests and packages.
func summary(report Report) string {
	failedPackages := 0
	for _, p := range report.Packages {
		if p.Action == "fail" {
			failedPackages++
		}
	}
	c := report.Counts
	return fmt.Sprintf("%d passed, %d failed, %d skipped; %d of %d packages failed",
		c.Pass, c.Fail, c.Skip, failedPackages, len(report.Packages))
}

// failureOutput gathers go test's stderr, the build output and the output of
// failed packages and tests into one text of at most limit bytes, cut at the
// end.
func failureOutput(report Report, buildOutput, stderr []byte, limit int) []byte {
	var b bytes.Buffer
	if len(stderr) > 0 {
		b.Write(stderr)
		b.WriteByte('\n')
	}
	if len(buildOutput) > 0 {
		b.Write(buildOutput)
		b.WriteByte('\n')
	}
	for _, p := range report.Packages {
		if p.Output != "" {
			fmt.Fprintf(&b, "=== package %s %s\n%s\n", p.Package, p.Action, p.Output)
		}
	}
	for _, t := range report.Tests {
		if t.Output != "" {
			fmt.Fprintf(&b, "=== %s %s %s\n%s\n", t.Package, t.Test, t.Action, t.Output)
		}
	}
	out := b.Bytes()
	if len(out) > limit {
		marker := []byte("\n[output cut at the task's limit]\n")
		out = append(out[:max(0, limit-len(marker))], marker...)
	}
	return out
}
