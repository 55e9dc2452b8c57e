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
		{"multiplier as string", "", "", `{"backoff_multiplier": "2"}`, []string{"backoff_multiplier", `"2"`}},
		{"cap below base", "", "", `{"backoff_base": "2s", "backoff_cap": "1s"}`,
			[]string{"backoff_cap", "1s", "2s"}},
		{"zero base", "", "", `{"backoff_base": "0s"}`, []string{"backoff_base", "0s"}},
		{"negative healthy_after", "", "", `{"healthy_after": "-1s"}`, []string{"healthy_after", "-1s"}},
		{"frame limit too large", "", "", `{"max_frame_bytes": 100000000}`,
			[]string{"max_frame_bytes", "100000000"}},
		{"fractional fatal_after", "", "", `{"fatal_after": 2.5}`, []string{"fatal_after", "2.5"}},
		{"zero fatal_after", "", "", `{"fatal_after": 0}`, []string{"fatal_after", "0"}},
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
