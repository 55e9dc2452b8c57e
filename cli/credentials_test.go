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
	require.Regexp(t, `^dtfc_\S+\n$`, stdout.String(), "standard output holds the secret alone")

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
	assert.Contains(t, stderr.String(), "Old credential")
	assert.Regexp(t, `^dtfc_\S+\n$`, stdout.String(), "standard output holds the new secret alone")
}

func TestCredentialsCreateKeepsExistingSecretFile(t *testing.T) {
	dir := t.TempDir()
	config := filepath.Join(dir, "coordinator.hcl")
	require.NoError(t, os.WriteFile(config, []byte("listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n"), 0o600))
	secretFile := filepath.Join(dir, "worker.secret")
	require.NoError(t, os.WriteFile(secretFile, []byte("secret of worker-1\n"), 0o600))

	app, _, stderr := testApp("", false)
	assert.Equal(t, ExitError, runApp(app, "credentials", "create", "-config", config, "-worker", "worker-2",
		"-secret-file", secretFile))
	assert.Contains(t, stderr.String(), "-secret-file "+secretFile+" exists")
	data, err := os.ReadFile(secretFile)
	require.NoError(t, err)
	assert.Equal(t, "secret of worker-1\n", string(data), "create replaced an existing secret file")

	app, stdout, stderr := testApp("", false)
	require.Equal(t, ExitOK, runApp(app, "credentials", "list", "-config", config, "-worker", "worker-2"),
		stderr.String())
	assert.NotContains(t, stdout.String(), "active", "the refused create stored a credential")
}

func TestCredentialsCreateRejectsInvalidWorkerID(t *testing.T) {
	dir := t.TempDir()
	config := filepath.Join(dir, "coordinator.hcl")
	require.NoError(t, os.WriteFile(config, []byte("listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n"), 0o600))
	app, stdout, stderr := testApp("", false)
	assert.Equal(t, ExitError, runApp(app, "credentials", "create", "-config", config, "-worker", "worker\n1"))
	assert.Contains(t, stderr.String(), `worker_id "worker\n1" has the character '\n'`)
	assert.Empty(t, stdout.String())
}

// A create on a config whose data_dir has no store, such as a mistyped
// one, reports that it made a new store and where.
func TestCredentialsCreateReportsNewStore(t *testing.T) {
	dir := t.TempDir()
	config := filepath.Join(dir, "coordinator.hcl")
	require.NoError(t, os.WriteFile(config, []byte("listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n"), 0o600))
	storePath := filepath.Join(dir, "data", "coordinator.db")

	app, _, stderr := testApp("", false)
	require.Equal(t, ExitOK, runApp(app, "credentials", "create", "-config", config, "-worker", "worker-1"),
		stderr.String())
	assert.Contains(t, stderr.String(), "Created a new, empty coordinator store at "+storePath)
	assert.Contains(t, stderr.String(), "fix data_dir in "+config)

	app, _, stderr = testApp("", false)
	require.Equal(t, ExitOK, runApp(app, "credentials", "create", "-config", config, "-worker", "worker-2"),
		stderr.String())
	assert.NotContains(t, stderr.String(), "new, empty coordinator store", "the store existed")
}

// The guidance names the secret file by its absolute path, because
// worker.hcl resolves a relative secret_file against its own folder.
func TestCredentialsCreatePrintsAbsoluteSecretFile(t *testing.T) {
	dir := t.TempDir()
	config := filepath.Join(dir, "coordinator.hcl")
	require.NoError(t, os.WriteFile(config, []byte("listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n"), 0o600))
	t.Chdir(dir)

	app, stdout, stderr := testApp("", false)
	require.Equal(t, ExitOK, runApp(app, "credentials", "create", "-config", config, "-worker", "worker-4",
		"-secret-file", "w4.secret"), stderr.String())
	assert.Empty(t, stdout.String())
	want := filepath.Join(dir, "w4.secret")
	assert.FileExists(t, want)
	assert.Contains(t, stderr.String(), "The secret is in "+want+".")
	assert.Contains(t, stderr.String(), `secret_file = "`+want+`"`)
}
