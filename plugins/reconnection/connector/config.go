package connector

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"strings"
	"time"

	"github.com/dtf-io/dtf/plugin/pb"
	"github.com/dtf-io/dtf/protocol"
	wirepb "github.com/dtf-io/dtf/protocol/pb"
)

// maxBackoffMultiplier bounds backoff_multiplier. With a larger factor the
// delay jumps from backoff_base to backoff_cap within a few failures.
const maxBackoffMultiplier = 10

// Defaults of the plugin's config block. The heartbeat timeout spans three
// intervals, so one late heartbeat reply does not end a session. The backoff
// cap and the circuit cooldown bound how long a worker waits to notice that
// the coordinator is back. Both stay well below the coordinator's default
// reassign_after of 30s, so a worker returns before its attempts are lost.
const (
	DefaultHeartbeatInterval = 2 * time.Second
	DefaultHeartbeatTimeout  = 6 * time.Second
	DefaultBackoffBase       = 200 * time.Millisecond
	DefaultBackoffMultiplier = 2.0
	DefaultBackoffCap        = 10 * time.Second
	DefaultHealthyAfter      = 10 * time.Second
	DefaultDialTimeout       = 10 * time.Second
	DefaultHandshakeTimeout  = 10 * time.Second
	DefaultFatalAfter        = 5
	DefaultSendTimeout       = 30 * time.Second
	DefaultSendQueueFrames   = 256
	DefaultFailureThreshold  = 10
	DefaultCircuitCooldown   = 10 * time.Second
)

// maxHeartbeatFactor sets the default bounds of adapted heartbeats: four
// times the configured interval and timeout.
const maxHeartbeatFactor = 4

// MaxFrameBytesLimit is the largest accepted max_frame_bytes. A frame travels
// between the plugin and the host as one gRPC message, which the plugin glue
// limits to 16 MiB (plugin.MaxMessageBytes).
const MaxFrameBytesLimit = 16 << 20

// minFrameBytes keeps max_frame_bytes large enough for a Hello with many
// labels and task types.
const minFrameBytes = 1 << 10

// Caps of the count fields. Each one stops a typo or a huge value from
// letting the plugin hold memory without bound or retry forever. The
// defaults sit far inside them. The send queue and replay caps match the
// coordinator's caps on send_queue, replay_frames and replay_bytes.
const (
	// maxSendQueueFrames bounds each of the send queue's priority levels.
	maxSendQueueFrames = 1 << 16
	// maxReplayFrames and maxReplayBytes bound the replay buffer. The byte
	// cap leaves room for 16 frames of the largest size. A kept frame costs
	// only a pointer and a size on top of its bytes, so the frame cap is
	// generous.
	maxReplayFrames = 1 << 20
	maxReplayBytes  = 16 * MaxFrameBytesLimit
	// maxFatalAfter, maxFailureThreshold and maxAttemptsLimit bound counts
	// of failed attempts. At the default backoff cap of 30s, reaching them
	// takes hours or days, so a larger count is more likely a typo than a
	// plan. A worker that should never give up sets max_attempts = 0.
	maxFatalAfter       = 1000
	maxFailureThreshold = 10_000
	maxAttemptsLimit    = 10_000
)

// intRange is the allowed range of an integer field and its default, which
// error messages suggest.
type intRange struct {
	min, max, def int
}

// intRanges are the ranges of the integer fields of the config block.
var intRanges = map[string]intRange{
	"max_frame_bytes":      {minFrameBytes, MaxFrameBytesLimit, protocol.DefaultMaxFrameBytes},
	"fatal_after":          {1, maxFatalAfter, DefaultFatalAfter},
	"send_queue_frames":    {1, maxSendQueueFrames, DefaultSendQueueFrames},
	"replay_buffer_frames": {1, maxReplayFrames, protocol.DefaultReplayFrames},
	"replay_buffer_bytes":  {minFrameBytes, maxReplayBytes, protocol.DefaultReplayBytes},
	"failure_threshold":    {1, maxFailureThreshold, DefaultFailureThreshold},
	"max_attempts":         {0, maxAttemptsLimit, 0},
}

// Ranges of the heartbeat fields, the same as the coordinator's. The 50ms
// floor allows at most 20 heartbeats per second, while an interval of a
// few nanoseconds keeps a core busy. The shortest timeout spans three of
// the shortest intervals, the ratio of the defaults. A connection silent
// for minutes risks being closed by a NAT or load balancer idle timer,
// hence the one-minute ceiling on the interval. The timeout ceiling bounds
// how long a dead coordinator goes unnoticed.
const (
	minHeartbeatInterval = 50 * time.Millisecond
	maxHeartbeatInterval = time.Minute
	minHeartbeatTimeout  = 3 * minHeartbeatInterval
	maxHeartbeatTimeout  = 10 * time.Minute
)

// durationRange is the allowed range of a duration field.
type durationRange struct {
	min, max time.Duration
}

// durationRanges are the ranges of the duration fields of the config
// block. A zero max_heartbeat_interval or max_heartbeat_timeout selects
// the default of maxHeartbeatFactor times the base value.
var durationRanges = map[string]durationRange{
	"heartbeat_interval":     {minHeartbeatInterval, maxHeartbeatInterval},
	"heartbeat_timeout":      {minHeartbeatTimeout, maxHeartbeatTimeout},
	"backoff_base":           {time.Millisecond, time.Minute},
	"backoff_cap":            {time.Millisecond, time.Hour},
	"healthy_after":          {0, time.Hour},
	"dial_timeout":           {10 * time.Millisecond, 5 * time.Minute},
	"handshake_timeout":      {10 * time.Millisecond, 5 * time.Minute},
	"max_heartbeat_interval": {0, maxHeartbeatFactor * maxHeartbeatInterval},
	"max_heartbeat_timeout":  {0, maxHeartbeatFactor * maxHeartbeatTimeout},
	"send_timeout":           {time.Millisecond, time.Hour},
	"circuit_cooldown":       {time.Millisecond, time.Hour},
}

// durationSyntax matches the texts that time.ParseDuration accepts apart
// from "0", so a text that matches and still fails to parse is a duration
// too large for time.Duration, which ends near 292 years.
var durationSyntax = regexp.MustCompile(`^[-+]?(([0-9]+\.?[0-9]*|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+$`)

// Config is the validated configuration of the connector: the host's
// ConnectorConfig plus the plugin's own config block.
type Config struct {
	// URL is the coordinator's WebSocket endpoint, built by
	// protocol.ConnectURL from the configured base URL.
	URL      string
	WorkerID string
	// Token is the shared secret of the token mode, sent when neither
	// Secret nor SecretFile is set.
	Token string
	// Secret is the worker's credential secret. SecretFile is a file that
	// contains it, read again before every handshake so that a rotated
	// secret is used without a restart. With either, the worker
	// authenticates with SCRAM and every message is tagged. Neither is
	// ever logged.
	Secret     string
	SecretFile string
	// CAFile is the PEM file of the CA certificates that a wss://
	// coordinator's certificate must chain to; empty uses the system
	// roots. TLS holds the settings built from it.
	CAFile      string
	TLS         *tls.Config
	TaskTypes   []string
	Slots       uint32
	Labels      map[string]string
	HostVersion string
	// Plugins lists the host's plugin processes for the Hello.
	Plugins []*wirepb.WorkerPlugin

	// HeartbeatInterval is the period of the worker's heartbeats and
	// WebSocket pings. A shorter interval announced in the coordinator's
	// Welcome replaces it for that session.
	HeartbeatInterval time.Duration
	// HeartbeatTimeout is the read deadline of a connection: when no frame
	// and no pong arrives for this long, the connection is dead. It must
	// exceed HeartbeatInterval, because the replies to the worker's own
	// heartbeats are what keep an idle connection alive.
	HeartbeatTimeout time.Duration
	// Backoff spaces the reconnection attempts.
	Backoff BackoffPolicy
	// HealthyAfter is how long a connection must stay up before the backoff
	// starts again from its base, so a flapping link keeps growing delays.
	HealthyAfter time.Duration
	// DialTimeout bounds the TCP connect and the WebSocket upgrade.
	DialTimeout time.Duration
	// HandshakeTimeout bounds the wait for Welcome after Hello.
	HandshakeTimeout time.Duration
	// MaxFrameBytes bounds one frame in either direction, in bytes.
	MaxFrameBytes int
	// FatalAfter is the number of identical authentication failures after
	// which the connector gives up, because retrying the same credentials
	// cannot succeed.
	FatalAfter int

	// MaxHeartbeatInterval and MaxHeartbeatTimeout bound the heartbeat
	// interval and read timeout as they grow with the measured round-trip
	// time; defaults are four times HeartbeatInterval and HeartbeatTimeout.
	MaxHeartbeatInterval time.Duration
	MaxHeartbeatTimeout  time.Duration
	// SendTimeout bounds how long Send waits for room in a full send queue
	// before it fails with ResourceExhausted.
	SendTimeout time.Duration
	// SendQueueFrames bounds each priority level of the send queue, in
	// frames.
	SendQueueFrames int
	// ReplayFrames and ReplayBytes bound the frames kept until the
	// coordinator acknowledges them. While the buffer is full no new frame
	// is written, so the send queue fills and Send blocks.
	ReplayFrames int
	ReplayBytes  int
	// Breaker opens after FailureThreshold failed attempts in a row.
	Breaker BreakerPolicy
	// MaxAttempts is the number of failed attempts in a row after which the
	// connector gives up for good; 0 never gives up.
	MaxAttempts int
	// Compression offers DEFLATE in Hello; the coordinator decides.
	Compression bool
}

// pluginConfig is the JSON form of the plugin's config block. Each field is
// kept raw so that a type error names its field.
type pluginConfig struct {
	HeartbeatInterval json.RawMessage `json:"heartbeat_interval"`
	HeartbeatTimeout  json.RawMessage `json:"heartbeat_timeout"`
	BackoffBase       json.RawMessage `json:"backoff_base"`
	BackoffMultiplier json.RawMessage `json:"backoff_multiplier"`
	BackoffCap        json.RawMessage `json:"backoff_cap"`
	HealthyAfter      json.RawMessage `json:"healthy_after"`
	DialTimeout       json.RawMessage `json:"dial_timeout"`
	HandshakeTimeout  json.RawMessage `json:"handshake_timeout"`
	MaxFrameBytes     json.RawMessage `json:"max_frame_bytes"`
	FatalAfter        json.RawMessage `json:"fatal_after"`

	MaxHeartbeatInterval json.RawMessage `json:"max_heartbeat_interval"`
	MaxHeartbeatTimeout  json.RawMessage `json:"max_heartbeat_timeout"`
	SendTimeout          json.RawMessage `json:"send_timeout"`
	SendQueueFrames      json.RawMessage `json:"send_queue_frames"`
	ReplayBufferFrames   json.RawMessage `json:"replay_buffer_frames"`
	ReplayBufferBytes    json.RawMessage `json:"replay_buffer_bytes"`
	FailureThreshold     json.RawMessage `json:"failure_threshold"`
	CircuitCooldown      json.RawMessage `json:"circuit_cooldown"`
	MaxAttempts          json.RawMessage `json:"max_attempts"`
	Compression          json.RawMessage `json:"compression"`
}

// ParseConfig validates the host's ConnectorConfig and decodes its
// config_json. Every problem names the field, the value and the fix. When
// the config has problems, the error is a *ConfigError that lists each of
// them with its setting.
func ParseConfig(in *pb.ConnectorConfig) (*Config, error) {
	if in == nil {
		return nil, errors.New("missing connector config; the worker host must send url and worker_id")
	}
	var problems []*pb.ConfigProblem
	url, err := protocol.ConnectURL(in.GetUrl())
	if err != nil {
		problems = append(problems, problemOf(fmt.Errorf("coordinator.url: %w", err)))
	}
	if strings.TrimSpace(in.GetWorkerId()) == "" {
		problems = append(problems, problemOf(errors.New("coordinator.worker_id: missing; set a worker_id "+
			"unique in the fleet, for example worker_id = \"worker-1\"")))
	}
	cfg := &Config{
		URL:               url,
		WorkerID:          in.GetWorkerId(),
		Token:             in.GetToken(),
		Secret:            in.GetSecret(),
		SecretFile:        in.GetSecretFile(),
		CAFile:            in.GetCaFile(),
		TaskTypes:         in.GetTaskTypes(),
		Slots:             in.GetSlots(),
		Labels:            in.GetLabels(),
		HostVersion:       in.GetHostVersion(),
		Plugins:           helloPlugins(in.GetPlugins()),
		HeartbeatInterval: DefaultHeartbeatInterval,
		HeartbeatTimeout:  DefaultHeartbeatTimeout,
		Backoff: BackoffPolicy{
			Base:       DefaultBackoffBase,
			Multiplier: DefaultBackoffMultiplier,
			Cap:        DefaultBackoffCap,
		},
		HealthyAfter:     DefaultHealthyAfter,
		DialTimeout:      DefaultDialTimeout,
		HandshakeTimeout: DefaultHandshakeTimeout,
		MaxFrameBytes:    protocol.DefaultMaxFrameBytes,
		FatalAfter:       DefaultFatalAfter,
		SendTimeout:      DefaultSendTimeout,
		SendQueueFrames:  DefaultSendQueueFrames,
		ReplayFrames:     protocol.DefaultReplayFrames,
		ReplayBytes:      protocol.DefaultReplayBytes,
		Breaker: BreakerPolicy{
			FailureThreshold: DefaultFailureThreshold,
			Cooldown:         DefaultCircuitCooldown,
		},
		Compression: true,
	}
	if cfg.TLS, err = clientTLSConfig(cfg.CAFile); err != nil {
		problems = append(problems, problemOf(err))
	}
	if err := cfg.checkSecret(); err != nil {
		problems = append(problems, problemOf(err))
	}
	fieldProblems := cfg.decodePluginConfig(in.GetConfigJson())
	problems = append(problems, fieldProblems...)
	if len(fieldProblems) == 0 {
		// The relations between fields are checked only when each field
		// has a valid value.
		if err := cfg.validate(); err != nil {
			problems = append(problems, problemOf(err))
		}
	}
	if len(problems) > 0 {
		return nil, &ConfigError{Problems: problems}
	}
	return cfg, nil
}

// validFields lists the settings of the plugin's config block, for the
// message about an unknown one.
const validFields = "heartbeat_interval, heartbeat_timeout, backoff_base, backoff_multiplier, " +
	"backoff_cap, healthy_after, dial_timeout, handshake_timeout, max_frame_bytes, fatal_after, " +
	"max_heartbeat_interval, max_heartbeat_timeout, send_timeout, send_queue_frames, " +
	"replay_buffer_frames, replay_buffer_bytes, failure_threshold, circuit_cooldown, max_attempts, " +
	"compression"

// decodePluginConfig decodes the config block into c and returns a problem
// for each setting that is unknown or invalid.
func (c *Config) decodePluginConfig(data []byte) []*pb.ConfigProblem {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	var fields map[string]json.RawMessage
	decoder := json.NewDecoder(bytes.NewReader(data))
	if err := decoder.Decode(&fields); err != nil {
		return []*pb.ConfigProblem{{Summary: "Invalid plugin config", Detail: fmt.Sprintf(
			"invalid reconnection plugin config: %v; the config must be an object with the fields %s",
			err, validFields)}}
	}
	if _, err := decoder.Token(); !errors.Is(err, io.EOF) {
		return []*pb.ConfigProblem{{Summary: "Invalid plugin config",
			Detail: "invalid reconnection plugin config: trailing data after the JSON object"}}
	}
	var problems []*pb.ConfigProblem
	for _, name := range sortedKeys(fields) {
		if !strings.Contains(", "+validFields+", ", ", "+name+", ") {
			problems = append(problems, &pb.ConfigProblem{Path: name, Summary: "Unsupported argument",
				Detail: fmt.Sprintf("the reconnection plugin has no setting %q; valid fields: %s", name, validFields)})
			delete(fields, name)
		}
	}
	known, _ := json.Marshal(fields)
	var raw pluginConfig
	if err := json.Unmarshal(known, &raw); err != nil {
		// Every field is json.RawMessage, so only a broken object fails.
		return append(problems, &pb.ConfigProblem{Summary: "Invalid plugin config", Detail: err.Error()})
	}

	durations := []struct {
		name string
		raw  json.RawMessage
		dst  *time.Duration
	}{
		{"heartbeat_interval", raw.HeartbeatInterval, &c.HeartbeatInterval},
		{"heartbeat_timeout", raw.HeartbeatTimeout, &c.HeartbeatTimeout},
		{"backoff_base", raw.BackoffBase, &c.Backoff.Base},
		{"backoff_cap", raw.BackoffCap, &c.Backoff.Cap},
		{"healthy_after", raw.HealthyAfter, &c.HealthyAfter},
		{"dial_timeout", raw.DialTimeout, &c.DialTimeout},
		{"handshake_timeout", raw.HandshakeTimeout, &c.HandshakeTimeout},
		{"max_heartbeat_interval", raw.MaxHeartbeatInterval, &c.MaxHeartbeatInterval},
		{"max_heartbeat_timeout", raw.MaxHeartbeatTimeout, &c.MaxHeartbeatTimeout},
		{"send_timeout", raw.SendTimeout, &c.SendTimeout},
		{"circuit_cooldown", raw.CircuitCooldown, &c.Breaker.Cooldown},
	}
	for _, d := range durations {
		if err := decodeDuration(d.name, d.raw, d.dst); err != nil {
			problems = append(problems, problemOf(err))
		}
	}
	if err := decodeFloat("backoff_multiplier", raw.BackoffMultiplier, &c.Backoff.Multiplier); err != nil {
		problems = append(problems, problemOf(err))
	}
	ints := []struct {
		name string
		raw  json.RawMessage
		dst  *int
	}{
		{"max_frame_bytes", raw.MaxFrameBytes, &c.MaxFrameBytes},
		{"fatal_after", raw.FatalAfter, &c.FatalAfter},
		{"send_queue_frames", raw.SendQueueFrames, &c.SendQueueFrames},
		{"replay_buffer_frames", raw.ReplayBufferFrames, &c.ReplayFrames},
		{"replay_buffer_bytes", raw.ReplayBufferBytes, &c.ReplayBytes},
		{"failure_threshold", raw.FailureThreshold, &c.Breaker.FailureThreshold},
		{"max_attempts", raw.MaxAttempts, &c.MaxAttempts},
	}
	for _, i := range ints {
		if err := decodeInt(i.name, i.raw, i.dst); err != nil {
			problems = append(problems, problemOf(err))
		}
	}
	if err := decodeBool("compression", raw.Compression, &c.Compression); err != nil {
		problems = append(problems, problemOf(err))
	}
	return problems
}

func decodeBool(name string, raw json.RawMessage, dst *bool) error {
	if raw == nil {
		return nil
	}
	var v bool
	if err := json.Unmarshal(raw, &v); err != nil {
		return fmt.Errorf("%s: invalid boolean %s; use true or false", name, raw)
	}
	*dst = v
	return nil
}

// decodeDuration parses a JSON string with a unit, such as "2s", that lies
// within durationRanges[name]. A missing field keeps the default in dst.
func decodeDuration(name string, raw json.RawMessage, dst *time.Duration) error {
	if raw == nil {
		return nil
	}
	var text string
	if err := json.Unmarshal(raw, &text); err != nil {
		return fmt.Errorf("%s: invalid duration %s; use a string with a unit, for example \"2s\" or \"500ms\"",
			name, raw)
	}
	limits := durationRanges[name]
	d, err := time.ParseDuration(text)
	if err != nil && durationSyntax.MatchString(text) {
		return fmt.Errorf("%s: duration %q is too large; use at most %q", name, text, formatDuration(limits.max))
	}
	if err != nil {
		return fmt.Errorf("%s: invalid duration %q; use a number with a unit, for example \"2s\" or \"500ms\"",
			name, text)
	}
	if d < limits.min || d > limits.max {
		problem := "too long"
		if d < limits.min {
			problem = "too short"
		}
		msg := fmt.Sprintf("%s: duration %q is %s; use %q to %q", name, text, problem,
			formatDuration(limits.min), formatDuration(limits.max))
		// A zero default stands for a value derived from other fields,
		// which the range already shows is allowed.
		if *dst != 0 {
			msg += fmt.Sprintf(", default %q", formatDuration(*dst))
		}
		return errors.New(msg)
	}
	*dst = d
	return nil
}

// formatDuration writes d the way a user writes it: "1h" and "10m"
// instead of "1h0m0s" and "10m0s".
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func decodeFloat(name string, raw json.RawMessage, dst *float64) error {
	if raw == nil {
		return nil
	}
	var v float64
	if err := json.Unmarshal(raw, &v); err != nil {
		return fmt.Errorf("%s: invalid number %s; use a plain number, for example 2", name, raw)
	}
	*dst = v
	return nil
}

// decodeInt parses a JSON whole number that lies within intRanges[name].
// A missing field keeps the default in dst. The range is checked before
// the conversion to int, so a number too large for an int gets the same
// message as any other number over the cap.
func decodeInt(name string, raw json.RawMessage, dst *int) error {
	if raw == nil {
		return nil
	}
	limits := intRanges[name]
	var v float64
	if err := json.Unmarshal(raw, &v); err != nil || v != math.Trunc(v) {
		return fmt.Errorf("%s: invalid integer %s; use a whole number from %d to %d, default %d",
			name, raw, limits.min, limits.max, limits.def)
	}
	if v < float64(limits.min) || v > float64(limits.max) {
		problem := "too large"
		if v < float64(limits.min) {
			problem = "too small"
		}
		return fmt.Errorf("%s: %s is %s; use %d to %d, default %d",
			name, bytes.TrimSpace(raw), problem, limits.min, limits.max, limits.def)
	}
	*dst = int(v)
	return nil
}

// validate checks the relations between fields; decodePluginConfig has
// checked the range of each field.
func (c *Config) validate() error {
	if c.HeartbeatTimeout <= c.HeartbeatInterval {
		return fmt.Errorf("heartbeat_timeout: %s must be greater than heartbeat_interval %s; "+
			"use about three intervals, for example %s", c.HeartbeatTimeout, c.HeartbeatInterval,
			3*c.HeartbeatInterval)
	}
	if c.Backoff.Multiplier < 1 || c.Backoff.Multiplier > maxBackoffMultiplier || math.IsNaN(c.Backoff.Multiplier) {
		return fmt.Errorf("backoff_multiplier: invalid value %g; use 1 to %d, for example 2",
			c.Backoff.Multiplier, maxBackoffMultiplier)
	}
	if c.Backoff.Cap < c.Backoff.Base {
		return fmt.Errorf("backoff_cap: %s is less than backoff_base %s; raise backoff_cap or lower backoff_base",
			c.Backoff.Cap, c.Backoff.Base)
	}
	return c.validateHeartbeatBounds()
}

// validateHeartbeatBounds fills the default bounds of adapted heartbeats
// and checks them against the base values.
func (c *Config) validateHeartbeatBounds() error {
	if c.MaxHeartbeatInterval == 0 {
		c.MaxHeartbeatInterval = maxHeartbeatFactor * c.HeartbeatInterval
	}
	if c.MaxHeartbeatTimeout == 0 {
		c.MaxHeartbeatTimeout = maxHeartbeatFactor * c.HeartbeatTimeout
	}
	if c.MaxHeartbeatInterval < c.HeartbeatInterval {
		return fmt.Errorf("max_heartbeat_interval: %s is less than heartbeat_interval %s; "+
			"raise it or leave it unset for %d times the interval",
			c.MaxHeartbeatInterval, c.HeartbeatInterval, maxHeartbeatFactor)
	}
	if c.MaxHeartbeatTimeout < c.HeartbeatTimeout {
		return fmt.Errorf("max_heartbeat_timeout: %s is less than heartbeat_timeout %s; "+
			"raise it or leave it unset for %d times the timeout",
			c.MaxHeartbeatTimeout, c.HeartbeatTimeout, maxHeartbeatFactor)
	}
	return nil
}

// helloPlugins converts the host's plugin list to the Hello's.
func helloPlugins(in []*pb.HostPlugin) []*wirepb.WorkerPlugin {
	var out []*wirepb.WorkerPlugin
	for _, p := range in {
		out = append(out, &wirepb.WorkerPlugin{
			Name: p.GetName(), Kind: p.GetKind(), Version: p.GetVersion(), ApiVersion: p.GetApiVersion(),
		})
	}
	return out
}
