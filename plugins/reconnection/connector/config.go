package connector

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"time"

	"github.com/dtf-io/dtf/plugin/pb"
	"github.com/dtf-io/dtf/protocol"
)

// Defaults of the plugin's config block. The heartbeat timeout spans three
// intervals, so one late heartbeat reply does not end a session. The backoff
// cap bounds how long a worker waits to notice that the coordinator is back.
const (
	DefaultHeartbeatInterval = 2 * time.Second
	DefaultHeartbeatTimeout  = 6 * time.Second
	DefaultBackoffBase       = 200 * time.Millisecond
	DefaultBackoffMultiplier = 2.0
	DefaultBackoffCap        = 30 * time.Second
	DefaultHealthyAfter      = 10 * time.Second
	DefaultDialTimeout       = 10 * time.Second
	DefaultHandshakeTimeout  = 10 * time.Second
	DefaultFatalAfter        = 5
	DefaultSendTimeout       = 30 * time.Second
	DefaultSendQueueFrames   = 256
	DefaultFailureThreshold  = 10
	DefaultCircuitCooldown   = 30 * time.Second
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

// Config is the validated configuration of the connector: the host's
// ConnectorConfig plus the plugin's own config block.
type Config struct {
	// URL is the coordinator's WebSocket endpoint, built by
	// protocol.ConnectURL from the configured base URL.
	URL         string
	WorkerID    string
	Token       string
	TaskTypes   []string
	Slots       uint32
	Labels      map[string]string
	HostVersion string

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
// config_json. Every error names the field, the value and the fix.
func ParseConfig(in *pb.ConnectorConfig) (*Config, error) {
	if in == nil {
		return nil, errors.New("missing connector config; the worker host must send url and worker_id")
	}
	url, err := protocol.ConnectURL(in.GetUrl())
	if err != nil {
		return nil, fmt.Errorf("coordinator.url: %w", err)
	}
	if strings.TrimSpace(in.GetWorkerId()) == "" {
		return nil, errors.New("coordinator.worker_id: missing; set a worker_id unique in the fleet, " +
			"for example worker_id = \"worker-1\"")
	}
	cfg := &Config{
		URL:               url,
		WorkerID:          in.GetWorkerId(),
		Token:             in.GetToken(),
		TaskTypes:         in.GetTaskTypes(),
		Slots:             in.GetSlots(),
		Labels:            in.GetLabels(),
		HostVersion:       in.GetHostVersion(),
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
	if err := cfg.decodePluginConfig(in.GetConfigJson()); err != nil {
		return nil, err
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

func (c *Config) decodePluginConfig(data []byte) error {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	var raw pluginConfig
	decoder := json.NewDecoder(bytes.NewReader(data))
	decoder.DisallowUnknownFields()
	if err := decoder.Decode(&raw); err != nil {
		return fmt.Errorf("invalid reconnection plugin config: %w; valid fields: heartbeat_interval, "+
			"heartbeat_timeout, backoff_base, backoff_multiplier, backoff_cap, healthy_after, "+
			"dial_timeout, handshake_timeout, max_frame_bytes, fatal_after, max_heartbeat_interval, "+
			"max_heartbeat_timeout, send_timeout, send_queue_frames, replay_buffer_frames, "+
			"replay_buffer_bytes, failure_threshold, circuit_cooldown, max_attempts, compression", err)
	}
	if _, err := decoder.Token(); !errors.Is(err, io.EOF) {
		return errors.New("invalid reconnection plugin config: trailing data after the JSON object")
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
			return err
		}
	}
	if err := decodeFloat("backoff_multiplier", raw.BackoffMultiplier, &c.Backoff.Multiplier); err != nil {
		return err
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
			return err
		}
	}
	return decodeBool("compression", raw.Compression, &c.Compression)
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

// decodeDuration parses a JSON string with a unit, such as "2s". A missing
// field keeps the default in dst.
func decodeDuration(name string, raw json.RawMessage, dst *time.Duration) error {
	if raw == nil {
		return nil
	}
	var text string
	if err := json.Unmarshal(raw, &text); err != nil {
		return fmt.Errorf("%s: invalid duration %s; use a string with a unit, for example \"2s\" or \"500ms\"",
			name, raw)
	}
	d, err := time.ParseDuration(text)
	if err != nil {
		return fmt.Errorf("%s: invalid duration %q; use a number with a unit, for example \"2s\" or \"500ms\"",
			name, text)
	}
	*dst = d
	return nil
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

func decodeInt(name string, raw json.RawMessage, dst *int) error {
	if raw == nil {
		return nil
	}
	var v float64
	if err := json.Unmarshal(raw, &v); err != nil || v != math.Trunc(v) || math.Abs(v) > math.MaxInt32 {
		return fmt.Errorf("%s: invalid integer %s; use a whole number, for example 5", name, raw)
	}
	*dst = int(v)
	return nil
}

// validate checks the ranges and the relations between fields.
func (c *Config) validate() error {
	positive := []struct {
		name string
		d    time.Duration
	}{
		{"heartbeat_interval", c.HeartbeatInterval},
		{"heartbeat_timeout", c.HeartbeatTimeout},
		{"backoff_base", c.Backoff.Base},
		{"backoff_cap", c.Backoff.Cap},
		{"dial_timeout", c.DialTimeout},
		{"handshake_timeout", c.HandshakeTimeout},
	}
	for _, p := range positive {
		if p.d <= 0 {
			return fmt.Errorf("%s: invalid duration %s; it must be greater than zero", p.name, p.d)
		}
	}
	if c.HealthyAfter < 0 {
		return fmt.Errorf("healthy_after: invalid duration %s; use zero or more, for example \"10s\"",
			c.HealthyAfter)
	}
	if c.HeartbeatTimeout <= c.HeartbeatInterval {
		return fmt.Errorf("heartbeat_timeout: %s must be greater than heartbeat_interval %s; "+
			"use about three intervals, for example %s", c.HeartbeatTimeout, c.HeartbeatInterval,
			3*c.HeartbeatInterval)
	}
	if c.Backoff.Multiplier < 1 || math.IsInf(c.Backoff.Multiplier, 0) || math.IsNaN(c.Backoff.Multiplier) {
		return fmt.Errorf("backoff_multiplier: invalid value %g; use 1 or more, for example 2",
			c.Backoff.Multiplier)
	}
	if c.Backoff.Cap < c.Backoff.Base {
		return fmt.Errorf("backoff_cap: %s is less than backoff_base %s; raise backoff_cap or lower backoff_base",
			c.Backoff.Cap, c.Backoff.Base)
	}
	if c.MaxFrameBytes < minFrameBytes || c.MaxFrameBytes > MaxFrameBytesLimit {
		return fmt.Errorf("max_frame_bytes: invalid value %d; use %d to %d bytes, default %d",
			c.MaxFrameBytes, minFrameBytes, MaxFrameBytesLimit, protocol.DefaultMaxFrameBytes)
	}
	if c.FatalAfter < 1 {
		return fmt.Errorf("fatal_after: invalid value %d; use 1 or more, default %d",
			c.FatalAfter, DefaultFatalAfter)
	}
	return c.validateQueues()
}

// validateQueues checks the heartbeat bounds, the queue and replay bounds
// and the circuit breaker, and fills the defaults that depend on other
// fields.
func (c *Config) validateQueues() error {
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
	positive := []struct {
		name  string
		value int
	}{
		{"send_queue_frames", c.SendQueueFrames},
		{"replay_buffer_frames", c.ReplayFrames},
		{"replay_buffer_bytes", c.ReplayBytes},
		{"failure_threshold", c.Breaker.FailureThreshold},
	}
	for _, p := range positive {
		if p.value < 1 {
			return fmt.Errorf("%s: invalid value %d; use 1 or more", p.name, p.value)
		}
	}
	if c.SendTimeout <= 0 {
		return fmt.Errorf("send_timeout: invalid duration %s; it must be greater than zero, default %s",
			c.SendTimeout, DefaultSendTimeout)
	}
	if c.Breaker.Cooldown <= 0 {
		return fmt.Errorf("circuit_cooldown: invalid duration %s; it must be greater than zero, default %s",
			c.Breaker.Cooldown, DefaultCircuitCooldown)
	}
	if c.MaxAttempts < 0 {
		return fmt.Errorf("max_attempts: invalid value %d; use 0 to never give up, or a positive count",
			c.MaxAttempts)
	}
	return nil
}
