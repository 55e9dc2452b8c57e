package plugin

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"

	"github.com/dtf-io/dtf/plugin/pb"
)

// testModeEnv makes the test binary serve a fake plugin instead of running
// tests, so that the tests launch a real plugin process through go-plugin.
const testModeEnv = "DTF_PLUGIN_TEST_MODE"

func TestMain(m *testing.M) {
	switch os.Getenv(testModeEnv) {
	case KindExecutor:
		// The logger is made before serving, as NewLogger requires.
		ServeExecutor(&fakeExecutor{logger: NewLogger("fake")})
		return
	case KindConnector:
		ServeConnector(&fakeConnector{})
		return
	case brokenPipeMode:
		writeToClosedStderr()
		return
	}
	goleak.VerifyTestMain(m)
}

// brokenPipeMode makes the test binary write to its stderr after the
// reader went away, as a plugin does when its host died.
const brokenPipeMode = "broken-pipe"

func writeToClosedStderr() {
	surviveBrokenPipe()
	for range 3 {
		if _, err := os.Stderr.WriteString("host is gone\n"); err == nil {
			os.Exit(3) // the test closed the read end first; a write must fail
		}
	}
	os.Exit(0)
}

// A plugin whose host died must keep running to stop its tasks, even
// though every log line it writes now meets a closed pipe.
func TestPluginSurvivesClosedStderr(t *testing.T) {
	r, w, err := os.Pipe()
	require.NoError(t, err)
	require.NoError(t, r.Close())
	defer w.Close()

	cmd := exec.Command(testBinary(t))
	cmd.Env = append(os.Environ(), testModeEnv+"="+brokenPipeMode)
	cmd.Stderr = w
	err = cmd.Run()
	require.NoError(t, err, "the process died on a write to a closed stderr (state %v)", cmd.ProcessState)
}

type fakeExecutor struct {
	pb.UnimplementedExecutorServer
	logger hclog.Logger
}

func (e *fakeExecutor) Info(context.Context, *pb.Empty) (*pb.PluginInfo, error) {
	e.logger.Info("fake executor info called", "task_types", "echo")
	return &pb.PluginInfo{Name: "fake-executor", Version: "0.0.1", TaskTypes: []string{"echo"}}, nil
}

// Execute returns the payload as the result's output, so a test can send a
// large payload and check that it made the round trip.
func (*fakeExecutor) Execute(req *pb.ExecuteRequest, stream grpc.ServerStreamingServer[pb.ExecuteEvent]) error {
	return stream.Send(&pb.ExecuteEvent{Event: &pb.ExecuteEvent_Result{Result: &pb.Result{
		Status: pb.Status_STATUS_SUCCEEDED,
		Output: req.GetPayload(),
	}}})
}

type fakeConnector struct {
	pb.UnimplementedConnectorServer
}

func (fakeConnector) Info(context.Context, *pb.Empty) (*pb.PluginInfo, error) {
	return &pb.PluginInfo{Name: "fake-connector", Version: "0.0.1"}, nil
}

func testBinary(t *testing.T) string {
	t.Helper()
	path, err := os.Executable()
	require.NoError(t, err)
	return path
}

func launchConfig(t *testing.T, mode, kind string) LaunchConfig {
	return LaunchConfig{
		Name:         "fake",
		Kind:         kind,
		Path:         testBinary(t),
		Env:          []string{testModeEnv + "=" + mode},
		StartTimeout: 20 * time.Second,
	}
}

func TestLaunchExecutor(t *testing.T) {
	client, err := Launch(context.Background(), launchConfig(t, KindExecutor, KindExecutor))
	require.NoError(t, err)
	defer client.Kill()

	assert.Equal(t, "fake-executor", client.Info().GetName())
	assert.Equal(t, []string{"echo"}, client.Info().GetTaskTypes())
	assert.Nil(t, client.Connector())
	require.NotNil(t, client.Executor())

	// 8 MiB is over gRPC's 4 MiB default, so this checks the raised limit
	// on both the plugin's server and the host's client.
	payload := bytes.Repeat([]byte("x"), 8<<20)
	stream, err := client.Executor().Execute(context.Background(), &pb.ExecuteRequest{Payload: payload})
	require.NoError(t, err)
	event, err := stream.Recv()
	require.NoError(t, err)
	assert.Equal(t, pb.Status_STATUS_SUCCEEDED, event.GetResult().GetStatus())
	assert.Len(t, event.GetResult().GetOutput(), len(payload))

	client.Kill()
	assert.True(t, client.Exited())
}

func TestLaunchConnector(t *testing.T) {
	client, err := Launch(context.Background(), launchConfig(t, KindConnector, KindConnector))
	require.NoError(t, err)
	defer client.Kill()

	assert.Equal(t, "fake-connector", client.Info().GetName())
	assert.Nil(t, client.Executor())
	assert.NotNil(t, client.Connector())
}

func TestLaunchWrongKind(t *testing.T) {
	_, err := Launch(context.Background(), launchConfig(t, KindExecutor, KindConnector))
	require.ErrorIs(t, err, ErrNotPlugin)
	assert.Contains(t, err.Error(), "does not serve the connector service")
}

func TestLaunchChecksum(t *testing.T) {
	data, err := os.ReadFile(testBinary(t))
	require.NoError(t, err)
	sum := sha256.Sum256(data)
	good := hex.EncodeToString(sum[:])
	bad := strings.Repeat("0", 64)

	cfg := launchConfig(t, KindExecutor, KindExecutor)
	cfg.SHA256 = good
	client, err := Launch(context.Background(), cfg)
	require.NoError(t, err)
	client.Kill()

	cfg.SHA256 = bad
	_, err = Launch(context.Background(), cfg)
	require.ErrorIs(t, err, ErrChecksumMismatch)
	assert.Contains(t, err.Error(), "expected "+bad)
	assert.Contains(t, err.Error(), "got "+good)

	cfg.SHA256 = "abc"
	_, err = Launch(context.Background(), cfg)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "expected 64 hex digits")
}

func TestLaunchBadPath(t *testing.T) {
	dir := t.TempDir()
	notExecutable := filepath.Join(dir, "plain")
	require.NoError(t, os.WriteFile(notExecutable, []byte("#!/bin/sh\n"), 0o644))
	junk := filepath.Join(dir, "junk.sh")
	require.NoError(t, os.WriteFile(junk, []byte("#!/bin/sh\necho hello there\nsleep 1\n"), 0o755))
	truePath, err := findTrue()
	require.NoError(t, err)

	tests := []struct {
		name    string
		path    string
		wantErr error
		wantMsg string
	}{
		{"missing", filepath.Join(dir, "nope"), ErrPluginNotFound, "build it with make build"},
		{"directory", dir, ErrPluginNotExecutable, "is a directory"},
		{"not executable", notExecutable, ErrPluginNotExecutable, "chmod +x"},
		{"exits at once", truePath, ErrNotPlugin, "printed nothing"},
		{"prints junk", junk, ErrNotPlugin, `wrote "hello there" to stdout`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Launch(context.Background(), LaunchConfig{
				Name: "bad", Kind: KindExecutor, Path: tt.path, StartTimeout: 10 * time.Second,
			})
			require.ErrorIs(t, err, tt.wantErr)
			assert.Contains(t, err.Error(), tt.path)
			assert.Contains(t, err.Error(), tt.wantMsg)
		})
	}
}

func findTrue() (string, error) {
	for _, path := range []string{"/bin/true", "/usr/bin/true"} {
		if _, err := os.Stat(path); err == nil {
			return path, nil
		}
	}
	return "", errors.New("no true binary in /bin or /usr/bin")
}

func TestLaunchUnknownKind(t *testing.T) {
	_, err := Launch(context.Background(), LaunchConfig{Name: "x", Kind: "tracing", Path: testBinary(t)})
	require.Error(t, err)
	assert.Contains(t, err.Error(), `unknown plugin kind "tracing"`)
}

func TestLaunchRelaysLog(t *testing.T) {
	var out syncBuffer
	cfg := launchConfig(t, KindExecutor, KindExecutor)
	cfg.Name = "echo-runner"
	cfg.Logger = hclog.New(&hclog.LoggerOptions{Output: &out, Level: hclog.Info}).Named("echo-runner")
	client, err := Launch(context.Background(), cfg)
	require.NoError(t, err)
	defer client.Kill()

	// Info logs once on each call; the launch itself called it once.
	require.Eventually(t, func() bool {
		return strings.Contains(out.String(), "fake executor info called")
	}, 10*time.Second, 20*time.Millisecond)
	line := lineContaining(out.String(), "fake executor info called")
	assert.Contains(t, line, "echo-runner:")
	assert.Contains(t, line, "task_types=echo")
	assert.NotContains(t, line, filepath.Base(testBinary(t)))
}

func TestServeStopsOnSIGTERM(t *testing.T) {
	client, err := Launch(context.Background(), launchConfig(t, KindConnector, KindConnector))
	require.NoError(t, err)
	defer client.Kill()

	require.NoError(t, syscall.Kill(client.Pid(), syscall.SIGTERM))
	require.Eventually(t, client.Exited, 10*time.Second, 20*time.Millisecond)
}

func lineContaining(text, substr string) string {
	for _, line := range strings.Split(text, "\n") {
		if strings.Contains(line, substr) {
			return line
		}
	}
	return ""
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

var _ io.Writer = (*syncBuffer)(nil)
