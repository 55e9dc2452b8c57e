package host

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/sdk"
)

const secretFileWarning = "secret_file can be read or written by group or others"

// replaceFile writes data to path through a new file and a rename, as
// `dtf credentials rotate -secret-file` does, with mode perm.
func replaceFile(t *testing.T, path, data string, perm os.FileMode) {
	t.Helper()
	tmp := path + ".new"
	require.NoError(t, os.WriteFile(tmp, []byte(data), 0o600))
	require.NoError(t, os.Chmod(tmp, perm))
	require.NoError(t, os.Rename(tmp, path))
}

func TestSecretFileCheckWarnsOncePerVersion(t *testing.T) {
	path := filepath.Join(t.TempDir(), "worker.secret")
	replaceFile(t, path, "dtfc_first\n", 0o644)
	logs := &logBuffer{}
	logger := hclog.New(&hclog.LoggerOptions{Output: logs})
	check := &secretFileCheck{path: path}

	require.True(t, check.check(logger), "a file that others can read")
	line := logs.String()
	assert.Contains(t, line, secretFileWarning)
	assert.Contains(t, line, "secret_file="+path)
	assert.Contains(t, line, "mode=0644")
	assert.Contains(t, line, `fix="chmod 600 `+path+`"`)
	assert.False(t, check.check(logger), "the same file warns once")

	require.NoError(t, os.Chmod(path, 0o600))
	assert.False(t, check.check(logger), "a file only its owner can read")

	replaceFile(t, path, "dtfc_second\n", 0o660)
	assert.True(t, check.check(logger), "a new file that the group can write")
	assert.Contains(t, logs.String(), "mode=0660")

	require.NoError(t, os.Remove(path))
	assert.False(t, check.check(logger), "a missing file is left to the connector")
	replaceFile(t, path, "dtfc_second\n", 0o604)
	assert.True(t, check.check(logger), "a file created again after it was removed")
	assert.Equal(t, 3, strings.Count(logs.String(), secretFileWarning))
}

func TestHostWarnsAboutOpenSecretFile(t *testing.T) {
	cfg := testConfig(t, "runner")
	cfg.Coordinator.SecretFile = filepath.Join(t.TempDir(), "worker.secret")
	replaceFile(t, cfg.Coordinator.SecretFile, "dtfc_first\n", 0o644)

	hs := startHost(t, cfg, map[string]sdk.Executor{"runner": &testExecutor{name: "r", types: []string{"block"}}},
		func(h *Host) { h.secretFileInterval = 20 * time.Millisecond })
	nextConnector(t, hs)
	assert.Equal(t, 1, strings.Count(hs.logs.String(), secretFileWarning), "the host warns at start")

	// A rotation replaces the file; the host warns about the new one.
	replaceFile(t, cfg.Coordinator.SecretFile, "dtfc_second\n", 0o640)
	require.Eventually(t, func() bool {
		return strings.Count(hs.logs.String(), secretFileWarning) == 2
	}, waitFor, 10*time.Millisecond)
	assert.Contains(t, hs.logs.String(), "mode=0640")
	require.NoError(t, hs.stop(t))
}
