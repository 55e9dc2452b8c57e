package main

import (
	"context"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	dtfplugin "github.com/dtf-io/dtf/plugin"
	"github.com/dtf-io/dtf/plugin/pb"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// buildPlugin compiles this package into a temporary folder.
func buildPlugin(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "dtf-metrics")
	out, err := exec.Command("go", "build", "-o", path, ".").CombinedOutput()
	require.NoError(t, err, "go build: %s", out)
	return path
}

// freeAddr returns a 127.0.0.1 address whose port was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

func TestVersionFlag(t *testing.T) {
	out, err := exec.Command(buildPlugin(t), "--version").CombinedOutput()
	require.NoError(t, err)
	assert.Contains(t, string(out), "metrics dev")
	assert.Contains(t, string(out), "plugin kind metrics")
}

// The binary, launched through go-plugin as the host does, serves its
// endpoint after Configure, counts the events it receives, and frees the
// port when it is killed.
func TestPluginThroughGoPlugin(t *testing.T) {
	addr := freeAddr(t)
	client, err := dtfplugin.Launch(context.Background(), dtfplugin.LaunchConfig{
		Name: "metrics", Kind: dtfplugin.KindMetrics, Path: buildPlugin(t), StartTimeout: 20 * time.Second,
	})
	require.NoError(t, err)
	defer client.Kill()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := client.Metrics().Configure(ctx, &pb.ConfigureRequest{
		ConfigJson: []byte(`{"listen":"` + addr + `","summary_interval":"1s"}`),
	})
	require.NoError(t, err)
	assert.Equal(t, int64(1000), resp.GetSummaryIntervalMs())

	_, err = client.Metrics().Record(ctx, &pb.RecordRequest{Events: []*pb.HostEvent{
		{Event: &pb.HostEvent_State{State: &pb.StateChange{State: "connected"}}},
		{Event: &pb.HostEvent_Reconnected{Reconnected: &pb.Reconnected{OutageMs: 300}}},
	}})
	require.NoError(t, err)

	httpResp, err := http.Get("http://" + addr + "/metrics")
	require.NoError(t, err)
	defer httpResp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(httpResp.Body)
	require.NoError(t, err)
	require.Contains(t, families, "dtf_worker_reconnects_total")
	assert.Equal(t, 1.0, families["dtf_worker_reconnects_total"].GetMetric()[0].GetCounter().GetValue())

	summary, err := client.Metrics().Summary(ctx, &pb.Empty{})
	require.NoError(t, err)
	assert.Equal(t, uint64(1), summary.GetReconnects())

	client.Kill()
	l, err := net.Listen("tcp", addr)
	require.NoError(t, err, "the killed plugin left its port bound")
	require.NoError(t, l.Close())
}
