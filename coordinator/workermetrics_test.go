package coordinator

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/coordinator/api"
	"github.com/dtf-io/dtf/protocol/pb"
)

func workerMetricsFrame(reconnects uint64) *pb.Frame {
	return &pb.Frame{Body: &pb.Frame_WorkerMetrics{WorkerMetrics: &pb.WorkerMetrics{
		WindowStartUnixMs: 1_000, WindowEndUnixMs: 61_000, Reconnects: reconnects, DisconnectedMs: 2_500,
		SmoothedRttMicros: 1_500, FramesIn: 10, FramesOut: 11, BytesIn: 100, BytesOut: 110,
		TasksSucceeded: 5, TasksFailed: 1, PluginRestarts: 2, EventsDropped: 3,
	}}}
}

// summaryOf returns the worker's kept summary, or nil.
func summaryOf(ts *testServer, workerID string) *pb.WorkerMetrics {
	return ts.currentSummaries()[workerID].metrics
}

// A newer summary replaces the older one, so the coordinator keeps one per
// worker.
func TestWorkerMetricsNewestKept(t *testing.T) {
	ts := startServer(t, testConfig(t, ""))
	w := newSeqWorker(t, ts, "w1")
	w.connect()
	w.sync()

	w.send(workerMetricsFrame(3))
	require.Eventually(t, func() bool { return summaryOf(ts, "w1").GetReconnects() == 3 },
		waitFor, 10*time.Millisecond)
	w.send(workerMetricsFrame(4))
	require.Eventually(t, func() bool { return summaryOf(ts, "w1").GetReconnects() == 4 },
		waitFor, 10*time.Millisecond)
	assert.Len(t, ts.currentSummaries(), 1)

	ts.mu.Lock()
	wk := api.Worker{ID: "w1"}
	ts.fillWorkerMetrics(&wk)
	ts.mu.Unlock()
	require.NotNil(t, wk.Metrics)
	assert.Equal(t, uint64(4), wk.Metrics.Reconnects)
	assert.Equal(t, int64(2500), wk.Metrics.DisconnectedMs)
	assert.Equal(t, 1.5, wk.Metrics.SmoothedRTTMs)
	assert.Equal(t, uint64(5), wk.Metrics.Outcomes[api.StateSucceeded])
	assert.Equal(t, uint64(0), wk.Metrics.Outcomes[api.StateTimedOut])
	assert.Equal(t, time.UnixMilli(61_000).UTC(), wk.Metrics.WindowEnd)
	assert.False(t, wk.Metrics.Received.IsZero())
}

// A summary leaves with its session: a new session of the worker drops it
// at once, and session_ttl drops it with a detached session.
func TestWorkerMetricsDroppedWithSession(t *testing.T) {
	cfg := testConfig(t, "")
	cfg.Workers.SessionTTL = 200 * time.Millisecond
	ts := startServer(t, cfg)
	w := newSeqWorker(t, ts, "w1")
	w.connect()
	w.sync()
	w.send(workerMetricsFrame(1))
	require.Eventually(t, func() bool { return summaryOf(ts, "w1") != nil }, waitFor, 10*time.Millisecond)

	w.cut()
	require.Eventually(t, func() bool { return ts.Stats().DetachedSessions == 1 }, waitFor, 10*time.Millisecond)
	assert.NotNil(t, summaryOf(ts, "w1"), "a detached session keeps its summary for a resume")
	require.Eventually(t, func() bool { return ts.Stats().DetachedSessions == 0 }, waitFor, 10*time.Millisecond,
		"the session expires after session_ttl")
	assert.Nil(t, summaryOf(ts, "w1"), "the summary left with the expired session")

	// A summary of the next session is kept again, and a new session after
	// it drops it.
	other := newSeqWorker(t, ts, "w2")
	other.connect()
	other.sync()
	other.send(workerMetricsFrame(7))
	require.Eventually(t, func() bool { return summaryOf(ts, "w2") != nil }, waitFor, 10*time.Millisecond)
	replacement := newSeqWorker(t, ts, "w2")
	other.cut()
	welcome := replacement.connect().GetWelcome()
	require.NotNil(t, welcome)
	require.Eventually(t, func() bool { return summaryOf(ts, "w2") == nil }, waitFor, 10*time.Millisecond,
		"a new session of the worker drops the old session's summary")
}

// The collector exposes each worker's summary with a worker_id label and
// passes the Prometheus linter.
func TestWorkerMetricsCollector(t *testing.T) {
	ts := startServer(t, testConfig(t, ""))
	for id, reconnects := range map[string]uint64{"w1": 2, "w2": 3} {
		w := newSeqWorker(t, ts, id)
		w.connect()
		w.sync()
		w.send(workerMetricsFrame(reconnects))
	}
	require.Eventually(t, func() bool { return len(ts.currentSummaries()) == 2 }, waitFor, 10*time.Millisecond)

	registry := prometheus.NewPedanticRegistry()
	require.NoError(t, registry.Register(ts.workerMetricsCollector()))
	problems, err := testutil.GatherAndLint(registry)
	require.NoError(t, err)
	assert.Empty(t, problems, "metric names follow the Prometheus conventions")

	expected := `
# HELP dtf_worker_summary_reconnects_total Sessions the worker opened again after a lost one. From the newest summary of the worker's metrics plugin, counted since that plugin started.
# TYPE dtf_worker_summary_reconnects_total counter
dtf_worker_summary_reconnects_total{worker_id="w1"} 2
dtf_worker_summary_reconnects_total{worker_id="w2"} 3
`
	assert.NoError(t, testutil.GatherAndCompare(registry, strings.NewReader(expected),
		"dtf_worker_summary_reconnects_total"))
	count, err := testutil.GatherAndCount(registry, "dtf_worker_summary_task_outcomes_total")
	require.NoError(t, err)
	assert.Equal(t, 8, count, "four statuses for each of two workers")
}
