package plugin

import (
	"context"
	"errors"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dtf-io/dtf/plugin/pb"
)

// metricsTestMode makes the test binary serve fakeMetrics. It is checked
// in init, which runs before TestMain, so that TestMain stays unchanged.
const metricsTestMode = "metrics-fake"

func init() {
	if os.Getenv(testModeEnv) == metricsTestMode {
		ServeMetrics(&fakeMetrics{})
		os.Exit(0)
	}
}

// fakeMetrics counts the events it receives. An event whose host stats
// report 999 running tasks makes Record hang until the call's deadline, as
// a stalled plugin does.
type fakeMetrics struct {
	pb.UnimplementedMetricsServer
	events atomic.Uint64
}

func (*fakeMetrics) Info(context.Context, *pb.Empty) (*pb.PluginInfo, error) {
	return &pb.PluginInfo{Name: "fake-metrics", Version: "0.0.1"}, nil
}

func (*fakeMetrics) Configure(_ context.Context, req *pb.ConfigureRequest) (*pb.MetricsConfigureResponse, error) {
	if string(req.GetConfigJson()) != `{"summary_interval":"2s"}` {
		return nil, status.Errorf(codes.InvalidArgument, "unexpected config %s", req.GetConfigJson())
	}
	return &pb.MetricsConfigureResponse{SummaryIntervalMs: 2000}, nil
}

func (f *fakeMetrics) Record(ctx context.Context, req *pb.RecordRequest) (*pb.Empty, error) {
	for _, event := range req.GetEvents() {
		if event.GetHostStats().GetRunningTasks() == stallMarker {
			<-ctx.Done()
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	f.events.Add(uint64(len(req.GetEvents())))
	return &pb.Empty{}, nil
}

func (f *fakeMetrics) Summary(context.Context, *pb.Empty) (*pb.WorkerSummary, error) {
	return &pb.WorkerSummary{FramesIn: f.events.Load()}, nil
}

const stallMarker = 999

func hostStatsEvent(running uint32) *pb.HostEvent {
	return &pb.HostEvent{Event: &pb.HostEvent_HostStats{HostStats: &pb.HostStats{RunningTasks: running}}}
}

// A metrics plugin binary launches through go-plugin and serves the
// Metrics service over gRPC with mutual TLS, as the host uses it.
func TestLaunchMetricsPlugin(t *testing.T) {
	client, err := Launch(context.Background(), launchConfig(t, metricsTestMode, KindMetrics))
	require.NoError(t, err)
	defer client.Kill()

	require.NotNil(t, client.Metrics())
	assert.Nil(t, client.Executor())
	assert.Nil(t, client.Connector())
	assert.Equal(t, "fake-metrics", client.Info().GetName())

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := client.Metrics().Configure(ctx, &pb.ConfigureRequest{ConfigJson: []byte(`{"summary_interval":"2s"}`)})
	require.NoError(t, err)
	assert.Equal(t, int64(2000), resp.GetSummaryIntervalMs())

	_, err = client.Metrics().Record(ctx, &pb.RecordRequest{Events: []*pb.HostEvent{hostStatsEvent(1), hostStatsEvent(2)}})
	require.NoError(t, err)
	summary, err := client.Metrics().Summary(ctx, &pb.Empty{})
	require.NoError(t, err)
	assert.Equal(t, uint64(2), summary.GetFramesIn())
}

// A Record call into a plugin that hangs ends at the caller's deadline,
// and the plugin still serves other calls.
func TestMetricsPluginStalledRecordEndsAtDeadline(t *testing.T) {
	client, err := Launch(context.Background(), launchConfig(t, metricsTestMode, KindMetrics))
	require.NoError(t, err)
	defer client.Kill()

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err = client.Metrics().Record(ctx, &pb.RecordRequest{Events: []*pb.HostEvent{hostStatsEvent(stallMarker)}})
	assert.Equal(t, codes.DeadlineExceeded, status.Code(err))

	infoCtx, cancelInfo := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancelInfo()
	_, err = client.Metrics().Info(infoCtx, &pb.Empty{})
	assert.NoError(t, err)
}

// A metrics binary named in an executor block fails at launch with an
// error that names the kind to check.
func TestLaunchMetricsPluginAsExecutor(t *testing.T) {
	_, err := Launch(context.Background(), launchConfig(t, metricsTestMode, KindExecutor))
	require.Error(t, err)
	assert.True(t, errors.Is(err, ErrNotPlugin), "error %v", err)
}

func TestKindsIncludeMetrics(t *testing.T) {
	assert.Contains(t, Kinds(), KindMetrics)
	versions, err := VersionedPlugins(KindMetrics)
	require.NoError(t, err)
	assert.Contains(t, versions[APIVersion], KindMetrics)
}
