package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	dtfplugin "github.com/dtf-io/dtf/plugin"
	"github.com/dtf-io/dtf/plugin/pb"
	"github.com/dtf-io/dtf/plugins/reconnection/connector"
	"github.com/dtf-io/dtf/protocol"
	wirepb "github.com/dtf-io/dtf/protocol/pb"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const waitFor = 30 * time.Second

// buildPlugin compiles this package into a temporary folder.
func buildPlugin(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "dtf-reconnection")
	out, err := exec.Command("go", "build", "-o", path, ".").CombinedOutput()
	require.NoError(t, err, "go build: %s", out)
	return path
}

func TestVersionFlag(t *testing.T) {
	path := buildPlugin(t)
	for _, flag := range []string{"-version", "--version"} {
		t.Run(flag, func(t *testing.T) {
			out, err := exec.Command(path, flag).CombinedOutput()
			require.NoError(t, err, "output: %s", out)
			assert.Equal(t, "reconnection dev (plugin kind connector, plugin API versions 1, 2, wire protocol "+
				protocol.Subprotocol+")\n", string(out))
		})
	}
}

// TestPluginThroughGoPlugin launches the binary as the worker host does and
// connects it to a coordinator stand-in that welcomes every worker and
// records the task frames it receives.
func TestPluginThroughGoPlugin(t *testing.T) {
	received := make(chan *wirepb.Frame, 16)
	var handlers sync.WaitGroup
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		handlers.Add(1)
		defer handlers.Done()
		upgrader := websocket.Upgrader{Subprotocols: []string{protocol.Subprotocol}}
		ws, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		_ = ws.SetReadDeadline(time.Now().Add(waitFor))
		welcomed := false
		for {
			_, data, err := ws.ReadMessage()
			if err != nil {
				return
			}
			frame, err := protocol.Decode(data, protocol.DefaultMaxFrameBytes)
			if err != nil {
				return
			}
			switch {
			case frame.GetHello() != nil && !welcomed:
				welcomed = true
				reply, _ := protocol.Encode(&wirepb.Frame{Body: &wirepb.Frame_Welcome{
					Welcome: &wirepb.Welcome{SessionId: "s-1"}}})
				if ws.WriteMessage(websocket.BinaryMessage, reply) != nil {
					return
				}
			case frame.GetHeartbeat() != nil:
			default:
				received <- frame
			}
		}
	}))
	defer func() {
		server.Close()
		handlers.Wait()
	}()

	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	client, err := dtfplugin.Launch(ctx, dtfplugin.LaunchConfig{
		Name: "reconnection",
		Kind: dtfplugin.KindConnector,
		Path: buildPlugin(t),
	})
	require.NoError(t, err)
	defer client.Kill()
	assert.Equal(t, connector.Name, client.Info().GetName())

	plugin := client.Connector()
	_, err = plugin.Configure(ctx, &pb.ConnectorConfig{
		Url:        server.URL,
		WorkerId:   "worker-1",
		ConfigJson: []byte(`{"heartbeat_interval": "100ms", "heartbeat_timeout": "1s"}`),
	})
	require.NoError(t, err)

	events, err := plugin.Events(ctx, &pb.Empty{})
	require.NoError(t, err)
	for {
		event, err := events.Recv()
		require.NoError(t, err)
		if event.GetState().GetState() == connector.StateConnected {
			assert.Equal(t, "s-1", event.GetState().GetSessionId())
			break
		}
	}

	started, err := protocol.Encode(&wirepb.Frame{Body: &wirepb.Frame_TaskStarted{
		TaskStarted: &wirepb.TaskStarted{Ref: &wirepb.TaskRef{TaskId: "t-1", Attempt: 1}}}})
	require.NoError(t, err)
	_, err = plugin.Send(ctx, &pb.SendRequest{Frame: started})
	require.NoError(t, err)
	select {
	case frame := <-received:
		assert.Equal(t, "t-1", frame.GetTaskStarted().GetRef().GetTaskId())
	case <-ctx.Done():
		t.Fatal("the coordinator did not receive the task frame")
	}

	_, err = plugin.Stop(ctx, &pb.Empty{})
	require.NoError(t, err)
	var last *pb.StateChange
	for {
		event, err := events.Recv()
		if err != nil {
			break
		}
		if event.GetState() != nil {
			last = event.GetState()
		}
	}
	require.NotNil(t, last)
	assert.Equal(t, connector.StateClosed, last.GetState())
}
