package connector

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/plugin/pb"
	"github.com/dtf-io/dtf/protocol"
)

func TestParseConfigDefaults(t *testing.T) {
	cfg, err := ParseConfig(connectorConfig("ws://127.0.0.1:7070", ""))
	require.NoError(t, err)
	assert.Equal(t, "ws://127.0.0.1:7070/v1/connect", cfg.URL)
	assert.Equal(t, "worker-1", cfg.WorkerID)
	assert.Equal(t, DefaultHeartbeatInterval, cfg.HeartbeatInterval)
	assert.Equal(t, DefaultHeartbeatTimeout, cfg.HeartbeatTimeout)
	assert.Equal(t, BackoffPolicy{Base: DefaultBackoffBase, Multiplier: DefaultBackoffMultiplier,
		Cap: DefaultBackoffCap}, cfg.Backoff)
	assert.Equal(t, DefaultHealthyAfter, cfg.HealthyAfter)
	assert.Equal(t, DefaultDialTimeout, cfg.DialTimeout)
	assert.Equal(t, DefaultHandshakeTimeout, cfg.HandshakeTimeout)
	assert.Equal(t, protocol.DefaultMaxFrameBytes, cfg.MaxFrameBytes)
	assert.Equal(t, DefaultFatalAfter, cfg.FatalAfter)
}

func TestParseConfigAllFields(t *testing.T) {
	cfg, err := ParseConfig(connectorConfig("http://127.0.0.1:7070", `{
		"heartbeat_interval": "1s", "heartbeat_timeout": "3s",
		"backoff_base": "100ms", "backoff_multiplier": 1.5, "backoff_cap": "5s",
		"healthy_after": "20s", "dial_timeout": "2s", "handshake_timeout": "4s",
		"max_frame_bytes": 65536, "fatal_after": 3}`))
	require.NoError(t, err)
	assert.Equal(t, time.Second, cfg.HeartbeatInterval)
	assert.Equal(t, 3*time.Second, cfg.HeartbeatTimeout)
	assert.Equal(t, BackoffPolicy{Base: 100 * time.Millisecond, Multiplier: 1.5, Cap: 5 * time.Second}, cfg.Backoff)
	assert.Equal(t, 20*time.Second, cfg.HealthyAfter)
	assert.Equal(t, 2*time.Second, cfg.DialTimeout)
	assert.Equal(t, 4*time.Second, cfg.HandshakeTimeout)
	assert.Equal(t, 65536, cfg.MaxFrameBytes)
	assert.Equal(t, 3, cfg.FatalAfter)
}

// TestParseConfigLimitsInclusive parses configs with every bounded field at
// the low end and at the high end of its range.
func TestParseConfigLimitsInclusive(t *testing.T) {
	cases := []struct {
		name string
		json string
	}{
		{"low end", `{"heartbeat_interval": "50ms", "heartbeat_timeout": "150ms",
			"backoff_base": "1ms", "backoff_cap": "1ms", "healthy_after": "0s",
			"dial_timeout": "10ms", "handshake_timeout": "10ms", "max_frame_bytes": 1024,
			"fatal_after": 1, "send_timeout": "1ms", "send_queue_frames": 1,
			"replay_buffer_frames": 1, "replay_buffer_bytes": 1024, "failure_threshold": 1,
			"circuit_cooldown": "1ms", "max_attempts": 0}`},
		{"high end", `{"heartbeat_interval": "1m", "heartbeat_timeout": "10m",
			"backoff_base": "1m", "backoff_cap": "1h", "healthy_after": "1h",
			"dial_timeout": "5m", "handshake_timeout": "5m", "max_frame_bytes": 16777216,
			"fatal_after": 1000, "max_heartbeat_interval": "4m", "max_heartbeat_timeout": "40m",
			"send_timeout": "1h", "send_queue_frames": 65536, "replay_buffer_frames": 1048576,
			"replay_buffer_bytes": 268435456, "failure_threshold": 10000,
			"circuit_cooldown": "1h", "max_attempts": 10000}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig(connectorConfig("ws://127.0.0.1:7070", tc.json))
			assert.NoError(t, err)
		})
	}
}

func TestParseConfigQueueFields(t *testing.T) {
	cfg, err := ParseConfig(connectorConfig("ws://127.0.0.1:7070", `{
		"send_queue_frames": 65536, "replay_buffer_frames": 1048576,
		"replay_buffer_bytes": 268435456, "failure_threshold": 10000, "max_attempts": 7}`))
	require.NoError(t, err)
	assert.Equal(t, 65536, cfg.SendQueueFrames)
	assert.Equal(t, 1<<20, cfg.ReplayFrames)
	assert.Equal(t, 256<<20, cfg.ReplayBytes)
	assert.Equal(t, 10000, cfg.Breaker.FailureThreshold)
	assert.Equal(t, 7, cfg.MaxAttempts)
}

func TestParseConfigErrors(t *testing.T) {
	cases := []struct {
		name   string
		url    string
		worker string
		json   string
		want   []string
	}{
		{"duration without unit", "", "", `{"heartbeat_interval": "2"}`,
			[]string{"heartbeat_interval", `"2"`, `"2s"`}},
		{"duration as number", "", "", `{"backoff_cap": 5}`, []string{"backoff_cap", "5", "unit"}},
		{"unknown field", "", "", `{"heartbeat": "2s"}`, []string{"heartbeat", "valid fields"}},
		{"timeout not above interval", "", "", `{"heartbeat_interval": "5s", "heartbeat_timeout": "5s"}`,
			[]string{"heartbeat_timeout", "5s", "15s"}},
		{"multiplier below one", "", "", `{"backoff_multiplier": 0.5}`, []string{"backoff_multiplier", "0.5"}},
		{"multiplier too large", "", "", `{"backoff_multiplier": 1e300}`, []string{"backoff_multiplier", "1e+300", "1 to 10"}},
		{"multiplier as string", "", "", `{"backoff_multiplier": "2"}`, []string{"backoff_multiplier", `"2"`}},
		{"cap below base", "", "", `{"backoff_base": "2s", "backoff_cap": "1s"}`,
			[]string{"backoff_cap", "1s", "2s"}},
		{"zero base", "", "", `{"backoff_base": "0s"}`, []string{"backoff_base", "0s"}},
		{"negative healthy_after", "", "", `{"healthy_after": "-1s"}`, []string{"healthy_after", "-1s"}},
		{"frame limit too large", "", "", `{"max_frame_bytes": 100000000}`,
			[]string{"max_frame_bytes: 100000000 is too large; use 1024 to 16777216, default 4194304"}},
		{"fractional fatal_after", "", "", `{"fatal_after": 2.5}`,
			[]string{"fatal_after: invalid integer 2.5; use a whole number from 1 to 1000, default 5"}},
		{"zero fatal_after", "", "", `{"fatal_after": 0}`, []string{"fatal_after: 0 is too small; use 1 to 1000"}},
		{"huge fatal_after", "", "", `{"fatal_after": 9223372036854775807}`,
			[]string{"fatal_after: 9223372036854775807 is too large; use 1 to 1000"}},
		{"send queue of max int64", "", "", `{"send_queue_frames": 9223372036854775807}`,
			[]string{"send_queue_frames: 9223372036854775807 is too large; use 1 to 65536, default 256"}},
		{"send queue zero", "", "", `{"send_queue_frames": 0}`,
			[]string{"send_queue_frames: 0 is too small; use 1 to 65536"}},
		{"send queue as string", "", "", `{"send_queue_frames": "5"}`,
			[]string{`send_queue_frames: invalid integer "5"; use a whole number from 1 to 65536`}},
		{"replay frames too large", "", "", `{"replay_buffer_frames": 9223372036854775807}`,
			[]string{"replay_buffer_frames: 9223372036854775807 is too large; use 1 to 1048576, default 4096"}},
		{"replay bytes too large", "", "", `{"replay_buffer_bytes": 9223372036854775807}`,
			[]string{"replay_buffer_bytes: 9223372036854775807 is too large; use 1024 to 268435456"}},
		{"replay bytes too small", "", "", `{"replay_buffer_bytes": 10}`,
			[]string{"replay_buffer_bytes: 10 is too small; use 1024 to 268435456"}},
		{"failure threshold too large", "", "", `{"failure_threshold": 9223372036854775807}`,
			[]string{"failure_threshold: 9223372036854775807 is too large; use 1 to 10000, default 10"}},
		{"max attempts too large", "", "", `{"max_attempts": 9223372036854775807}`,
			[]string{"max_attempts: 9223372036854775807 is too large; use 0 to 10000, default 0"}},
		{"negative max attempts", "", "", `{"max_attempts": -1}`,
			[]string{"max_attempts: -1 is too small; use 0 to 10000"}},
		{"heartbeat interval of a nanosecond", "", "", `{"heartbeat_interval": "1ns"}`,
			[]string{`heartbeat_interval: duration "1ns" is too short; use "50ms" to "1m", default "2s"`}},
		{"heartbeat interval too long", "", "", `{"heartbeat_interval": "2m", "heartbeat_timeout": "6m"}`,
			[]string{`heartbeat_interval: duration "2m" is too long; use "50ms" to "1m"`}},
		{"heartbeat timeout of a nanosecond", "", "", `{"heartbeat_timeout": "1ns"}`,
			[]string{`heartbeat_timeout: duration "1ns" is too short; use "150ms" to "10m", default "6s"`}},
		{"heartbeat timeout too long", "", "", `{"heartbeat_timeout": "1h"}`,
			[]string{`heartbeat_timeout: duration "1h" is too long; use "150ms" to "10m"`}},
		{"adapted heartbeat bound too long", "", "", `{"max_heartbeat_timeout": "2h"}`,
			[]string{`max_heartbeat_timeout: duration "2h" is too long; use "0s" to "40m"`}},
		{"duration beyond time.Duration", "", "", `{"backoff_cap": "100000000h"}`,
			[]string{`backoff_cap: duration "100000000h" is too large; use at most "1h"`}},
		{"negative send timeout", "", "", `{"send_timeout": "-1s"}`,
			[]string{`send_timeout: duration "-1s" is too short; use "1ms" to "1h", default "30s"`}},
		{"zero circuit cooldown", "", "", `{"circuit_cooldown": "0s"}`,
			[]string{`circuit_cooldown: duration "0s" is too short; use "1ms" to "1h"`}},
		{"not an object", "", "", `[1]`, []string{"invalid reconnection plugin config"}},
		{"trailing data", "", "", `{} {}`, []string{"trailing"}},
		{"bad url scheme", "ftp://x", "", "", []string{"coordinator.url", "ftp://x"}},
		{"missing worker_id", "", " ", "", []string{"worker_id", "missing"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := connectorConfig("ws://127.0.0.1:7070", tc.json)
			if tc.url != "" {
				in.Url = tc.url
			}
			if tc.worker != "" {
				in.WorkerId = tc.worker
			}
			_, err := ParseConfig(in)
			require.Error(t, err)
			for _, want := range tc.want {
				assert.Contains(t, err.Error(), want)
			}
		})
	}
}

func TestParseConfigNil(t *testing.T) {
	_, err := ParseConfig((*pb.ConnectorConfig)(nil))
	assert.Error(t, err)
}
