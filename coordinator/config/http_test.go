package config

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestHTTPTimeoutDefaults(t *testing.T) {
	cfg, err := Load(writeConfig(t, ""))
	require.NoError(t, err)
	assert.Equal(t, 10*time.Second, cfg.HTTPReadHeaderTimeout)
	assert.Equal(t, time.Minute, cfg.HTTPReadTimeout)
	assert.Equal(t, 2*time.Minute, cfg.HTTPIdleTimeout)
}

func TestHTTPTimeoutsFromFile(t *testing.T) {
	cfg, err := Load(writeConfig(t, `
http_read_header_timeout = "2s"
http_read_timeout        = "30s"
http_idle_timeout        = "90s"
`))
	require.NoError(t, err)
	assert.Equal(t, 2*time.Second, cfg.HTTPReadHeaderTimeout)
	assert.Equal(t, 30*time.Second, cfg.HTTPReadTimeout)
	assert.Equal(t, 90*time.Second, cfg.HTTPIdleTimeout)
}

func TestHTTPTimeoutsRejected(t *testing.T) {
	cases := []struct {
		name string
		text string
		want []string
	}{
		{"header timeout too short", "http_read_header_timeout = \"10ms\"\n",
			[]string{"coordinator.hcl:1:28", `http_read_header_timeout "10ms" is too short; use "100ms" to "5m"`}},
		{"read timeout too long", "http_read_timeout = \"2h\"\n",
			[]string{"coordinator.hcl:1:21", `http_read_timeout "2h" is too long; use "1s" to "1h"`}},
		{"idle timeout without unit", "http_idle_timeout = \"120\"\n",
			[]string{"coordinator.hcl:1:21", `has no unit`}},
		{"read timeout under header timeout", "http_read_header_timeout = \"20s\"\nhttp_read_timeout = \"5s\"\n",
			[]string{"http_read_timeout 5s is shorter than http_read_header_timeout 20s"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(writeConfig(t, tc.text))
			require.Error(t, err)
			for _, want := range tc.want {
				assert.Contains(t, err.Error(), want)
			}
		})
	}
}

// A configuration built in code cannot turn a timeout off by leaving it
// zero, which net/http reads as no limit.
func TestHTTPTimeoutZeroRejected(t *testing.T) {
	cfg := Default("127.0.0.1:0", t.TempDir())
	cfg.HTTPReadHeaderTimeout = 0
	cfg.HTTPIdleTimeout = 0
	err := cfg.Validate()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "http_read_header_timeout 0s must be positive")
	assert.Contains(t, err.Error(), "http_idle_timeout 0s must be positive")
}
