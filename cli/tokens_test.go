package cli

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/coordinator"
	coordconfig "github.com/dtf-io/dtf/coordinator/config"
	"github.com/dtf-io/dtf/internal/testcert"
)

var tokenPattern = regexp.MustCompile(`dtfa_[A-Za-z0-9_-]{43}`)

// startCoordinator writes a coordinator config with extra settings into a
// temporary folder, starts the coordinator on 127.0.0.1 and returns the
// config's path and the listener address.
func startCoordinator(t *testing.T, extra string) (string, string) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "coordinator.hcl")
	require.NoError(t, os.WriteFile(path, []byte("listen = \"127.0.0.1:0\"\n"+extra), 0o600))
	cfg, err := coordconfig.Load(path)
	require.NoError(t, err)
	srv, err := coordinator.New(cfg, hclog.NewNullLogger())
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	return path, srv.Addr()
}

func TestTokensCommandAndAPIAccess(t *testing.T) {
	config, addr := startCoordinator(t, "api {\n  auth = \"token\"\n}\n")
	url := "http://" + addr

	app, stdout, stderr := testApp(url, false)
	require.Equal(t, ExitOK, runApp(app, "tokens", "create", "-config", config, "-role", "read", "-name", "ci"),
		stderr.String())
	token := tokenPattern.FindString(stdout.String())
	require.NotEmpty(t, token, "create output: %s", stdout.String())
	assert.Equal(t, token+"\n", stdout.String(), "standard output holds the token alone")

	// Without a token the API rejects the request and names the command that creates one.
	app, _, stderr = testApp(url, false)
	assert.Equal(t, ExitError, runApp(app, "tasks"))
	assert.Contains(t, stderr.String(), "401")
	assert.Contains(t, stderr.String(), "dtf tokens create")

	// -token and DTF_API_TOKEN both send it.
	app, _, stderr = testApp(url, false)
	assert.Equal(t, ExitOK, runApp(app, "tasks", "-token", token), stderr.String())
	app, _, stderr = testApp(url, false)
	app.Getenv = overrideEnv(app.Getenv, tokenEnv, token)
	assert.Equal(t, ExitOK, runApp(app, "workers"), stderr.String())

	// A read token cannot submit.
	app, _, stderr = testApp(url, false)
	assert.Equal(t, ExitError, runApp(app, "submit", "-token", token, "-type", "command", "--", "true"))
	assert.Contains(t, stderr.String(), "403")
	assert.Contains(t, stderr.String(), "role submit")

	// list shows the record without the token; revoke ends it.
	app, stdout, stderr = testApp(url, false)
	require.Equal(t, ExitOK, runApp(app, "tokens", "list", "-config", config), stderr.String())
	assert.Contains(t, stdout.String(), "ci")
	assert.Contains(t, stdout.String(), "active")
	assert.NotContains(t, stdout.String(), token)
	id := regexp.MustCompile(`(?m)^([0-9a-f]{16}) `).FindStringSubmatch(stdout.String())
	require.Len(t, id, 2, "list output: %s", stdout.String())

	app, _, stderr = testApp(url, false)
	require.Equal(t, ExitOK, runApp(app, "tokens", "revoke", "-config", config, "-id", id[1]), stderr.String())
	app, _, stderr = testApp(url, false)
	assert.Equal(t, ExitError, runApp(app, "tasks", "-token", token))
	assert.Contains(t, stderr.String(), "revoked or expired")
}

func TestTokensCommandRejectsBadFlags(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"no subcommand", []string{"tokens"}, "tokens needs a subcommand"},
		{"unknown subcommand", []string{"tokens", "rotate"}, `unknown tokens subcommand "rotate"`},
		{"no config", []string{"tokens", "list"}, "needs -config FILE"},
		{"bad role", []string{"tokens", "create", "-config", "c.hcl", "-role", "admin"},
			`-role read or -role submit, got "admin"`},
		{"revoke without id", []string{"tokens", "revoke", "-config", "c.hcl"}, "needs -id ID"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			app, _, stderr := testApp("", false)
			assert.Equal(t, ExitError, runApp(app, tc.args...))
			assert.Contains(t, stderr.String(), tc.want)
		})
	}
}

func TestClientCAFileForHTTPS(t *testing.T) {
	ca, err := testcert.NewCA("dtf test CA")
	require.NoError(t, err)
	files, err := ca.WriteServerFiles(t.TempDir(), "127.0.0.1")
	require.NoError(t, err)
	_, addr := startCoordinator(t, "tls {\n  cert_file = \""+files.CertFile+"\"\n  key_file = \""+
		files.KeyFile+"\"\n}\n")
	url := "https://" + addr

	app, _, stderr := testApp(url, false)
	assert.Equal(t, ExitOK, runApp(app, "tasks", "-ca-file", files.CAFile), stderr.String())

	app, _, stderr = testApp(url, false)
	app.Getenv = overrideEnv(app.Getenv, caFileEnv, files.CAFile)
	assert.Equal(t, ExitOK, runApp(app, "workers"), stderr.String())

	// Without the CA the system roots do not trust the test certificate.
	app, _, stderr = testApp(url, false)
	assert.Equal(t, ExitError, runApp(app, "tasks"))
	assert.Contains(t, stderr.String(), "certificate")

	app, _, stderr = testApp(url, false)
	assert.Equal(t, ExitError, runApp(app, "tasks", "-ca-file", files.CertFile+".missing"))
	assert.Contains(t, stderr.String(), "-ca-file")
}

// The help of a command that talks to the API must not print the token
// that DTF_API_TOKEN holds, while the client still sends it.
func TestHelpDoesNotPrintTokenFromEnvironment(t *testing.T) {
	const secret = "dtfa_not-for-help-output"
	for _, command := range []string{"tasks", "workers", "watch", "submit", "run", "cancel"} {
		app, stdout, stderr := testApp("http://127.0.0.1:1", false)
		app.Getenv = func(name string) string {
			return map[string]string{tokenEnv: secret}[name]
		}
		runApp(app, command, "-h")
		assert.NotContains(t, stdout.String()+stderr.String(), secret, "dtf %s -h", command)
	}

	app, _, _ := testApp("http://127.0.0.1:1", false)
	app.Getenv = func(name string) string { return map[string]string{tokenEnv: secret}[name] }
	fs := app.newFlagSet("tasks", "")
	addr := app.addrFlag(fs)
	require.NoError(t, fs.Parse(nil))
	client, err := app.client(*addr)
	require.NoError(t, err)
	assert.Equal(t, secret, client.Token, "the client no longer sends the token from the environment")
}
