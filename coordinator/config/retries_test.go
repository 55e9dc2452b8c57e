package config

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestLoadRetrySettings(t *testing.T) {
	cfg, err := Load(writeConfig(t, ""))
	require.NoError(t, err)
	assert.Equal(t, time.Second, cfg.RetryBackoffBase)
	assert.Equal(t, 5*time.Minute, cfg.RetryBackoffMax)
	assert.Equal(t, 30*time.Second, cfg.TaskTimeoutGrace)

	cfg, err = Load(writeConfig(t, `
retry_backoff_base = "0s"
retry_backoff_max  = "0s"
task_timeout_grace = "2m"
`))
	require.NoError(t, err)
	assert.Zero(t, cfg.RetryBackoffBase, "a base of 0 retries at once")
	assert.Zero(t, cfg.RetryBackoffMax)
	assert.Equal(t, 2*time.Minute, cfg.TaskTimeoutGrace)
}

func TestLoadRetrySettingErrors(t *testing.T) {
	cases := []struct {
		name string
		text string
		want []string
	}{
		{"base too long", "retry_backoff_base = \"2h\"\n",
			[]string{"coordinator.hcl:1:22", `retry_backoff_base "2h" is too long; use "0s" to "1h"`}},
		{"max too long", "retry_backoff_max = \"48h\"\n",
			[]string{`retry_backoff_max "48h" is too long; use "0s" to "24h"`}},
		{"max below base", "retry_backoff_base = \"10s\"\nretry_backoff_max = \"5s\"\n",
			[]string{"retry_backoff_max 5s is shorter than retry_backoff_base 10s; raise retry_backoff_max to at least 10s"}},
		{"grace too short", "task_timeout_grace = \"10ms\"\n",
			[]string{`task_timeout_grace "10ms" is too short; use "1s" to "24h"`}},
		{"grace without unit", "task_timeout_grace = 30\n",
			[]string{"Duration without unit"}},
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

func TestValidateRetrySettingsInCode(t *testing.T) {
	cfg := Default("127.0.0.1:0", t.TempDir())
	cfg.RetryBackoffBase = -time.Second
	cfg.TaskTimeoutGrace = 0
	err := cfg.Validate()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "retry_backoff_base -1s is negative; use 0 to retry at once")
	assert.Contains(t, err.Error(), "task_timeout_grace 0s must be positive")
}
