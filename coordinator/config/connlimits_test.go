package config

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestConnectionRateDefaults(t *testing.T) {
	cfg, err := Load(writeConfig(t, ""))
	require.NoError(t, err)
	assert.Equal(t, 20, cfg.Workers.ConnectionsPerSecondPerAddress)
	assert.Equal(t, 100, cfg.Workers.ConnectionBurstPerAddress)
}

func TestConnectionRateFromFile(t *testing.T) {
	cfg, err := Load(writeConfig(t, `
workers {
  connections_per_second_per_address = 5
  connection_burst_per_address       = 50
}
`))
	require.NoError(t, err)
	assert.Equal(t, 5, cfg.Workers.ConnectionsPerSecondPerAddress)
	assert.Equal(t, 50, cfg.Workers.ConnectionBurstPerAddress)
}

func TestConnectionRateRejected(t *testing.T) {
	cases := []struct {
		name string
		text string
		want []string
	}{
		{"rate zero", "workers {\n  connections_per_second_per_address = 0\n}\n",
			[]string{"coordinator.hcl:2:40",
				"workers.connections_per_second_per_address 0 is too small; use 1 to 100000, default 20"}},
		{"burst too large", "workers {\n  connection_burst_per_address = 1000000\n}\n",
			[]string{"coordinator.hcl:2:34",
				"workers.connection_burst_per_address 1000000 is too large; use 1 to 100000, default 100"}},
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

// A configuration built in code cannot switch the limit off with zero.
func TestConnectionRateZeroRejectedByValidate(t *testing.T) {
	cfg := Default("127.0.0.1:0", t.TempDir())
	cfg.Workers.ConnectionsPerSecondPerAddress = 0
	cfg.Workers.ConnectionBurstPerAddress = 0
	err := cfg.Validate()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "workers.connections_per_second_per_address 0 is too small")
	assert.Contains(t, err.Error(), "workers.connection_burst_per_address 0 is too small")
}

func TestMaxDecodedBytes(t *testing.T) {
	cfg, err := Load(writeConfig(t, ""))
	require.NoError(t, err)
	assert.Equal(t, 0, cfg.Workers.MaxDecodedBytes)
	assert.Equal(t, cfg.Workers.MaxFrameBytes, cfg.Workers.DecodedLimit(), "0 means max_frame_bytes")

	cfg, err = Load(writeConfig(t, "workers {\n  max_decoded_bytes = 8388608\n}\n"))
	require.NoError(t, err)
	assert.Equal(t, 8<<20, cfg.Workers.DecodedLimit())
}

func TestMaxDecodedBytesRejected(t *testing.T) {
	cases := []struct {
		name string
		text string
		want string
	}{
		{"below max_frame_bytes", "workers {\n  max_decoded_bytes = 2048\n}\n",
			"workers.max_decoded_bytes 2048 is smaller than workers.max_frame_bytes 4194304; " +
				"use 0 for the same limit or at least 4194304"},
		{"too large", "workers {\n  max_decoded_bytes = 33554432\n}\n",
			"workers.max_decoded_bytes 33554432 is too large; use 0 to 16777216, default 0"},
		{"negative", "workers {\n  max_decoded_bytes = -1\n}\n", "workers.max_decoded_bytes"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(writeConfig(t, tc.text))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}
