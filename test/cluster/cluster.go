// Package cluster starts real dtf processes for end-to-end tests and the
// demo: a coordinator and workers, each a separate `dtf` process with its
// own config file and log file, with plugins launched through go-plugin as
// in production. Everything listens on 127.0.0.1.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/dtf-io/dtf/coordinator/api"
)

// Binaries names the dtf binaries in one folder.
type Binaries struct {
	Dir string
}

// Path returns the absolute path of a binary in the folder.
func (b Binaries) Path(name string) string {
	return filepath.Join(b.Dir, name)
}

// binaryPackages maps each binary to the package it is built from.
var binaryPackages = map[string]string{
	"dtf":                 "./cmd/dtf",
	"dtf-worker":          "./cmd/dtf-worker",
	"dtf-reconnection":    "./plugins/reconnection",
	"dtf-metrics":         "./plugins/metrics",
	"dtf-exec-command":    "./examples/command",
	"dtf-exec-gotest":     "./examples/gotest",
	"dtf-exec-checkpoint": "./examples/checkpoint",
}

// Build compiles the named dtf binaries, or every one when names is empty,
// from the module at repo into dir.
func Build(ctx context.Context, repo, dir string, names ...string) (Binaries, error) {
	if len(names) == 0 {
		names = slices.Sorted(maps.Keys(binaryPackages))
	}
	for _, name := range names {
		pkg, ok := binaryPackages[name]
		if !ok {
			return Binaries{}, fmt.Errorf("build %s: unknown binary name, expected one of %s", name,
				strings.Join(slices.Sorted(maps.Keys(binaryPackages)), ", "))
		}
		cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(dir, name), pkg)
		cmd.Dir = repo
		if out, err := cmd.CombinedOutput(); err != nil {
			return Binaries{}, fmt.Errorf("build %s: %w\n%s", pkg, err, out)
		}
	}
	abs, err := filepath.Abs(dir)
	return Binaries{Dir: abs}, err
}

// BuildTemp builds the named dtf binaries, or every one when names is
// empty, into a new temporary folder whose name starts with prefix. It
// builds from the module that contains the working directory, within
// timeout. The returned function removes the folder.
func BuildTemp(prefix string, timeout time.Duration, names ...string) (Binaries, func(), error) {
	repo, err := RepoRoot()
	if err != nil {
		return Binaries{}, nil, err
	}
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return Binaries{}, nil, err
	}
	remove := func() { _ = os.RemoveAll(dir) }
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	bin, err := Build(ctx, repo, dir, names...)
	if err != nil {
		remove()
		return Binaries{}, nil, err
	}
	return bin, remove, nil
}

// RepoRoot returns the folder of the go.mod that contains the working
// directory.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// FreeAddr returns a 127.0.0.1 address with a port that was free a moment
// ago. Another process can take it in between, which tests accept.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// Process is one running dtf process.
type Process struct {
	Name    string
	LogPath string
	cmd     *exec.Cmd
	done    chan struct{}
	err     error
}

// Start runs a binary with args, its stdout and stderr appended to logPath.
// The environment is the caller's plus extra.
func Start(name, logPath, binary string, args []string, extra ...string) (*Process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(binary, args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.Env = append(os.Environ(), extra...)
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Process{Name: name, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	return p, nil
}

// Pid returns the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Stop sends SIGTERM and waits up to timeout, then kills the process.
func (p *Process) Stop(timeout time.Duration) error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not stop within %s after SIGTERM and was killed", p.Name, timeout)
	}
}

// Signal sends sig to the process without waiting.
func (p *Process) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Kill sends SIGKILL and waits for the process to exit.
func (p *Process) Kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Log returns the process's log so far.
func (p *Process) Log() string {
	data, _ := os.ReadFile(p.LogPath)
	return string(data)
}

// CoordinatorConfig is what the coordinator config file of a test sets.
type CoordinatorConfig struct {
	Listen            string
	DataDir           string
	Token             string
	HeartbeatInterval time.Duration
	HeartbeatTimeout  time.Duration
	ReassignAfter     time.Duration
	// SessionTTL is written only when it is not zero.
	SessionTTL time.Duration
	// TaskTypes defaults to command and gotest.
	TaskTypes []string
	// Extra is HCL appended to the file as is, such as a tls or an api
	// block.
	Extra string
	// LogLevel defaults to debug; trace also logs every task frame.
	LogLevel string
}

// WriteCoordinatorConfig writes an HCL coordinator config to path.
func WriteCoordinatorConfig(path string, c CoordinatorConfig) error {
	if len(c.TaskTypes) == 0 {
		c.TaskTypes = []string{"command", "gotest"}
	}
	if c.LogLevel == "" {
		c.LogLevel = "debug"
	}
	text := fmt.Sprintf(`listen     = %q
data_dir   = %q
log_level  = %q
task_types = [%s]

workers {
  token              = %q
  heartbeat_interval = %q
  heartbeat_timeout  = %q
  reassign_after     = %q
%s}
`, c.Listen, c.DataDir, c.LogLevel, quoteList(c.TaskTypes), c.Token, c.HeartbeatInterval, c.HeartbeatTimeout, c.ReassignAfter,
		sessionTTLLine(c.SessionTTL))
	return os.WriteFile(path, []byte(text+c.Extra), 0o644)
}

func sessionTTLLine(ttl time.Duration) string {
	if ttl == 0 {
		return ""
	}
	return fmt.Sprintf("  session_ttl        = %q\n", ttl)
}

// WorkerConfig is what the worker config file of a test sets.
type WorkerConfig struct {
	Bin               Binaries
	URL               string
	WorkerID          string
	Token             string
	DataDir           string
	Slots             int
	HeartbeatInterval time.Duration
	HeartbeatTimeout  time.Duration
	BackoffBase       time.Duration
	BackoffCap        time.Duration
	HealthyAfter      time.Duration
	// Reconnection holds more attributes of the reconnection plugin's
	// config block, as HCL expressions such as `"2s"` or `8`.
	Reconnection map[string]string
	// Top holds more top-level attributes, as HCL expressions such as
	// `"5s"`, for example drain_timeout or restart_backoff_base.
	Top map[string]string
	// Checkpoint adds the example checkpoint executor, which serves the
	// task type "checkpoint".
	Checkpoint bool
	// SecretFile, when set, makes the worker log in with the credential in
	// that file (see CreateCredential) instead of the shared token.
	SecretFile string
	// SecretEnv, when set, makes the worker read its credential's secret
	// from this environment variable of the worker process instead.
	SecretEnv string
	// CAFile, when set, is the coordinator block's ca_file: the PEM CA
	// that a wss:// coordinator's certificate must chain to.
	CAFile string
	// Metrics, when set, adds the metrics plugin dtf-metrics.
	Metrics *MetricsPlugin
	// ReconnectionPath, when set, replaces the path of the reconnection
	// plugin binary, and ReconnectionSHA256 adds its sha256.
	ReconnectionPath   string
	ReconnectionSHA256 string
}

// MetricsPlugin is the metrics plugin block of a test worker.
type MetricsPlugin struct {
	// Listen is the address of the plugin's Prometheus endpoint. When it
	// is empty, WriteWorkerConfig sets it to a free 127.0.0.1 port.
	Listen string
	// SummaryInterval is the plugin's summary_interval; zero keeps the
	// plugin's default.
	SummaryInterval time.Duration
}

// URL returns the plugin's Prometheus endpoint.
func (m *MetricsPlugin) URL() string {
	return "http://" + m.Listen + "/metrics"
}

// block returns the plugin block, choosing a free port for an empty
// Listen first.
func (m *MetricsPlugin) block(bin Binaries) (string, error) {
	if m.Listen == "" {
		addr, err := FreeAddr()
		if err != nil {
			return "", err
		}
		m.Listen = addr
	}
	interval := ""
	if m.SummaryInterval > 0 {
		interval = fmt.Sprintf("    summary_interval = %q\n", m.SummaryInterval)
	}
	return fmt.Sprintf("\nplugin \"metrics\" {\n  kind = \"metrics\"\n  path = %q\n  config {\n"+
		"    listen = %q\n%s  }\n}\n", bin.Path("dtf-metrics"), m.Listen, interval), nil
}

// WriteWorkerConfig writes an HCL worker config to path. With c.Metrics
// set, it fills in c.Metrics.Listen when that is empty.
func WriteWorkerConfig(path string, c WorkerConfig) error {
	text := fmt.Sprintf(`data_dir  = %q
slots     = %d
log_level = "debug"
%s
coordinator {
  url       = %q
  worker_id = %q
%s}

plugin "reconnection" {
  kind = "connector"
  path = %q
%s  config {
    heartbeat_interval = %q
    heartbeat_timeout  = %q
    backoff_base       = %q
    backoff_multiplier = 2
    backoff_cap        = %q
    healthy_after      = %q
%s  }
}

plugin "command" {
  kind = "executor"
  path = %q
  env  = ["PATH", "HOME"]
}

plugin "gotest" {
  kind = "executor"
  path = %q
  env  = [%s]
}
`, c.DataDir, c.Slots, attributeLines(c.Top, ""), c.URL, c.WorkerID, credentialLine(c), reconnectionPath(c),
		reconnectionChecksum(c), c.HeartbeatInterval, c.HeartbeatTimeout, c.BackoffBase, c.BackoffCap, c.HealthyAfter,
		attributeLines(c.Reconnection, "    "),
		c.Bin.Path("dtf-exec-command"), c.Bin.Path("dtf-exec-gotest"), quoteList(GoEnv))
	if c.Checkpoint {
		text += fmt.Sprintf("\nplugin \"checkpoint\" {\n  kind = \"executor\"\n  path = %q\n}\n",
			c.Bin.Path("dtf-exec-checkpoint"))
	}
	if c.Metrics != nil {
		block, err := c.Metrics.block(c.Bin)
		if err != nil {
			return err
		}
		text += block
	}
	return os.WriteFile(path, []byte(text), 0o644)
}

func reconnectionPath(c WorkerConfig) string {
	if c.ReconnectionPath != "" {
		return c.ReconnectionPath
	}
	return c.Bin.Path("dtf-reconnection")
}

func reconnectionChecksum(c WorkerConfig) string {
	if c.ReconnectionSHA256 == "" {
		return ""
	}
	return fmt.Sprintf("  sha256 = %q\n", c.ReconnectionSHA256)
}

// credentialLine returns the coordinator block's lines with the ca_file,
// if any, and the worker's secret file, or the shared token when it has
// none.
func credentialLine(c WorkerConfig) string {
	if c.CAFile != "" {
		line := fmt.Sprintf("  ca_file   = %q\n", c.CAFile)
		c.CAFile = ""
		return line + credentialLine(c)
	}
	if c.SecretFile != "" {
		return fmt.Sprintf("  secret_file = %q\n", c.SecretFile)
	}
	if c.SecretEnv != "" {
		return fmt.Sprintf("  secret = env(%q)\n", c.SecretEnv)
	}
	return fmt.Sprintf("  token     = %q\n", c.Token)
}

// CreateCredential runs `dtf credentials create` against the store of the
// coordinator config at coordConfig and writes the new secret of workerID
// to secretFile.
func CreateCredential(ctx context.Context, bin Binaries, coordConfig, workerID, secretFile string) error {
	return runCredentials(ctx, bin, "create", "-config", coordConfig, "-worker", workerID, "-secret-file", secretFile)
}

// RevokeCredentials runs `dtf credentials revoke` for every credential of
// workerID.
func RevokeCredentials(ctx context.Context, bin Binaries, coordConfig, workerID string) error {
	return runCredentials(ctx, bin, "revoke", "-config", coordConfig, "-worker", workerID)
}

func runCredentials(ctx context.Context, bin Binaries, args ...string) error {
	cmd := exec.CommandContext(ctx, bin.Path("dtf"), append([]string{"credentials"}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("dtf credentials %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// attributeLines writes each attribute on a line of its own, in key order.
func attributeLines(attributes map[string]string, indent string) string {
	var b strings.Builder
	for _, key := range slices.Sorted(maps.Keys(attributes)) {
		fmt.Fprintf(&b, "%s%s = %s\n", indent, key, attributes[key])
	}
	return b.String()
}

// GoEnv lists the environment variables that a gotest executor needs to
// find the Go toolchain and its caches.
var GoEnv = []string{"PATH", "HOME", "GOPATH", "GOCACHE", "GOMODCACHE", "GOFLAGS", "GOTOOLCHAIN", "GOPROXY"}

func quoteList(items []string) string {
	quoted := make([]string, len(items))
	for i, item := range items {
		quoted[i] = fmt.Sprintf("%q", item)
	}
	return strings.Join(quoted, ", ")
}

// WaitHealthy polls the coordinator's /healthz until it returns 200, timeout
// passes or ctx ends.
func WaitHealthy(ctx context.Context, timeout time.Duration, baseURL string) error {
	return Poll(ctx, timeout, 50*time.Millisecond, func() (bool, error) {
		resp, err := http.Get(baseURL + "/healthz")
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
}

// Poll calls check every interval until it returns true, returns an error,
// timeout passes (zero means no limit of its own) or ctx ends.
func Poll(ctx context.Context, timeout, interval time.Duration, check func() (bool, error)) error {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		ok, err := check()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("condition not met: %w", ctx.Err())
		case <-ticker.C:
		}
	}
}

// ConnectedWorkers returns the ids of the workers that the coordinator
// lists as connected.
func ConnectedWorkers(workers []api.Worker) map[string]bool {
	connected := map[string]bool{}
	for _, w := range workers {
		if w.Connected {
			connected[w.ID] = true
		}
	}
	return connected
}

// ProcessesIn returns the pids of running processes whose executable lives
// in dir, such as plugin binaries left behind by a killed host. The calling
// process is not counted.
func ProcessesIn(dir string) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, entry := range entries {
		var pid int
		if _, err := fmt.Sscanf(entry.Name(), "%d", &pid); err != nil || pid == os.Getpid() {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", entry.Name(), "exe"))
		if err != nil {
			continue
		}
		if filepath.Dir(exe) == dir {
			pids = append(pids, pid)
		}
	}
	return pids
}

// ChildrenOf returns the pids of the running processes whose parent is pid.
func ChildrenOf(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var children []int
	for _, entry := range entries {
		var child int
		if _, err := fmt.Sscanf(entry.Name(), "%d", &child); err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", entry.Name(), "stat"))
		if err != nil {
			continue
		}
		// The command name in parentheses may contain spaces; the fields
		// after its closing parenthesis are state, then parent pid.
		fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(fields) > 1 && fields[1] == fmt.Sprint(pid) {
			children = append(children, child)
		}
	}
	return children
}

// ChildNamed returns the pid of a running child of pid whose executable
// file is named name, such as the dtf-exec-command plugin of a worker host,
// or 0 when there is none.
func ChildNamed(pid int, name string) int {
	for _, child := range ChildrenOf(pid) {
		exe, err := os.Readlink(filepath.Join("/proc", fmt.Sprint(child), "exe"))
		if err == nil && filepath.Base(exe) == name {
			return child
		}
	}
	return 0
}

// Alive reports which of pids still run.
func Alive(pids []int) []int {
	var alive []int
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); err == nil {
			alive = append(alive, pid)
		}
	}
	return alive
}
