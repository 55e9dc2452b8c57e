package cli

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Rotating the credentials of a worker_id that has none, such as a typo
// after a leak, fails instead of creating a first credential while the
// leaked one stays active.
func TestCredentialsRotateNeedsActiveCredential(t *testing.T) {
	dir := t.TempDir()
	config := filepath.Join(dir, "coordinator.hcl")
	require.NoError(t, os.WriteFile(config, []byte("listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n"), 0o600))

	app, stdout, stderr := testApp("", false)
	require.Equal(t, ExitOK, runApp(app, "credentials", "create", "-config", config, "-worker", "worker-1"),
		stderr.String())
	require.Contains(t, stdout.String(), "dtfc_")

	app, _, stderr = testApp("", false)
	assert.Equal(t, ExitError, runApp(app, "credentials", "rotate", "-config", config, "-worker", "worker-l"))
	assert.Contains(t, stderr.String(), `worker "worker-l" has no active credential to rotate`)

	app, stdout, stderr = testApp("", false)
	require.Equal(t, ExitOK, runApp(app, "credentials", "list", "-config", config, "-worker", "worker-l"),
		stderr.String())
	assert.NotContains(t, stdout.String(), "active", "the failed rotation created a credential")

	app, stdout, stderr = testApp("", false)
	require.Equal(t, ExitOK, runApp(app, "credentials", "rotate", "-config", config, "-worker", "worker-1"),
		stderr.String())
	assert.Contains(t, stdout.String(), "Old credential")
}
