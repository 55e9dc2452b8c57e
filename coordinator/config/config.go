// Package config loads the coordinator's HCL configuration: where it listens,
// where it keeps its store, which task types it accepts and how it treats
// worker sessions (credentials, heartbeats, the grace period before a lost
// worker's tasks are reassigned).
package config

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclparse"

	"github.com/dtf-io/dtf/internal/hclutil"
	"github.com/dtf-io/dtf/protocol"
)

// Defaults of optional settings.
const (
	DefaultListen            = "127.0.0.1:7070"
	DefaultDataDir           = "data"
	DefaultLogLevel          = "info"
	DefaultMaxAttempts       = 3
	DefaultShutdownTimeout   = 10 * time.Second
	DefaultScheduleInterval  = time.Second
	DefaultHeartbeatInterval = 2 * time.Second
	DefaultHeartbeatTimeout  = 6 * time.Second
	DefaultReassignAfter     = 30 * time.Second
	DefaultHandshakeTimeout  = 10 * time.Second
	DefaultSendQueue         = 256
	DefaultMaxFrameBytes     = protocol.DefaultMaxFrameBytes
	DefaultMaxBodyBytes      = 4 << 20
	DefaultReplayFrames      = protocol.DefaultReplayFrames
	DefaultReplayBytes       = protocol.DefaultReplayBytes
	DefaultSessionTTL        = 60 * time.Second
	// DefaultRetryBackoffBase and DefaultRetryBackoffMax space the attempts
	// of a failing task, with delays of at most 1s, 2s, 4s and so on up to
	// 5m, so a task that crashes its executor does not cycle through the
	// fleet.
	DefaultRetryBackoffBase = time.Second
	DefaultRetryBackoffMax  = 5 * time.Minute
	// DefaultTaskTimeoutGrace is how long past its task's timeout the
	// coordinator lets an attempt run before it ends the attempt itself.
	// The worker enforces the timeout first; the grace leaves it time to
	// kill the task's processes and deliver the outcome.
	DefaultTaskTimeoutGrace = 30 * time.Second
	// DefaultMaxSessionsPerSecond and DefaultSessionBurst let a fleet of a
	// thousand workers reconnect at once after a coordinator restart, and
	// spread a larger fleet over a few seconds.
	DefaultMaxSessionsPerSecond = 500
	DefaultSessionBurst         = 1000
	DefaultMaxPendingHandshakes = 1024
	// DefaultConnectionsPerSecondPerAddress and
	// DefaultConnectionBurstPerAddress let one address hold at most about
	// 300 pending handshakes within the default handshake_timeout (a burst
	// of 100 plus 20 per second for 10s), under a third of
	// max_pending_handshakes. A thousand workers behind one NAT address
	// reconnect within about 45 seconds.
	DefaultConnectionsPerSecondPerAddress = 20
	DefaultConnectionBurstPerAddress      = 100
)

// DefaultTaskTypes are the task types of the executors shipped with dtf.
var DefaultTaskTypes = []string{"command", "gotest"}

// taskTypePattern is the form of a task type name. Names appear in URLs,
// metrics labels and worker files, so they stay plain.
var taskTypePattern = regexp.MustCompile(`^[a-z0-9_-]+$`)

// Config is a loaded and validated coordinator configuration. DataDir is
// absolute.
type Config struct {
	// File is the absolute path of the loaded file; empty when the Config
	// was built in code.
	File string
	// Listen is the host:port of the one listener that serves the worker
	// WebSocket endpoint, the HTTP API and /healthz. Default
	// "127.0.0.1:7070", so a fresh install is not reachable from the network.
	Listen string
	// Insecure waives TLS on a listener that is not a loopback address.
	// Default false. A non-loopback Listen requires TLS or Insecure, which
	// states that the operator accepts that tokens and payloads cross the
	// network in clear.
	Insecure bool
	// TLS is the listener's certificate; with it the listener serves https
	// and wss only.
	TLS TLS
	// API holds the authentication of the HTTP API.
	API API
	// DataDir contains the SQLite store.
	DataDir string
	// LogLevel is one of trace, debug, info, warn, error.
	LogLevel string
	// TaskTypes are the task types that submissions may use.
	TaskTypes []string
	// MaxAttempts is how often a task is handed out before it fails, unless
	// the submission sets its own.
	MaxAttempts int
	// RetryBackoffBase and RetryBackoffMax bound the delay before a failed
	// attempt's task is handed out again: the delay doubles with each
	// failed attempt from the base up to the max, and a random half of it
	// is jitter. Defaults 1s and 5m; a base of 0 retries at once.
	RetryBackoffBase time.Duration
	RetryBackoffMax  time.Duration
	// TaskTimeoutGrace is how long an attempt may run past its task's
	// timeout before the coordinator ends it as timed out and sends its
	// worker a CancelTask. Default 30s.
	TaskTimeoutGrace time.Duration
	// ShutdownTimeout bounds the graceful shutdown after Run's context ends.
	ShutdownTimeout time.Duration
	// MaxBodyBytes bounds the body of one HTTP API request, in bytes.
	// Default 4 MiB, which fits a submission of thousands of tasks while a
	// client cannot make the coordinator buffer without bound.
	MaxBodyBytes int
	// HTTPReadHeaderTimeout, HTTPReadTimeout and HTTPIdleTimeout bound the
	// HTTP server's wait for a request's headers, for the whole request,
	// and for the next request on a keep-alive connection. Defaults 10s,
	// 1m and 2m.
	HTTPReadHeaderTimeout time.Duration
	HTTPReadTimeout       time.Duration
	HTTPIdleTimeout       time.Duration
	// ScheduleInterval is the period of the scheduler's tick, which assigns
	// tasks and requeues the attempts of workers whose grace period ended.
	// Submissions, outcomes and syncs also wake the scheduler at once.
	ScheduleInterval time.Duration
	Workers          Workers
}

// Workers holds the settings of worker sessions.
type Workers struct {
	// Token is the shared secret of the token mode, for workers without a
	// credential of their own: it is compared in Hello, and the session's
	// messages carry no tags. Empty on a loopback listener admits such
	// workers without a check; empty on any other listener rejects them.
	// A worker_id with a credential, even a revoked one, must use SCRAM.
	Token string
	// HeartbeatInterval is the period of the coordinator's heartbeats.
	HeartbeatInterval time.Duration
	// HeartbeatTimeout is how long a session may stay silent before the
	// coordinator closes it.
	HeartbeatTimeout time.Duration
	// ReassignAfter is the grace period a disconnected worker has to come
	// back before its running attempts are requeued.
	ReassignAfter time.Duration
	// HandshakeTimeout bounds the wait for the Hello frame of a new
	// connection.
	HandshakeTimeout time.Duration
	// MaxFrameBytes bounds one received WebSocket message.
	MaxFrameBytes int
	// MaxDecodedBytes bounds a received frame after DEFLATE decompression,
	// so that a small compressed message cannot expand without limit. 0,
	// the default, means MaxFrameBytes. Use DecodedLimit to read it.
	MaxDecodedBytes int
	// SendQueue is the number of unsequenced frames, such as heartbeat
	// replies, queued for one connection; a worker that falls this far
	// behind is disconnected.
	SendQueue int
	// ReplayFrames and ReplayBytes bound each session's buffer of task
	// frames the worker has not acknowledged; defaults 4096 frames and
	// 16 MiB. A session whose buffer fills gets no new assignments.
	ReplayFrames int
	ReplayBytes  int
	// SessionTTL is how long a session outlives its connection so that the
	// worker can resume it; default 60s.
	SessionTTL time.Duration
	// MaxHeartbeatTimeout bounds the heartbeat timeout adapted to a slow
	// link's round-trip time; 0 means four times HeartbeatTimeout.
	MaxHeartbeatTimeout time.Duration
	// MaxSessionsPerSecond and SessionBurst are the rate and the size of
	// the token bucket that admits new and resumed sessions; defaults 500
	// and 1000. A hello over the limit gets CODE_OVERLOADED.
	MaxSessionsPerSecond int
	SessionBurst         int
	// MaxPendingHandshakes bounds the connections upgraded but without a
	// hello yet; over it an upgrade gets HTTP 503. Default 1024.
	MaxPendingHandshakes int
	// ConnectionsPerSecondPerAddress and ConnectionBurstPerAddress are the
	// rate and the size of the token bucket for new WebSocket connections
	// of each remote address, an IPv4 address or an IPv6 /64. Defaults 20
	// and 100. An upgrade over the limit gets HTTP 429 with Retry-After.
	ConnectionsPerSecondPerAddress int
	ConnectionBurstPerAddress      int
	// Compression enables DEFLATE on connections whose worker offers it;
	// default true.
	Compression bool
}

// fileConfig is the HCL schema of the coordinator file. Durations and
// counts are expressions so that a value without a unit or out of range is
// reported at its attribute.
type fileConfig struct {
	Listen           *string        `hcl:"listen,optional"`
	Insecure         *bool          `hcl:"insecure,optional"`
	MaxBodyBytes     hcl.Expression `hcl:"max_body_bytes,optional"`
	DataDir          *string        `hcl:"data_dir,optional"`
	LogLevel         *string        `hcl:"log_level,optional"`
	TaskTypes        *[]string      `hcl:"task_types,optional"`
	MaxAttempts      hcl.Expression `hcl:"max_attempts,optional"`
	RetryBackoffBase hcl.Expression `hcl:"retry_backoff_base,optional"`
	RetryBackoffMax  hcl.Expression `hcl:"retry_backoff_max,optional"`
	TaskTimeoutGrace hcl.Expression `hcl:"task_timeout_grace,optional"`
	ShutdownTimeout  hcl.Expression `hcl:"shutdown_timeout,optional"`
	ScheduleInterval hcl.Expression `hcl:"schedule_interval,optional"`
	Workers          *fileWorkers   `hcl:"workers,block"`
	TLS              *fileTLS       `hcl:"tls,block"`
	API              *fileAPI       `hcl:"api,block"`

	HTTPReadHeaderTimeout hcl.Expression `hcl:"http_read_header_timeout,optional"`
	HTTPReadTimeout       hcl.Expression `hcl:"http_read_timeout,optional"`
	HTTPIdleTimeout       hcl.Expression `hcl:"http_idle_timeout,optional"`
}

type fileWorkers struct {
	Token             *string        `hcl:"token,optional"`
	HeartbeatInterval hcl.Expression `hcl:"heartbeat_interval,optional"`
	HeartbeatTimeout  hcl.Expression `hcl:"heartbeat_timeout,optional"`
	ReassignAfter     hcl.Expression `hcl:"reassign_after,optional"`
	HandshakeTimeout  hcl.Expression `hcl:"handshake_timeout,optional"`
	MaxFrameBytes     hcl.Expression `hcl:"max_frame_bytes,optional"`
	SendQueue         hcl.Expression `hcl:"send_queue,optional"`

	ReplayFrames         hcl.Expression `hcl:"replay_frames,optional"`
	ReplayBytes          hcl.Expression `hcl:"replay_bytes,optional"`
	SessionTTL           hcl.Expression `hcl:"session_ttl,optional"`
	MaxHeartbeatTimeout  hcl.Expression `hcl:"max_heartbeat_timeout,optional"`
	MaxSessionsPerSecond hcl.Expression `hcl:"max_sessions_per_second,optional"`
	SessionBurst         hcl.Expression `hcl:"session_burst,optional"`
	MaxPendingHandshakes hcl.Expression `hcl:"max_pending_handshakes,optional"`
	Compression          *bool          `hcl:"compression,optional"`

	ConnectionsPerSecondPerAddress hcl.Expression `hcl:"connections_per_second_per_address,optional"`
	ConnectionBurstPerAddress      hcl.Expression `hcl:"connection_burst_per_address,optional"`
	MaxDecodedBytes                hcl.Expression `hcl:"max_decoded_bytes,optional"`
}

// Default returns a configuration with every default filled, listening on
// listen and storing in dataDir.
func Default(listen, dataDir string) *Config {
	return &Config{
		Listen:           listen,
		DataDir:          dataDir,
		LogLevel:         DefaultLogLevel,
		TaskTypes:        append([]string(nil), DefaultTaskTypes...),
		MaxAttempts:      DefaultMaxAttempts,
		RetryBackoffBase: DefaultRetryBackoffBase,
		RetryBackoffMax:  DefaultRetryBackoffMax,
		TaskTimeoutGrace: DefaultTaskTimeoutGrace,
		ShutdownTimeout:  DefaultShutdownTimeout,
		ScheduleInterval: DefaultScheduleInterval,
		MaxBodyBytes:     DefaultMaxBodyBytes,

		HTTPReadHeaderTimeout: DefaultHTTPReadHeaderTimeout,
		HTTPReadTimeout:       DefaultHTTPReadTimeout,
		HTTPIdleTimeout:       DefaultHTTPIdleTimeout,

		Workers: Workers{
			HeartbeatInterval: DefaultHeartbeatInterval,
			HeartbeatTimeout:  DefaultHeartbeatTimeout,
			ReassignAfter:     DefaultReassignAfter,
			HandshakeTimeout:  DefaultHandshakeTimeout,
			MaxFrameBytes:     DefaultMaxFrameBytes,
			SendQueue:         DefaultSendQueue,

			ReplayFrames:         DefaultReplayFrames,
			ReplayBytes:          DefaultReplayBytes,
			SessionTTL:           DefaultSessionTTL,
			MaxSessionsPerSecond: DefaultMaxSessionsPerSecond,
			SessionBurst:         DefaultSessionBurst,
			MaxPendingHandshakes: DefaultMaxPendingHandshakes,
			Compression:          true,

			ConnectionsPerSecondPerAddress: DefaultConnectionsPerSecondPerAddress,
			ConnectionBurstPerAddress:      DefaultConnectionBurstPerAddress,
		},
	}
}

// Load reads, decodes and validates the coordinator configuration at path.
// A file with problems returns a *DiagnosticsError that lists each one
// with its file, line, column and source line. A file that does not parse
// or decode reports only those problems. Otherwise the decoding problems
// and those that Validate finds are reported together. A problem of a
// setting that the file leaves out is located at the start of the file.
func Load(path string) (*Config, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("resolve config path %s: %w", path, err)
	}
	src, err := os.ReadFile(abs)
	if err != nil {
		return nil, fmt.Errorf("read coordinator config: %w", err)
	}

	parser := hclparse.NewParser()
	file, diags := parser.ParseHCL(src, abs)
	if diags.HasErrors() {
		return nil, newDiagnosticsError(abs, diags, parser.Files())
	}

	var raw fileConfig
	diags = gohcl.DecodeBody(file.Body, hclutil.EvalContext(), &raw)
	if diags.HasErrors() {
		return nil, newDiagnosticsError(abs, diags, parser.Files())
	}

	// The value checks run even when decoding failed, so that every
	// problem of the file shows at once.
	cfg, diags := raw.resolve(filepath.Dir(abs))
	if err := cfg.Validate(); err != nil {
		diags = append(diags, validationDiagnostics(err, file.Body, diags)...)
	}
	if diags.HasErrors() {
		return nil, newDiagnosticsError(abs, diags, parser.Files())
	}
	cfg.File = abs
	return cfg, nil
}

// resolve fills defaults, parses durations and makes data_dir absolute.
func (raw *fileConfig) resolve(dir string) (*Config, hcl.Diagnostics) {
	cfg := Default(DefaultListen, DefaultDataDir)
	var diags hcl.Diagnostics

	setString(&cfg.Listen, raw.Listen)
	setString(&cfg.DataDir, raw.DataDir)
	setString(&cfg.LogLevel, raw.LogLevel)
	if raw.TaskTypes != nil {
		cfg.TaskTypes = *raw.TaskTypes
	}
	if raw.Insecure != nil {
		cfg.Insecure = *raw.Insecure
	}
	diags = append(diags, decodeCount(raw.MaxAttempts, "max_attempts", &cfg.MaxAttempts)...)
	diags = append(diags, decodeCount(raw.MaxBodyBytes, "max_body_bytes", &cfg.MaxBodyBytes)...)
	resolveHTTP(raw, cfg, &diags)
	diags = append(diags, decodeDuration(raw.ShutdownTimeout, "shutdown_timeout", &cfg.ShutdownTimeout)...)
	diags = append(diags, decodeDuration(raw.ScheduleInterval, "schedule_interval", &cfg.ScheduleInterval)...)
	diags = append(diags, decodeDuration(raw.RetryBackoffBase, "retry_backoff_base", &cfg.RetryBackoffBase)...)
	diags = append(diags, decodeDuration(raw.RetryBackoffMax, "retry_backoff_max", &cfg.RetryBackoffMax)...)
	diags = append(diags, decodeDuration(raw.TaskTimeoutGrace, "task_timeout_grace", &cfg.TaskTimeoutGrace)...)

	if w := raw.Workers; w != nil {
		setString(&cfg.Workers.Token, w.Token)
		dst := &cfg.Workers
		diags = append(diags, decodeDuration(w.HeartbeatInterval, "workers.heartbeat_interval",
			&dst.HeartbeatInterval)...)
		diags = append(diags, decodeDuration(w.HeartbeatTimeout, "workers.heartbeat_timeout",
			&dst.HeartbeatTimeout)...)
		diags = append(diags, decodeDuration(w.ReassignAfter, "workers.reassign_after", &dst.ReassignAfter)...)
		diags = append(diags, decodeDuration(w.HandshakeTimeout, "workers.handshake_timeout",
			&dst.HandshakeTimeout)...)
		diags = append(diags, decodeCount(w.MaxFrameBytes, "workers.max_frame_bytes", &dst.MaxFrameBytes)...)
		diags = append(diags, decodeCount(w.SendQueue, "workers.send_queue", &dst.SendQueue)...)
		resolveSessions(w, dst, &diags)
	}

	raw.resolveTLS(dir, cfg)

	if !filepath.IsAbs(cfg.DataDir) {
		cfg.DataDir = filepath.Join(dir, cfg.DataDir)
	}
	cfg.DataDir = filepath.Clean(cfg.DataDir)
	return cfg, diags
}

// Validate checks the values of a configuration, loaded or built in code.
// It applies countRanges to every configuration. Of durationRanges, which
// Load applies to a file, it keeps only a 1ms floor on heartbeat_interval,
// because tests build configurations with heartbeats of milliseconds.
func (c *Config) Validate() error {
	var errs []error
	if err := validateListen(c.Listen); err != nil {
		errs = append(errs, err)
	} else if !loopback(c.Listen) {
		errs = append(errs, validatePublicListen(c)...)
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("data_dir is empty; set the folder of the coordinator's store"))
	}
	switch c.LogLevel {
	case "trace", "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log_level %q is invalid; use trace, debug, info, warn or error", c.LogLevel))
	}
	errs = append(errs, validateTaskTypes(c.TaskTypes)...)
	errs = append(errs, checkCount("max_attempts", c.MaxAttempts))
	errs = append(errs, positive("shutdown_timeout", c.ShutdownTimeout))
	errs = append(errs, positive("schedule_interval", c.ScheduleInterval))
	errs = append(errs, checkCount("max_body_bytes", c.MaxBodyBytes))
	errs = append(errs, validateHTTP(c)...)
	errs = append(errs, validateTLS(c)...)
	errs = append(errs, validateRetries(c)...)

	w := c.Workers
	if w.HeartbeatInterval < minCodeHeartbeatInterval {
		errs = append(errs, fmt.Errorf("workers.heartbeat_interval %s is too short; use at least %s, "+
			"default %s", w.HeartbeatInterval, formatDuration(minCodeHeartbeatInterval),
			formatDuration(DefaultHeartbeatInterval)))
	}
	errs = append(errs, positive("workers.heartbeat_timeout", w.HeartbeatTimeout))
	errs = append(errs, positive("workers.handshake_timeout", w.HandshakeTimeout))
	if w.ReassignAfter < 0 {
		errs = append(errs, fmt.Errorf("workers.reassign_after %s is negative", w.ReassignAfter))
	}
	if w.HeartbeatTimeout <= w.HeartbeatInterval {
		errs = append(errs, fmt.Errorf("workers.heartbeat_timeout %s must be longer than workers.heartbeat_interval %s, "+
			"usually three intervals", w.HeartbeatTimeout, w.HeartbeatInterval))
	}
	errs = append(errs, checkCount("workers.send_queue", w.SendQueue))
	errs = append(errs, validateSessions(w)...)
	return errors.Join(errs...)
}

// validateRetries checks the retry backoff and the timeout grace.
func validateRetries(c *Config) []error {
	var errs []error
	if c.RetryBackoffBase < 0 {
		errs = append(errs, fmt.Errorf("retry_backoff_base %s is negative; use 0 to retry at once", c.RetryBackoffBase))
	}
	if c.RetryBackoffMax < c.RetryBackoffBase {
		errs = append(errs, fmt.Errorf("retry_backoff_max %s is shorter than retry_backoff_base %s; "+
			"raise retry_backoff_max to at least %s", c.RetryBackoffMax, c.RetryBackoffBase,
			formatDuration(c.RetryBackoffBase)))
	}
	errs = append(errs, positive("task_timeout_grace", c.TaskTimeoutGrace))
	return errs
}

// resolveSessions fills the settings of resumable sessions, storm shedding
// and compression.
func resolveSessions(w *fileWorkers, dst *Workers, diags *hcl.Diagnostics) {
	*diags = append(*diags, decodeCount(w.ReplayFrames, "workers.replay_frames", &dst.ReplayFrames)...)
	*diags = append(*diags, decodeCount(w.ReplayBytes, "workers.replay_bytes", &dst.ReplayBytes)...)
	*diags = append(*diags, decodeDuration(w.SessionTTL, "workers.session_ttl", &dst.SessionTTL)...)
	*diags = append(*diags, decodeDuration(w.MaxHeartbeatTimeout, "workers.max_heartbeat_timeout",
		&dst.MaxHeartbeatTimeout)...)
	*diags = append(*diags, decodeCount(w.MaxSessionsPerSecond, "workers.max_sessions_per_second",
		&dst.MaxSessionsPerSecond)...)
	*diags = append(*diags, decodeCount(w.SessionBurst, "workers.session_burst", &dst.SessionBurst)...)
	*diags = append(*diags, decodeCount(w.MaxPendingHandshakes, "workers.max_pending_handshakes",
		&dst.MaxPendingHandshakes)...)
	*diags = append(*diags, decodeCount(w.ConnectionsPerSecondPerAddress,
		"workers.connections_per_second_per_address", &dst.ConnectionsPerSecondPerAddress)...)
	*diags = append(*diags, decodeCount(w.ConnectionBurstPerAddress, "workers.connection_burst_per_address",
		&dst.ConnectionBurstPerAddress)...)
	*diags = append(*diags, decodeCount(w.MaxDecodedBytes, "workers.max_decoded_bytes", &dst.MaxDecodedBytes)...)
	if w.Compression != nil {
		dst.Compression = *w.Compression
	}
}

// validateSessions checks max_frame_bytes and the settings that
// resolveSessions fills.
func validateSessions(w Workers) []error {
	errs := []error{
		checkCount("workers.replay_frames", w.ReplayFrames),
		checkCount("workers.max_sessions_per_second", w.MaxSessionsPerSecond),
		checkCount("workers.session_burst", w.SessionBurst),
		checkCount("workers.max_pending_handshakes", w.MaxPendingHandshakes),
		checkCount("workers.connections_per_second_per_address", w.ConnectionsPerSecondPerAddress),
		checkCount("workers.connection_burst_per_address", w.ConnectionBurstPerAddress),
	}
	// replay_bytes must hold one frame of the largest size. When
	// max_frame_bytes itself is out of range, only that is reported, so the
	// message names the setting the user wrote.
	if err := checkCount("workers.max_frame_bytes", w.MaxFrameBytes); err != nil {
		errs = append(errs, err)
	} else if err := checkCount("workers.replay_bytes", w.ReplayBytes); err != nil {
		errs = append(errs, err)
	} else if w.ReplayBytes < w.MaxFrameBytes {
		errs = append(errs, fmt.Errorf("workers.replay_bytes %d is smaller than workers.max_frame_bytes %d; "+
			"raise replay_bytes to at least %d or lower max_frame_bytes", w.ReplayBytes, w.MaxFrameBytes,
			w.MaxFrameBytes))
	}
	errs = append(errs, validateDecodedLimit(w))
	if w.SessionTTL < 0 {
		errs = append(errs, fmt.Errorf("workers.session_ttl %s is negative; use 0 to disable resume", w.SessionTTL))
	}
	if w.MaxHeartbeatTimeout != 0 && w.MaxHeartbeatTimeout < w.HeartbeatTimeout {
		errs = append(errs, fmt.Errorf("workers.max_heartbeat_timeout %s is shorter than workers.heartbeat_timeout %s",
			w.MaxHeartbeatTimeout, w.HeartbeatTimeout))
	}
	return errs
}

func validateTaskTypes(types []string) []error {
	if len(types) == 0 {
		return []error{errors.New("task_types is empty; list the task types workers serve, such as [\"command\"]")}
	}
	var errs []error
	seen := map[string]bool{}
	for i, t := range types {
		switch {
		case t == "" || strings.TrimSpace(t) != t:
			errs = append(errs, fmt.Errorf("task_types[%d] %q is empty or has surrounding spaces", i, t))
		case !taskTypePattern.MatchString(t):
			errs = append(errs, fmt.Errorf("task_types[%d] %q is invalid; use lowercase letters, digits, "+
				"'_' and '-', such as \"gotest\"", i, t))
		case seen[t]:
			errs = append(errs, fmt.Errorf("task_types[%d] %q is listed twice", i, t))
		}
		seen[t] = true
	}
	return errs
}

// validatePublicListen checks a listener that other machines can reach:
// without TLS it needs the explicit insecure waiver. Without a token, every
// worker on such a listener must authenticate with a credential of its
// own.
func validatePublicListen(c *Config) []error {
	if c.Insecure || c.TLS.Enabled() {
		return nil
	}
	msg := fmt.Sprintf("listen %q is not a loopback address and has no TLS; add a tls block with "+
		"cert_file and key_file to serve https and wss, or set insecure = true to accept unencrypted "+
		"traffic, or listen on 127.0.0.1:%s", c.Listen, port(c.Listen))
	if c.Workers.Token != "" {
		msg += "; workers.token is sent in clear and its sessions carry no message tags, so prefer " +
			"worker credentials (dtf credentials create)"
	}
	return []error{errors.New(msg)}
}

// OpenToAnyWorker reports whether a worker without a credential joins
// without any check: no workers.token and a loopback listener, for
// development on one machine.
func (c *Config) OpenToAnyWorker() bool {
	return c.Workers.Token == "" && loopback(c.Listen)
}

// validateListen checks that listen is host:port with a numeric port that
// net.Listen accepts. An empty host listens on all addresses.
func validateListen(listen string) error {
	_, portText, err := net.SplitHostPort(listen)
	if err != nil {
		return fmt.Errorf("listen %q is not host:port, for example \"127.0.0.1:7070\"", listen)
	}
	if _, err := strconv.ParseUint(portText, 10, 16); err != nil {
		return fmt.Errorf("listen %q has an invalid port %q; use a port from 0 to 65535, for example "+
			"\"127.0.0.1:7070\" (0 picks a free port)", listen, portText)
	}
	return nil
}

func port(hostport string) string {
	_, p, _ := net.SplitHostPort(hostport)
	return p
}

func positive(name string, d time.Duration) error {
	if d <= 0 {
		return fmt.Errorf("%s %s must be positive", name, d)
	}
	return nil
}

// Loopback reports whether a host:port listens on a loopback address only.
func Loopback(hostport string) bool {
	return loopback(hostport)
}

// loopback reports whether a host:port listens on a loopback address only.
func loopback(hostport string) bool {
	host, _, _ := net.SplitHostPort(hostport)
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func setString(dst *string, v *string) {
	if v != nil {
		*dst = *v
	}
}
