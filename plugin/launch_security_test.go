package plugin

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/dtf-io/dtf/plugin/pb"
)

// copyTestBinary copies the test binary into a new folder, so a test can
// replace it without touching the binary that runs.
func copyTestBinary(t *testing.T) (string, string) {
	t.Helper()
	data, err := os.ReadFile(testBinary(t))
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "fake-plugin")
	require.NoError(t, os.WriteFile(path, data, 0o755))
	sum := sha256.Sum256(data)
	return path, hex.EncodeToString(sum[:])
}

// TestLaunchChecksumEveryLaunch launches one binary with its sum twice, so
// each launch needs its own SecureConfig, then replaces the file, as an
// attacker or a careless deploy would between a crash and the restart.
func TestLaunchChecksumEveryLaunch(t *testing.T) {
	path, good := copyTestBinary(t)
	cfg := launchConfig(t, KindExecutor, KindExecutor)
	cfg.Path = path
	cfg.SHA256 = good
	for i := range 2 {
		client, err := Launch(context.Background(), cfg)
		require.NoError(t, err, "launch %d with the right sum", i+1)
		client.Kill()
	}

	// The replacement is a working plugin too: only its sum differs.
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	data = append(data, []byte("replaced")...)
	replaced := sha256.Sum256(data)
	next := path + ".new"
	require.NoError(t, os.WriteFile(next, data, 0o755))
	require.NoError(t, os.Rename(next, path))

	_, err = Launch(context.Background(), cfg)
	require.ErrorIs(t, err, ErrChecksumMismatch)
	assert.Contains(t, err.Error(), "expected "+good)
	assert.Contains(t, err.Error(), "got "+hex.EncodeToString(replaced[:]))
	assert.Contains(t, err.Error(), path)

	cfg.SHA256 = ""
	client, err := Launch(context.Background(), cfg)
	require.NoError(t, err, "the replacement runs without a configured sum, so only the sum rejected it")
	client.Kill()
}

// TestPluginChannelRequiresHostCertificate dials the plugin's gRPC socket
// directly: without TLS, and with TLS but without the client certificate
// that go-plugin's AutoMTLS generated for the host, no call succeeds.
func TestPluginChannelRequiresHostCertificate(t *testing.T) {
	client, err := Launch(context.Background(), launchConfig(t, KindExecutor, KindExecutor))
	require.NoError(t, err)
	defer client.Kill()
	reattach := client.raw.ReattachConfig()
	require.NotNil(t, reattach)
	addr := reattach.Addr
	target := addr.String()
	if addr.Network() == "unix" {
		target = "unix://" + target
	}

	tlsNoCert := credentials.NewTLS(&tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12})
	for name, creds := range map[string]credentials.TransportCredentials{
		"plaintext":               insecure.NewCredentials(),
		"tls without client cert": tlsNoCert,
	} {
		t.Run(name, func(t *testing.T) {
			conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(creds))
			require.NoError(t, err)
			defer conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_, err = pb.NewExecutorClient(conn).Info(ctx, &pb.Empty{})
			require.Error(t, err, "a call without the host's certificate succeeded")
		})
	}

	// The host's own client still works.
	info, err := client.Executor().Info(context.Background(), &pb.Empty{})
	require.NoError(t, err)
	assert.Equal(t, "fake-executor", info.GetName())
}

// TestLaunchEnvironmentOnlyConfigured checks the environment of the plugin
// process: the entries of LaunchConfig.Env and go-plugin's own variables,
// and nothing of the host's environment.
func TestLaunchEnvironmentOnlyConfigured(t *testing.T) {
	t.Setenv("DTF_TEST_HOST_ONLY", "host-canary-value")
	cfg := launchConfig(t, KindExecutor, KindExecutor)
	cfg.Env = append(cfg.Env, "LISTED_BY_CONFIG=yes")
	client, err := Launch(context.Background(), cfg)
	require.NoError(t, err)
	defer client.Kill()

	environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", client.Pid()))
	if os.IsNotExist(err) {
		t.Skip("no /proc on this system")
	}
	require.NoError(t, err)
	entries := strings.Split(strings.TrimRight(string(environ), "\x00"), "\x00")
	assert.Contains(t, entries, "LISTED_BY_CONFIG=yes")
	assert.Contains(t, entries, testModeEnv+"="+KindExecutor)
	assert.NotContains(t, string(environ), "host-canary-value")
	for _, entry := range entries {
		name, _, _ := strings.Cut(entry, "=")
		configured := name == "LISTED_BY_CONFIG" || name == testModeEnv
		fromGoPlugin := strings.HasPrefix(name, "PLUGIN_") || name == Handshake.MagicCookieKey
		assert.True(t, configured || fromGoPlugin, "unexpected variable %s in the plugin's environment", name)
	}
	assert.Contains(t, string(environ), "PLUGIN_CLIENT_CERT=",
		"go-plugin's AutoMTLS passes the host's certificate")
}
