package config

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Several metrics plugins may be loaded; they keep their file order, and
// the connector and executors are unchanged.
func TestLoadMetricsPlugins(t *testing.T) {
	body := validConfig + `
plugin "prometheus" {
  kind = "metrics"
  path = "../bin/dtf-metrics"
  config {
    listen           = "127.0.0.1:9464"
    summary_interval = "5s"
  }
}
plugin "second" {
  kind = "metrics"
  path = "../bin/dtf-metrics"
}
`
	path := writeWorkerConfig(t, body)
	binary := filepath.Join(filepath.Dir(filepath.Dir(path)), "bin", "dtf-metrics")
	require.NoError(t, os.WriteFile(binary, []byte("#!/bin/sh\n"), 0o755))

	cfg, err := Load(path)
	require.NoError(t, err)
	metrics := cfg.MetricsPlugins()
	require.Len(t, metrics, 2)
	assert.Equal(t, "prometheus", metrics[0].Name)
	assert.Equal(t, "second", metrics[1].Name)
	assert.Equal(t, binary, metrics[0].Path)
	assert.JSONEq(t, `{"listen":"127.0.0.1:9464","summary_interval":"5s"}`, string(metrics[0].ConfigJSON))
	assert.JSONEq(t, `{}`, string(metrics[1].ConfigJSON))
	assert.Equal(t, "reconnection", cfg.Connector().Name)
	assert.Len(t, cfg.Executors(), 1)
}
