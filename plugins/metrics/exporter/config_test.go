package exporter

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseConfigDefaults(t *testing.T) {
	for _, input := range []string{"", "{}", "  "} {
		cfg, err := ParseConfig([]byte(input))
		require.NoError(t, err, "input %q", input)
		assert.Equal(t, DefaultListen, cfg.Listen)
		assert.False(t, cfg.Insecure)
		assert.Equal(t, DefaultSummaryInterval, cfg.SummaryInterval)
	}
}

func TestParseConfigValid(t *testing.T) {
	tests := []struct {
		name     string
		input    string
		listen   string
		insecure bool
		interval time.Duration
	}{
		{"loopback v4", `{"listen":"127.0.0.1:9500","summary_interval":"1m"}`, "127.0.0.1:9500", false, time.Minute},
		{"loopback v6", `{"listen":"[::1]:9500"}`, "[::1]:9500", false, DefaultSummaryInterval},
		{"localhost", `{"listen":"localhost:0"}`, "localhost:0", false, DefaultSummaryInterval},
		{"public with insecure", `{"listen":"0.0.0.0:9464","insecure":true}`, "0.0.0.0:9464", true,
			DefaultSummaryInterval},
		{"shortest interval", `{"summary_interval":"100ms"}`, DefaultListen, false, 100 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := ParseConfig([]byte(tt.input))
			require.NoError(t, err)
			assert.Equal(t, tt.listen, cfg.Listen)
			assert.Equal(t, tt.insecure, cfg.Insecure)
			assert.Equal(t, tt.interval, cfg.SummaryInterval)
		})
	}
}

func TestParseConfigErrors(t *testing.T) {
	tests := []struct {
		name  string
		input string
		// path is the setting that the problem names, want a part of its
		// detail.
		path string
		want string
	}{
		{"public without insecure", `{"listen":"0.0.0.0:9464"}`, "listen",
			`listen "0.0.0.0:9464" is not a loopback address`},
		{"all interfaces", `{"listen":":9464"}`, "listen", "set insecure = true"},
		{"no port", `{"listen":"127.0.0.1"}`, "listen", `listen "127.0.0.1" is not host:port`},
		{"bad port", `{"listen":"127.0.0.1:http"}`, "listen", `invalid port "http"`},
		{"listen not a string", `{"listen":9464}`, "listen", "listen must be a string"},
		{"interval without unit", `{"summary_interval":"15"}`, "summary_interval",
			`summary_interval "15" is not a duration`},
		{"interval too short", `{"summary_interval":"10ms"}`, "summary_interval",
			`summary_interval "10ms" is out of range`},
		{"interval too long", `{"summary_interval":"2h"}`, "summary_interval", "use 100ms to 1h0m0s"},
		{"interval a number", `{"summary_interval":15}`, "summary_interval", "must be a string with a unit"},
		{"unknown setting", `{"port":9464}`, "port", `the metrics plugin has no setting "port"`},
		{"wrong type", `{"insecure":"yes"}`, "insecure", "insecure must be true or false"},
		{"not an object", `[1]`, "", "the config is not a JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tt.input))
			var invalid *ConfigError
			require.ErrorAs(t, err, &invalid)
			require.Len(t, invalid.Problems, 1)
			assert.Equal(t, tt.path, invalid.Problems[0].Path)
			assert.Contains(t, invalid.Problems[0].Detail, tt.want)
			assert.NotEmpty(t, invalid.Problems[0].Summary)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
}

// Every invalid setting is reported, not only the first one.
func TestParseConfigReportsEveryProblem(t *testing.T) {
	_, err := ParseConfig([]byte(`{"listen":"0.0.0.0:1","summary_interval":"1ns","color":"red"}`))
	var invalid *ConfigError
	require.ErrorAs(t, err, &invalid)
	var paths []string
	for _, problem := range invalid.Problems {
		paths = append(paths, problem.Path)
	}
	assert.ElementsMatch(t, []string{"listen", "summary_interval", "color"}, paths)
}
