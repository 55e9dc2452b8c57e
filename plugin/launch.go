package plugin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dtf-io/dtf/plugin/pb"
)

// DefaultStartTimeout bounds the start of a plugin when LaunchConfig leaves
// StartTimeout zero: a Go plugin binary prints its address within
// milliseconds, so ten seconds only runs out for a hung or wrong binary.
const DefaultStartTimeout = 10 * time.Second

// Errors that Launch wraps, for callers that test the cause with errors.Is.
var (
	ErrPluginNotFound      = errors.New("plugin binary not found")
	ErrPluginNotExecutable = errors.New("plugin binary not executable")
	ErrNotPlugin           = errors.New("not a dtf plugin")
	ErrChecksumMismatch    = errors.New("plugin binary checksum mismatch")
	ErrStartTimeout        = errors.New("plugin start timed out")
	ErrNoSharedAPIVersion  = errors.New("no plugin API version in common")
)

// LaunchConfig describes one plugin process to start.
type LaunchConfig struct {
	// Name is the plugin block's label in worker.hcl. It names the plugin in
	// errors and is the logger name under which the plugin's log is relayed.
	Name string
	// Kind is KindExecutor, KindConnector or KindMetrics.
	Kind string
	// Path is the plugin binary, absolute or relative to the working
	// directory.
	Path string
	// Args are passed to the binary after its path.
	Args []string
	// Env is the plugin's whole environment as "NAME=value" entries. The
	// host's own environment is not inherited, so a secret in it reaches a
	// plugin only when the config names it.
	Env []string
	// SHA256 is the expected hex SHA-256 of the binary; empty skips the check.
	SHA256 string
	// StartTimeout bounds the time until the plugin reports its address;
	// zero means DefaultStartTimeout.
	StartTimeout time.Duration
	// Logger receives go-plugin's lifecycle messages and the plugin's own
	// log. Nil discards both.
	Logger hclog.Logger
}

// Client is a running plugin process and the gRPC client of its service.
// A Client cannot be restarted: after the process exits, Launch a new one.
type Client struct {
	name      string
	kind      string
	raw       *goplugin.Client
	cmd       *exec.Cmd
	logger    hclog.Logger
	executor  pb.ExecutorClient
	connector pb.ConnectorClient
	metrics   pb.MetricsClient
	info      *pb.PluginInfo
}

// Launch starts the plugin binary of cfg through go-plugin, negotiates the
// API version and connects to it over gRPC with mutual TLS. It also calls
// the plugin's Info method, so a binary of the wrong kind fails here and not
// on first use. The plugin process ends with Kill, and on Linux also when
// the host dies.
func Launch(ctx context.Context, cfg LaunchConfig) (*Client, error) {
	versions, err := VersionedPlugins(cfg.Kind)
	if err != nil {
		return nil, fmt.Errorf("launch plugin %s: %w", cfg.Name, err)
	}
	if err := checkBinary(cfg.Path); err != nil {
		return nil, err
	}
	secure, err := secureConfig(cfg)
	if err != nil {
		return nil, err
	}
	timeout := cfg.StartTimeout
	if timeout <= 0 {
		timeout = DefaultStartTimeout
	}
	logger := cfg.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}

	cmd := exec.Command(cfg.Path, cfg.Args...)
	cmd.Env = append([]string{}, cfg.Env...)
	cmd.SysProcAttr = sysProcAttr()

	raw := goplugin.NewClient(&goplugin.ClientConfig{
		HandshakeConfig:  Handshake,
		VersionedPlugins: versions,
		Cmd:              cmd,
		AllowedProtocols: []goplugin.Protocol{goplugin.ProtocolGRPC},
		AutoMTLS:         true,
		SkipHostEnv:      true,
		SecureConfig:     secure,
		StartTimeout:     timeout,
		Logger:           relayLogger{logger},
		Stderr:           io.Discard,
		GRPCDialOptions: []grpc.DialOption{
			grpc.WithDefaultCallOptions(
				grpc.MaxCallRecvMsgSize(MaxMessageBytes),
				grpc.MaxCallSendMsgSize(MaxMessageBytes),
			),
		},
	})
	client := &Client{name: cfg.Name, kind: cfg.Kind, raw: raw, cmd: cmd, logger: logger}
	if err := client.connect(ctx, cfg, timeout); err != nil {
		// go-plugin's Kill waits until the plugin's stdout and stderr
		// close, and a child process that the plugin started, such as a
		// script's background command, keeps them open. Its whole
		// process group is killed first, so a failed launch ends within
		// the start timeout.
		client.killGroup()
		raw.Kill()
		return nil, err
	}
	// The path shows which binary runs when several builds of a plugin
	// report the same version.
	logger.Info("plugin process started", "path", cfg.Path, "pid", client.Pid(),
		"api_version", client.APIVersion(), "version", client.info.GetVersion())
	return client, nil
}

// connect starts the process, dispenses the service client and checks that
// the binary serves the expected kind.
func (c *Client) connect(ctx context.Context, cfg LaunchConfig, timeout time.Duration) error {
	protocol, err := c.raw.Client()
	if err != nil {
		return startError(cfg, timeout, err)
	}
	dispensed, err := protocol.Dispense(cfg.Kind)
	if err != nil {
		return fmt.Errorf("%w: %s: dispense %s: %v", ErrNotPlugin, cfg.Path, cfg.Kind, err)
	}

	infoCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	switch client := dispensed.(type) {
	case pb.ExecutorClient:
		c.executor = client
		c.info, err = client.Info(infoCtx, &pb.Empty{})
	case pb.ConnectorClient:
		c.connector = client
		c.info, err = client.Info(infoCtx, &pb.Empty{})
	case pb.MetricsClient:
		c.metrics = client
		c.info, err = client.Info(infoCtx, &pb.Empty{})
	default:
		return fmt.Errorf("launch plugin %s: unexpected client type %T", cfg.Name, dispensed)
	}
	if status.Code(err) == codes.Unimplemented {
		return fmt.Errorf("%w: %s does not serve the %s service; "+
			"check kind of plugin %q in worker.hcl", ErrNotPlugin, cfg.Path, cfg.Kind, cfg.Name)
	}
	if err != nil {
		return fmt.Errorf("info of plugin %s (%s): %w", cfg.Name, cfg.Path, err)
	}
	return nil
}

// startError turns go-plugin's start errors into messages that name the
// binary and the likely fix.
func startError(cfg LaunchConfig, timeout time.Duration, err error) error {
	msg := err.Error()
	switch {
	case errors.Is(err, goplugin.ErrChecksumsDoNotMatch):
		// Launch compared the sums already, so the file changed in between.
		return fmt.Errorf("%w for %s (%s): the file changed during launch; retry or rebuild it",
			ErrChecksumMismatch, cfg.Name, cfg.Path)
	case strings.Contains(msg, "timeout while waiting for plugin to start"):
		return fmt.Errorf("%w: plugin %s (%s) did not report its address within %s; "+
			"check its log or raise start_timeout in worker.hcl", ErrStartTimeout, cfg.Name, cfg.Path, timeout)
	case strings.Contains(msg, "plugin exited before we could connect"):
		return fmt.Errorf("%w: %s exited before it reported its address; "+
			"point path of plugin %q in worker.hcl at a dtf plugin binary, "+
			"or check the plugin's log if it is one", ErrNotPlugin, cfg.Path, cfg.Name)
	case strings.Contains(msg, unrecognizedPrefix):
		return fmt.Errorf("%w: %s %s", ErrNotPlugin, cfg.Path, describeHandshakeLine(msg, cfg.Name))
	case strings.Contains(msg, "incompatible API version with plugin"):
		return apiVersionError(cfg, err)
	case strings.Contains(msg, "incompatible core API version"),
		strings.Contains(msg, "unsupported plugin protocol"):
		first, _, _ := strings.Cut(msg, "\n")
		return fmt.Errorf("%w: %s: %s; rebuild the plugin against this dtf version",
			ErrNotPlugin, cfg.Path, first)
	default:
		return fmt.Errorf("start plugin %s (%s): %w", cfg.Name, cfg.Path, err)
	}
}

// apiVersionError names both sides' plugin API versions when the host and
// the plugin have none in common. go-plugin (v1.8.0) reports the version
// that the plugin fell back to, its lowest, as "Plugin version: N".
func apiVersionError(cfg LaunchConfig, err error) error {
	served := "an API version"
	if _, rest, ok := strings.Cut(err.Error(), "Plugin version: "); ok {
		number, _, _ := strings.Cut(rest, ",")
		served = "API version " + strings.TrimSpace(number)
	}
	offered := make([]string, 0, 2)
	for _, v := range APIVersions(cfg.Kind) {
		offered = append(offered, strconv.Itoa(v))
	}
	return fmt.Errorf("%w: plugin %s (%s) serves %s plugin %s, and this host supports %s plugin API "+
		"versions %s; rebuild the plugin against this dtf version or point path in worker.hcl at a "+
		"matching build: %w", ErrNoSharedAPIVersion, cfg.Name, cfg.Path, cfg.Kind, served, cfg.Kind,
		strings.Join(offered, ", "), err)
}

// unrecognizedPrefix starts go-plugin's (v1.8.0) error for a first stdout
// line that is not a handshake.
const unrecognizedPrefix = "Unrecognized remote plugin message: "

// describeHandshakeLine describes what the binary printed in place of
// go-plugin's handshake line, from go-plugin's error text, and the fix for
// the plugin block name. go-plugin reads only the first line, so a dtf
// plugin that prints anything before it serves fails the same way as a
// binary that is no plugin at all, and the message names both causes.
func describeHandshakeLine(msg, name string) string {
	_, line, _ := strings.Cut(msg, unrecognizedPrefix)
	line, _, _ = strings.Cut(line, "\n")
	if line == "" {
		return fmt.Sprintf("printed nothing on stdout and exited, so it did not serve the go-plugin "+
			"handshake; point path of plugin %q in worker.hcl at a dtf plugin binary, "+
			"or check the plugin's log if it is one", name)
	}
	const maxShown = 80
	if len(line) > maxShown {
		line = line[:maxShown] + "..."
	}
	return fmt.Sprintf("wrote %q to stdout before the go-plugin handshake line; a dtf plugin must not "+
		"write to stdout before it serves, so remove that print or send it to stderr, and if the binary "+
		"is not a dtf plugin, point path of plugin %q in worker.hcl at one", line, name)
}

// checkBinary rejects a path that cannot be a plugin binary before go-plugin
// tries to start it, because exec's own errors do not say what to change.
func checkBinary(path string) error {
	info, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%w: plugin binary %s not found; build it with make build, put it back, or fix "+
			"the plugin's path, or plugin_dir for a block without path, in the worker config",
			ErrPluginNotFound, path)
	}
	if err != nil {
		return fmt.Errorf("stat plugin binary %s: %w", path, err)
	}
	if info.IsDir() {
		return fmt.Errorf("%w: plugin path %s is a directory; point path in worker.hcl at the plugin binary",
			ErrPluginNotExecutable, path)
	}
	if info.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%w: plugin binary %s is not executable (mode %s); run chmod +x on it or rebuild it with make build",
			ErrPluginNotExecutable, path, info.Mode().Perm())
	}
	return nil
}

// secureConfig returns a fresh go-plugin SecureConfig for one launch, or nil
// when no checksum is configured. A fresh one is needed per launch because
// SecureConfig.Check writes the file into its hash.Hash without resetting it.
// The sums are also compared here so that the error shows both of them.
func secureConfig(cfg LaunchConfig) (*goplugin.SecureConfig, error) {
	if cfg.SHA256 == "" {
		return nil, nil
	}
	want, err := hex.DecodeString(strings.TrimSpace(cfg.SHA256))
	if err != nil || len(want) != sha256.Size {
		return nil, fmt.Errorf("invalid sha256 %q for plugin %s: expected 64 hex digits", cfg.SHA256, cfg.Name)
	}
	got, err := fileSHA256(cfg.Path)
	if err != nil {
		return nil, err
	}
	if !strings.EqualFold(hex.EncodeToString(want), got) {
		return nil, fmt.Errorf("%w for %s (%s): expected %s, got %s; rebuild it or update sha256 in worker.hcl",
			ErrChecksumMismatch, cfg.Name, cfg.Path, hex.EncodeToString(want), got)
	}
	return &goplugin.SecureConfig{Checksum: want, Hash: sha256.New()}, nil
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("open plugin binary %s: %w", path, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read plugin binary %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Name returns the plugin's name from LaunchConfig.
func (c *Client) Name() string { return c.name }

// Kind returns the plugin's kind from LaunchConfig.
func (c *Client) Kind() string { return c.kind }

// Info returns what the plugin reported about itself at launch.
func (c *Client) Info() *pb.PluginInfo { return c.info }

// APIVersion returns the plugin API version that the host and the plugin
// negotiated at launch.
func (c *Client) APIVersion() int { return c.raw.NegotiatedVersion() }

// Executor returns the executor service client, or nil for another kind.
func (c *Client) Executor() pb.ExecutorClient { return c.executor }

// Connector returns the connector service client, or nil for another kind.
func (c *Client) Connector() pb.ConnectorClient { return c.connector }

// Metrics returns the metrics service client, or nil for another kind.
func (c *Client) Metrics() pb.MetricsClient { return c.metrics }

// Pid returns the plugin's process id, or 0 before it started.
func (c *Client) Pid() int {
	if rc := c.raw.ReattachConfig(); rc != nil {
		return rc.Pid
	}
	return 0
}

// Exited reports whether the plugin process has exited.
func (c *Client) Exited() bool { return c.raw.Exited() }

// ExitStatus describes how the plugin process ended, such as "exit status 2"
// or "signal: killed", and returns "" while it runs. go-plugin (v1.8.0) sets
// its exited flag under a lock after cmd.Wait returned, so once Exited
// reports true the process state is complete and safe to read.
func (c *Client) ExitStatus() string {
	if !c.raw.Exited() {
		return ""
	}
	if c.cmd.ProcessState == nil {
		return "exited"
	}
	return c.cmd.ProcessState.String()
}

// killGroupAfter is how long Kill waits for go-plugin's own Kill, which
// asks the plugin to shut down and kills it after two seconds (a go-plugin
// v1.8.0 constant), before it kills the plugin's whole process group.
const killGroupAfter = 3 * time.Second

// Kill requests a graceful shutdown of the plugin and kills it if it still
// runs after two seconds. It returns once the process has exited and its
// stdout and stderr have closed. When that takes longer than
// killGroupAfter, because a child process keeps them open, Kill kills the
// plugin's process group. It is safe to call more than once.
func (c *Client) Kill() {
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.raw.Kill()
	}()
	timer := time.NewTimer(killGroupAfter)
	defer timer.Stop()
	select {
	case <-done:
		return
	case <-timer.C:
	}
	c.killGroup()
	<-done
}

// killGroup kills the process group of the plugin process unless go-plugin
// has reaped it. Until the reap the plugin's pid cannot be reused, so the
// signal reaches only the plugin's own group.
func (c *Client) killGroup() {
	if c.cmd.Process == nil || c.raw.Exited() {
		return
	}
	if err := killProcessGroup(c.cmd.Process.Pid); err != nil {
		c.logger.Warn("kill of the plugin's process group failed", "plugin", c.name,
			"pid", c.cmd.Process.Pid, "error", err)
	}
}

// relayLogger keeps go-plugin from renaming the logger after the binary's
// file name, so that a plugin's relayed log appears under the name that the
// caller gave the logger (the plugin block's label).
type relayLogger struct {
	hclog.Logger
}

func (l relayLogger) Named(string) hclog.Logger { return l }

func (l relayLogger) ResetNamed(string) hclog.Logger { return l }
