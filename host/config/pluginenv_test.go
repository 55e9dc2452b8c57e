package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/protocol"
)

// envConfig is a worker config whose coordinator block and plugin blocks
// the cases fill in.
const envConfig = `
data_dir = "../data"
coordinator {
  url       = "ws://127.0.0.1:7070"
  worker_id = "worker-1"
  %s
}
plugin "reconnection" {
  kind = "connector"
  path = "../bin/dtf-reconnection"
  env  = [%s]
}
plugin "command" {
  kind = "executor"
  path = "../bin/dtf-exec-command"
  env  = [%s]
}
plugin "stats" {
  kind = "metrics"
  path = "../bin/dtf-exec-gotest"
  env  = [%s]
}
`

func withEnv(credential, connector, executor, metrics string) string {
	text := envConfig
	for _, part := range []string{credential, connector, executor, metrics} {
		text = strings.Replace(text, "%s", part, 1)
	}
	return text
}

func TestPluginEnvRejectsWorkerCredential(t *testing.T) {
	secret, _, err := protocol.NewCredential()
	require.NoError(t, err)
	t.Setenv("DTF_TEST_WORKER_SECRET", secret)
	t.Setenv("DTF_TEST_SECRET_COPY", secret)
	t.Setenv("DTF_TEST_SECRET_IN_TEXT", "password="+secret+"\n")
	t.Setenv("DTF_TEST_WORKER_TOKEN", "token-4821")
	t.Setenv("DTF_TEST_TOKEN_COPY", " token-4821 ")
	const withSecret = `secret = env("DTF_TEST_WORKER_SECRET")`
	const withToken = `token = env("DTF_TEST_WORKER_TOKEN")`

	for name, tc := range map[string]struct {
		credential string
		executor   string
		metrics    string
		// writeFile writes the secret to worker.secret beside the config.
		writeFile bool
		plugin    string
		variable  string
		reason    string
	}{
		"secret name": {credential: withSecret, executor: `"DTF_WORKER_SECRET"`,
			plugin: "command", variable: "DTF_WORKER_SECRET", reason: "by convention contains the worker's secret"},
		"token name": {credential: withToken, executor: `"PATH", "DTF_WORKER_TOKEN"`,
			plugin: "command", variable: "DTF_WORKER_TOKEN", reason: "by convention contains the worker's token"},
		"secret value": {credential: withSecret, executor: `"DTF_TEST_SECRET_COPY"`,
			plugin: "command", variable: "DTF_TEST_SECRET_COPY", reason: "contains the worker's secret"},
		"secret inside value": {credential: withSecret, metrics: `"DTF_TEST_SECRET_IN_TEXT"`,
			plugin: "stats", variable: "DTF_TEST_SECRET_IN_TEXT", reason: "contains the worker's secret"},
		"secret_file value": {credential: `secret_file = "worker.secret"`, writeFile: true,
			executor: `"DTF_TEST_SECRET_COPY"`,
			plugin:   "command", variable: "DTF_TEST_SECRET_COPY", reason: "contains the worker's secret"},
		"token value": {credential: withToken, metrics: `"DTF_TEST_TOKEN_COPY"`,
			plugin: "stats", variable: "DTF_TEST_TOKEN_COPY", reason: "equals the worker's token"},
	} {
		t.Run(name, func(t *testing.T) {
			path := writeWorkerConfig(t, withEnv(tc.credential, "", tc.executor, tc.metrics))
			if tc.writeFile {
				require.NoError(t, os.WriteFile(filepath.Join(filepath.Dir(path), "worker.secret"),
					[]byte(secret+"\n"), 0o600))
			}
			_, err := Load(path)
			require.Error(t, err)
			text := err.Error()
			assert.Contains(t, text, "Worker credential in plugin env")
			assert.Regexp(t, `worker\.hcl:\d+:\d+`, text, "the diagnostic has a location")
			assert.Contains(t, text, `Plugin "`+tc.plugin+`"`)
			assert.Contains(t, text, "lists "+tc.variable+" in env, and that variable "+tc.reason)
			assert.Contains(t, text, "Remove "+tc.variable+" from env")
			assert.NotContains(t, text, secret, "the diagnostic shows the secret")
			assert.NotContains(t, text, "token-4821", "the diagnostic shows the token")
		})
	}
}

func TestPluginEnvAllowsOtherVariables(t *testing.T) {
	secret, _, err := protocol.NewCredential()
	require.NoError(t, err)
	t.Setenv("DTF_TEST_WORKER_SECRET", secret)
	t.Setenv("DTF_TEST_OTHER", "value")

	// The connector may list the variables, and other plugins may list
	// variables that hold something else or are not set.
	text := withEnv(`secret = env("DTF_TEST_WORKER_SECRET")`, `"DTF_WORKER_SECRET", "DTF_TEST_WORKER_SECRET"`,
		`"PATH", "DTF_TEST_OTHER", "DTF_TEST_UNSET"`, `"HOME"`)
	cfg, err := Load(writeWorkerConfig(t, text))
	require.NoError(t, err)
	assert.Equal(t, []string{"PATH", "DTF_TEST_OTHER", "DTF_TEST_UNSET"}, cfg.Executors()[0].Env)

	// A secret_file that does not exist yet is left to the connector.
	text = withEnv(`secret_file = "missing.secret"`, "", `"DTF_TEST_OTHER"`, "")
	_, err = Load(writeWorkerConfig(t, text))
	require.NoError(t, err)
}

func TestPluginArgsRejectWorkerCredential(t *testing.T) {
	secret, _, err := protocol.NewCredential()
	require.NoError(t, err)
	t.Setenv("DTF_TEST_WORKER_SECRET", secret)
	config := withEnv(`secret = env("DTF_TEST_WORKER_SECRET")`, "", "", "")
	config = strings.Replace(config, `  path = "../bin/dtf-exec-command"`,
		`  path = "../bin/dtf-exec-command"`+"\n"+`  args = ["-v", "--key=${env("DTF_TEST_WORKER_SECRET")}"]`, 1)
	path := writeWorkerConfig(t, config)

	_, err = Load(path)
	require.Error(t, err)
	message := err.Error()
	assert.Contains(t, message, "Worker credential in plugin args")
	assert.Contains(t, message, `Argument 2 of plugin "command" of kind "executor" contains the worker's secret`)
	assert.NotContains(t, message, secret[len(secret)-8:], "the diagnostic shows the secret")
}
