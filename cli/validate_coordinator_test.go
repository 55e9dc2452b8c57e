package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// coordinatorDiagnostics returns the part of a dtf error output from the
// coordinator config's diagnostics heading to the end.
func coordinatorDiagnostics(t *testing.T, out string) string {
	t.Helper()
	start := strings.Index(out, "invalid coordinator config ")
	require.GreaterOrEqual(t, start, 0, "no coordinator diagnostics in output:\n%s", out)
	return strings.TrimSpace(out[start:])
}

// dtf validate on a broken coordinator config reports what dtf coordinator
// reports when it starts on the same file. The files are named so that the
// name does not reveal the kind.
func TestValidateMatchesCoordinatorStart(t *testing.T) {
	cases := []struct {
		name   string
		config string
		// want are parts of the diagnostics, each with file:line:col.
		want []string
	}{
		{"malformed HCL", "listen = \"127.0.0.1:7070\"\nmax_attempts = \n",
			[]string{"server.hcl:2:16: Invalid expression"}},
		{"stray plugin block", "listen = \"127.0.0.1:7070\"\nplugin \"x\" {\n  kind = \"executor\"\n}\n",
			[]string{"server.hcl:2:1: Unsupported block type"}},
		{"value and listen problems together",
			"listen = \"0.0.0.0:7171\"\nmax_attempts = 0\ntask_types = []\n",
			[]string{"server.hcl:1:10: Invalid listen", "server.hcl:2:16: Invalid max_attempts",
				"server.hcl:3:14: Invalid task_types"}},
		{"invalid port", "listen = \"127.0.0.1:99999\"\n",
			[]string{"server.hcl:1:10: Invalid listen", `invalid port "99999"`}},
		{"heartbeat in workers block", "workers {\n  heartbeat_interval = \"10s\"\n  heartbeat_timeout = \"5s\"\n}\n",
			[]string{"server.hcl:3:23: Invalid workers.heartbeat_timeout"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "server.hcl")
			require.NoError(t, os.WriteFile(path, []byte(c.config), 0o600))

			app, _, validateErr := testApp("", false)
			assert.Equal(t, ExitInvalidConfig, runApp(app, "validate", "-config", path))
			app, _, coordinatorErr := testApp("", false)
			assert.Equal(t, ExitError, runApp(app, "coordinator", "-config", path))

			fromValidate := coordinatorDiagnostics(t, validateErr.String())
			assert.Equal(t, coordinatorDiagnostics(t, coordinatorErr.String()), fromValidate)
			for _, want := range c.want {
				assert.Contains(t, fromValidate, want)
			}
		})
	}
}

func TestDetectKind(t *testing.T) {
	cases := []struct {
		name, config, want string
	}{
		{"worker", "data_dir = \"d\"\ncoordinator {\n  url = \"ws://x\"\n}\n", kindWorker},
		{"worker with listen typo", "listen = 1\ncoordinator {\n}\n", kindWorker},
		{"coordinator", "listen = \"127.0.0.1:7070\"\n", kindCoordinator},
		{"coordinator with plugin block", "task_types = [\"a\"]\nplugin \"x\" {\n}\n", kindCoordinator},
		{"plugin block only", "plugin \"x\" {\n}\n", kindWorker},
		{"shared settings only", "data_dir = \"d\"\n", kindCoordinator},
		{"broken after a coordinator setting", "max_attempts = 3\nslots = \n", kindCoordinator},
		{"broken with nothing to decide", "data_dir = \n", kindWorker},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "config.hcl")
			require.NoError(t, os.WriteFile(path, []byte(c.config), 0o600))
			assert.Equal(t, c.want, detectKind(path))
		})
	}
}
