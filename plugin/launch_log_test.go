package plugin

import (
	"context"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestLaunchLogsBinaryPath(t *testing.T) {
	var out syncBuffer
	cfg := launchConfig(t, KindExecutor, KindExecutor)
	cfg.Logger = hclog.New(&hclog.LoggerOptions{Output: &out, Level: hclog.Info})
	client, err := Launch(context.Background(), cfg)
	require.NoError(t, err)
	defer client.Kill()

	line := lineContaining(out.String(), "plugin process started")
	require.NotEmpty(t, line, "no start line in %s", out.String())
	assert.Contains(t, line, "path="+cfg.Path)
	assert.Contains(t, line, "api_version=")
}
