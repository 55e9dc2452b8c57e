package host

import (
	"context"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dtf-io/dtf/host/config"
	dtfplugin "github.com/dtf-io/dtf/plugin"
	"github.com/dtf-io/dtf/plugin/pb"
	wirepb "github.com/dtf-io/dtf/protocol/pb"
	"github.com/dtf-io/dtf/sdk"
)

// fakeMetrics is a metrics plugin's server that keeps the events it
// receives. With stall set, Record blocks until release is closed or the
// call's deadline passes, as a hung plugin does.
type fakeMetrics struct {
	pb.UnimplementedMetricsServer
	summaryInterval time.Duration
	summary         *pb.WorkerSummary
	stall           atomic.Bool
	release         chan struct{}
	summaryCalls    atomic.Int32

	mu       sync.Mutex
	events   []*pb.HostEvent
	requests []*pb.RecordRequest
}

func newFakeMetrics(summaryInterval time.Duration) *fakeMetrics {
	return &fakeMetrics{summaryInterval: summaryInterval, release: make(chan struct{})}
}

func (f *fakeMetrics) Configure(context.Context, *pb.ConfigureRequest) (*pb.MetricsConfigureResponse, error) {
	return &pb.MetricsConfigureResponse{SummaryIntervalMs: f.summaryInterval.Milliseconds()}, nil
}

func (f *fakeMetrics) Record(ctx context.Context, req *pb.RecordRequest) (*pb.Empty, error) {
	if f.stall.Load() {
		select {
		case <-f.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events = append(f.events, req.GetEvents()...)
	f.requests = append(f.requests, req)
	return &pb.Empty{}, nil
}

func (f *fakeMetrics) Summary(context.Context, *pb.Empty) (*pb.WorkerSummary, error) {
	f.summaryCalls.Add(1)
	return f.summary, nil
}

// received returns the events received so far that match keep.
func (f *fakeMetrics) received(keep func(*pb.HostEvent) bool) []*pb.HostEvent {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*pb.HostEvent
	for _, event := range f.events {
		if keep(event) {
			out = append(out, event)
		}
	}
	return out
}

// lastRequest returns the newest Record request, or nil.
func (f *fakeMetrics) lastRequest() *pb.RecordRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.requests) == 0 {
		return nil
	}
	return f.requests[len(f.requests)-1]
}

func isState(e *pb.HostEvent) bool         { return e.GetState() != nil }
func isReconnected(e *pb.HostEvent) bool   { return e.GetReconnected() != nil }
func isTaskFinished(e *pb.HostEvent) bool  { return e.GetTaskFinished() != nil }
func isPluginRestart(e *pb.HostEvent) bool { return e.GetPluginRestart() != nil }
func isStats(e *pb.HostEvent) bool         { return e.GetConnectorStats() != nil }

// metricsConfig is testConfig with one executor "runner" and the given
// metrics plugins, in order.
func metricsConfig(t *testing.T, metrics ...string) *config.Config {
	cfg := testConfig(t, "runner")
	for _, name := range metrics {
		cfg.Plugins = append(cfg.Plugins, config.Plugin{Name: name, Kind: dtfplugin.KindMetrics})
	}
	return cfg
}

// startMetricsHost is startHost with metrics plugins served by the given
// fakes, and it completes the first state sync as startRunner does. Each
// option changes the host after the fakes are installed and before it runs.
func startMetricsHost(
	t *testing.T,
	cfg *config.Config,
	metrics map[string]pb.MetricsServer,
	options ...func(*Host),
) (*harness, *fakeConnector) {
	t.Helper()
	logs := &logBuffer{}
	h, err := New(cfg, hclog.New(&hclog.LoggerOptions{
		Level: hclog.Debug, Output: io.MultiWriter(testWriter{t}, logs),
	}))
	require.NoError(t, err)
	plugins := &fakePlugins{
		t:          t,
		connectors: make(chan *fakeConnector, 8),
		executors:  map[string]sdk.Executor{"runner": &testExecutor{name: "r", types: []string{"echo", "block"}}},
		metrics:    metrics,
	}
	h.launch = plugins.launch
	for _, option := range options {
		option(h)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	hs := &harness{host: h, plugins: plugins, cancel: cancel, done: done, logs: logs}
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(waitFor):
			t.Error("host did not stop")
		}
	})

	c := nextConnector(t, hs)
	c.state("connected", "")
	expectFrame(t, c, "state_sync")
	c.frame(t, syncResultFrame())
	return hs, c
}

func (c *fakeConnector) stats(framesIn uint64) {
	c.events <- &pb.ConnectorEvent{Event: &pb.ConnectorEvent_Stats{Stats: &pb.ConnectorStats{
		Connected: true, FramesIn: framesIn,
	}}}
}

// A metrics plugin that hangs in Record must not hold up the connector's
// events, task assignments or outcomes: the host drops the plugin's events
// once its buffer is full and counts them.
func TestMetricsStalledPluginDoesNotBlockHost(t *testing.T) {
	stalled := newFakeMetrics(0)
	stalled.stall.Store(true)
	hs, c := startMetricsHost(t, metricsConfig(t, "stalled"), map[string]pb.MetricsServer{"stalled": stalled})

	// Twice the buffer's worth of stats events pass the host's event loop.
	// If recording an event waited for the plugin, the sends below would
	// block once the fake connector's queue of 64 events filled up.
	const events = 2 * metricsBufferEvents
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for i := range events {
			c.stats(uint64(i))
		}
	}()
	select {
	case <-sent:
	case <-time.After(waitFor):
		t.Fatal("the host's event loop stopped reading connector events while the metrics plugin hung")
	}

	c.frame(t, assignFrame("t1", 1, "echo"))
	outcome := expectFrame(t, c, "task_outcome").GetTaskOutcome()
	assert.Equal(t, wirepb.Status_STATUS_SUCCEEDED, outcome.GetStatus())

	// Each stats event is recorded with a host stats event, so at least
	// twice the buffer minus what the buffer and one batch hold is lost.
	plugin := hs.host.metrics.plugins[0]
	minDropped := uint64(2*events - metricsBufferEvents - metricsBatchEvents)
	require.Eventually(t, func() bool { return plugin.droppedFull.Load() >= minDropped },
		waitFor, 10*time.Millisecond, "dropped %d events, expected at least %d",
		plugin.droppedFull.Load(), minDropped)
	assert.Contains(t, hs.logs.String(), "metrics plugin is not keeping up")

	// The hung Record call times out, and its events count as lost too.
	require.Eventually(t, func() bool { return plugin.droppedFailed.Load() > 0 },
		waitFor, 10*time.Millisecond, "a Record call outlived recordTimeout")

	// Once the plugin responds again, it learns how many events it missed.
	stalled.stall.Store(false)
	close(stalled.release)
	c.stats(1)
	require.Eventually(t, func() bool {
		req := stalled.lastRequest()
		return req != nil && req.GetDroppedBufferFull() >= minDropped && req.GetDroppedRecordFailed() > 0
	}, waitFor, 10*time.Millisecond, "the next Record call reports the drops")
}

// A metrics plugin that crashes is launched again, and its restart reaches
// every metrics plugin as an event.
func TestMetricsCrashedPluginRestarted(t *testing.T) {
	cfg := metricsConfig(t, "first", "second")
	fastRestart(cfg)
	first, second := newFakeMetrics(0), newFakeMetrics(0)
	hs, c := startMetricsHost(t, cfg, map[string]pb.MetricsServer{"first": first, "second": second})

	hs.plugins.processes("first")[0].Kill()
	require.Eventually(t, func() bool { return len(hs.plugins.processes("first")) == 2 },
		waitFor, 10*time.Millisecond, "the supervisor launches a new process")
	for name, fake := range map[string]*fakeMetrics{"first": first, "second": second} {
		require.Eventually(t, func() bool { return len(fake.received(isPluginRestart)) == 1 },
			waitFor, 10*time.Millisecond, "plugin %s received no restart event", name)
		restart := fake.received(isPluginRestart)[0].GetPluginRestart()
		assert.Equal(t, "first", restart.GetPlugin(), name)
		assert.Equal(t, dtfplugin.KindMetrics, restart.GetKind(), name)
		assert.Equal(t, "signal: killed", restart.GetExit(), name)
	}
	assert.Contains(t, hs.logs.String(), "metrics plugin restarted")

	// The new process receives the events that follow.
	c.frame(t, assignFrame("t1", 1, "echo"))
	expectFrame(t, c, "task_outcome")
	require.Eventually(t, func() bool { return len(first.received(isTaskFinished)) == 1 },
		waitFor, 10*time.Millisecond)
}

// An executor's restart is an event for the metrics plugins too.
func TestMetricsExecutorRestartRecorded(t *testing.T) {
	cfg := metricsConfig(t, "metrics")
	fastRestart(cfg)
	fake := newFakeMetrics(0)
	hs, _ := startMetricsHost(t, cfg, map[string]pb.MetricsServer{"metrics": fake})

	hs.plugins.processes("runner")[0].Kill()
	require.Eventually(t, func() bool { return len(fake.received(isPluginRestart)) == 1 },
		waitFor, 10*time.Millisecond)
	restart := fake.received(isPluginRestart)[0].GetPluginRestart()
	assert.Equal(t, "runner", restart.GetPlugin())
	assert.Equal(t, dtfplugin.KindExecutor, restart.GetKind())
}

// A lost session and its return reach the plugin as state changes and one
// Reconnected event with the outage and the attempts in between.
func TestMetricsReconnectRecorded(t *testing.T) {
	fake := newFakeMetrics(0)
	_, c := startMetricsHost(t, metricsConfig(t, "metrics"), map[string]pb.MetricsServer{"metrics": fake})

	c.state("backing_off", "read tcp: connection reset by peer")
	c.state("resuming", "")
	c.state("backing_off", "dial tcp: connection refused")
	c.state("resuming", "")
	c.events <- &pb.ConnectorEvent{Event: &pb.ConnectorEvent_State{State: &pb.StateChange{
		State: "connected", SessionId: "s-1", Resumed: true,
	}}}

	require.Eventually(t, func() bool { return len(fake.received(isReconnected)) == 1 },
		waitFor, 10*time.Millisecond)
	reconnected := fake.received(isReconnected)[0].GetReconnected()
	assert.True(t, reconnected.GetResumed())
	assert.Equal(t, uint32(2), reconnected.GetAttempts())
	assert.GreaterOrEqual(t, reconnected.GetOutageMs(), int64(0))

	var states []string
	for _, event := range fake.received(isState) {
		states = append(states, event.GetState().GetState())
	}
	assert.Equal(t, []string{"connected", "backing_off", "resuming", "backing_off", "resuming", "connected"}, states)
	reasons := fake.received(func(e *pb.HostEvent) bool { return e.GetState().GetReason() != "" })
	require.NotEmpty(t, reasons)
	assert.Equal(t, "read tcp: connection reset by peer", reasons[0].GetState().GetReason())
}

// Task outcomes and the connector's stats reach the plugin, the stats with
// the host's own queue depths.
func TestMetricsOutcomeAndStatsRecorded(t *testing.T) {
	fake := newFakeMetrics(0)
	_, c := startMetricsHost(t, metricsConfig(t, "metrics"), map[string]pb.MetricsServer{"metrics": fake})

	c.frame(t, assignFrame("t1", 1, "echo"))
	expectFrame(t, c, "task_outcome")
	c.stats(42)
	require.Eventually(t, func() bool {
		return len(fake.received(isTaskFinished)) == 1 && len(fake.received(isStats)) == 1
	}, waitFor, 10*time.Millisecond)
	finished := fake.received(isTaskFinished)[0].GetTaskFinished()
	assert.Equal(t, pb.Status_STATUS_SUCCEEDED, finished.GetStatus())
	assert.Equal(t, uint64(42), fake.received(isStats)[0].GetConnectorStats().GetFramesIn())

	hostStats := fake.received(func(e *pb.HostEvent) bool { return e.GetHostStats() != nil })
	require.Len(t, hostStats, 1)
	assert.Equal(t, uint32(2), hostStats[0].GetHostStats().GetSlots())
	assert.Equal(t, uint32(1), hostStats[0].GetHostStats().GetHeldOutcomes(),
		"the outcome waits for its acknowledgement")
	for _, event := range fake.received(func(*pb.HostEvent) bool { return true }) {
		assert.Positive(t, event.GetUnixMs(), "every event carries its time")
	}
}

// Only the first metrics plugin's summary goes to the coordinator, as a
// worker_metrics frame at its summary interval.
func TestMetricsSummarySentFromFirstPlugin(t *testing.T) {
	first := newFakeMetrics(20 * time.Millisecond)
	first.summary = &pb.WorkerSummary{Reconnects: 7, TasksFailed: 2, EventsDropped: 3, WindowEndUnixMs: 1000}
	second := newFakeMetrics(20 * time.Millisecond)
	second.summary = &pb.WorkerSummary{Reconnects: 99}
	_, c := startMetricsHost(t, metricsConfig(t, "first", "second"),
		map[string]pb.MetricsServer{"first": first, "second": second})

	metrics := expectFrame(t, c, "worker_metrics").GetWorkerMetrics()
	assert.Equal(t, uint64(7), metrics.GetReconnects())
	assert.Equal(t, uint64(2), metrics.GetTasksFailed())
	assert.Equal(t, uint64(3), metrics.GetEventsDropped())
	assert.Equal(t, int64(1000), metrics.GetWindowEndUnixMs())
	assert.Equal(t, int32(0), second.summaryCalls.Load(), "the second plugin's summary is not used")
}

// A metrics plugin whose config the plugin rejects stops the worker's
// start with an error that names the plugin and the file.
func TestMetricsInvalidConfigStopsStart(t *testing.T) {
	cfg := metricsConfig(t, "metrics")
	cfg.File = "/etc/dtf/worker.hcl"
	h, err := New(cfg, hclog.NewNullLogger())
	require.NoError(t, err)
	plugins := &fakePlugins{
		t:          t,
		connectors: make(chan *fakeConnector, 8),
		executors:  map[string]sdk.Executor{"runner": &testExecutor{name: "r", types: []string{"echo"}}},
		metrics:    map[string]pb.MetricsServer{"metrics": rejectingMetrics{}},
	}
	h.launch = plugins.launch
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	err = h.Run(ctx)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "invalid config for metrics plugin metrics: listen is wrong")
	assert.Contains(t, err.Error(), "/etc/dtf/worker.hcl")
	assert.True(t, plugins.allKilled(), "every launched plugin is stopped")
}

// rejectingMetrics rejects its config as invalid.
type rejectingMetrics struct {
	pb.UnimplementedMetricsServer
}

func (rejectingMetrics) Configure(context.Context, *pb.ConfigureRequest) (*pb.MetricsConfigureResponse, error) {
	return nil, status.Error(codes.InvalidArgument, "listen is wrong")
}

func TestMetricsConfigOrderPicksSummaryPlugin(t *testing.T) {
	cfg := metricsConfig(t, "b", "a")
	h, err := New(cfg, hclog.NewNullLogger())
	require.NoError(t, err)
	require.Len(t, h.metrics.plugins, 2)
	assert.Equal(t, "b", h.metrics.plugins[0].cfg.Name)
	assert.True(t, h.metrics.plugins[0].sendsSummary)
	assert.False(t, h.metrics.plugins[1].sendsSummary)
	assert.Equal(t, "a", h.metrics.plugins[1].cfg.Name)
}
