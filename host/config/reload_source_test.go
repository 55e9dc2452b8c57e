package config

import (
	"os"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A plugin block read again from a changed file renders its diagnostics
// with the new file's source lines, as a reload of the connector needs;
// the Config loaded first keeps the old lines.
func TestPluginDiagnosticsUseItsOwnSource(t *testing.T) {
	path := writeWorkerConfig(t, validConfig)
	first, err := Load(path)
	require.NoError(t, err)

	// Three comment lines push the connector block down, and its
	// heartbeat changes, as an operator's edit before a reload might.
	changed := "# one\n# two\n# three\n" + strings.Replace(validConfig, `heartbeat_interval = "2s"`,
		`heartbeat_interval = "3s"`, 1)
	require.NoError(t, os.WriteFile(path, []byte(changed), 0o644))
	second, err := Load(path)
	require.NoError(t, err)

	connector := second.Connector()
	rng, ok := connector.location.configValues["heartbeat_interval"]
	require.True(t, ok, "no range for heartbeat_interval")
	diag := hcl.Diagnostics{located(rng, "Invalid plugin config", "test problem")}
	rendered, ok := connector.Diagnostics(diag)
	require.True(t, ok)
	assert.Contains(t, rendered.Error(), `heartbeat_interval = "3s"`, "the new file's lines")
	assert.NotContains(t, rendered.Error(), `heartbeat_interval = "2s"`)

	stale := first.Diagnostics(diag).Error()
	assert.NotContains(t, stale, `heartbeat_interval = "3s"`, "the first Config keeps its own source")

	_, ok = Plugin{}.Diagnostics(diag)
	assert.False(t, ok, "a block that Load did not make has no source")
}
