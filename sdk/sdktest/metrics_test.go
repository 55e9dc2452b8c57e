package sdktest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dtf-io/dtf/sdk"
)

// recordingMetrics keeps every batch it receives and returns a fixed
// summary.
type recordingMetrics struct {
	mu        sync.Mutex
	batches   []sdk.EventBatch
	configErr error
	recordErr error
	validated []string
}

func (m *recordingMetrics) Info() sdk.Info { return sdk.Info{Name: "recording", Version: "v0.1.0"} }

func (m *recordingMetrics) Configure(config json.RawMessage) (time.Duration, error) {
	return 1500 * time.Millisecond, m.configErr
}

func (m *recordingMetrics) ValidateConfig(config json.RawMessage) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.validated = append(m.validated, string(config))
	return nil
}

func (m *recordingMetrics) Record(_ context.Context, batch sdk.EventBatch) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.batches = append(m.batches, batch)
	return m.recordErr
}

func (m *recordingMetrics) Summary(context.Context) (sdk.WorkerSummary, error) {
	return sdk.WorkerSummary{
		WindowStart:    time.UnixMilli(1_700_000_000_000),
		WindowEnd:      time.UnixMilli(1_700_000_060_000),
		Reconnects:     2,
		Disconnected:   3 * time.Second,
		SmoothedRTT:    1200 * time.Microsecond,
		TasksSucceeded: 5,
		TasksTimedOut:  1,
		EventsDropped:  4,
	}, nil
}

func TestMetricsHarnessRecordsEveryEventType(t *testing.T) {
	plugin := &recordingMetrics{}
	h := NewMetrics(t, plugin)
	ctx := context.Background()
	at := time.UnixMilli(1_700_000_000_123)
	sent := sdk.EventBatch{
		Events: []sdk.HostEvent{
			{Time: at, State: &sdk.StateChange{State: sdk.StateBackingOff, Reason: "cut", Attempt: 3,
				NextRetry: at.Add(time.Second), SessionID: "s1", RTT: 900 * time.Microsecond,
				Reconnects: 4, HeartbeatInterval: 5 * time.Second, HeartbeatTimeout: 15 * time.Second}},
			{Time: at, Reconnected: &sdk.Reconnected{Outage: 1500 * time.Millisecond, Resumed: true, Attempts: 2}},
			{Time: at, ConnectorStats: &sdk.ConnectorStats{Connected: true, FramesIn: 7, FramesOut: 8,
				BytesIn: 70, BytesOut: 80, FrameBytesOutRaw: 100, FrameBytesOutEncoded: 40,
				SmoothedRTT: 2 * time.Millisecond, RTTVariance: time.Millisecond,
				RTTSamples:      []time.Duration{time.Millisecond, 3 * time.Millisecond},
				SendQueueFrames: []int{1, 0, 2, 0, 5}, ReplayFrames: 3, ReplayBytes: 300, Resumes: 1}},
			{Time: at, HostStats: &sdk.HostStats{RunningTasks: 1, HeldOutcomes: 2, Slots: 4}},
			{Time: at, TaskFinished: &sdk.TaskFinished{Status: sdk.StatusTimedOut, Duration: 2 * time.Second,
				Retryable: true}},
			{Time: at, PluginRestart: &sdk.PluginRestart{Plugin: "command", Kind: "executor", Exit: "exit status 2"}},
		},
		DroppedBufferFull:   6,
		DroppedRecordFailed: 1,
	}
	require.NoError(t, h.Record(ctx, sent))

	require.Len(t, plugin.batches, 1)
	got := plugin.batches[0]
	require.Len(t, got.Events, len(sent.Events))
	for i := range sent.Events {
		assert.Truef(t, sent.Events[i].Time.Equal(got.Events[i].Time), "event %d time", i)
		got.Events[i].Time = sent.Events[i].Time
		assert.Equalf(t, sent.Events[i], got.Events[i], "event %d", i)
	}
	assert.Equal(t, uint64(6), got.DroppedBufferFull)
	assert.Equal(t, uint64(1), got.DroppedRecordFailed)
}

// An event that the SDK does not know arrives with every field nil, so a
// plugin can skip it.
func TestMetricsHarnessEmptyEvent(t *testing.T) {
	plugin := &recordingMetrics{}
	h := NewMetrics(t, plugin)
	require.NoError(t, h.Record(context.Background(), sdk.EventBatch{Events: []sdk.HostEvent{{}}}))
	require.Len(t, plugin.batches, 1)
	assert.Equal(t, sdk.HostEvent{}, plugin.batches[0].Events[0])
}

func TestMetricsHarnessSummary(t *testing.T) {
	h := NewMetrics(t, &recordingMetrics{})
	summary, err := h.Summary(context.Background())
	require.NoError(t, err)
	assert.Equal(t, int64(1_700_000_000_000), summary.WindowStart.UnixMilli())
	assert.Equal(t, int64(1_700_000_060_000), summary.WindowEnd.UnixMilli())
	assert.Equal(t, uint64(2), summary.Reconnects)
	assert.Equal(t, 3*time.Second, summary.Disconnected)
	assert.Equal(t, 1200*time.Microsecond, summary.SmoothedRTT)
	assert.Equal(t, uint64(5), summary.TasksSucceeded)
	assert.Equal(t, uint64(1), summary.TasksTimedOut)
	assert.Equal(t, uint64(4), summary.EventsDropped)
}

func TestMetricsHarnessConfigure(t *testing.T) {
	ctx := context.Background()
	t.Run("interval", func(t *testing.T) {
		h := NewMetrics(t, &recordingMetrics{})
		interval, err := h.Configure(ctx, json.RawMessage(`{}`))
		require.NoError(t, err)
		assert.Equal(t, 1500*time.Millisecond, interval)
	})
	t.Run("problems", func(t *testing.T) {
		h := NewMetrics(t, &recordingMetrics{configErr: &sdk.ConfigError{Problems: []sdk.ConfigProblem{
			{Path: "listen", Summary: "Invalid listen address", Detail: `listen "x" is not host:port`},
		}}})
		_, err := h.Configure(ctx, json.RawMessage(`{"listen":"x"}`))
		var configErr *sdk.ConfigError
		require.ErrorAs(t, err, &configErr)
		require.Len(t, configErr.Problems, 1)
		assert.Equal(t, "listen", configErr.Problems[0].Path)
		assert.Equal(t, `listen "x" is not host:port`, configErr.Problems[0].Detail)
	})
	t.Run("plain error", func(t *testing.T) {
		h := NewMetrics(t, &recordingMetrics{configErr: errors.New("bad config")})
		_, err := h.Configure(ctx, json.RawMessage(`{}`))
		assert.Equal(t, codes.InvalidArgument, status.Code(err))
		assert.Equal(t, "bad config", status.Convert(err).Message())
	})
	t.Run("unavailable", func(t *testing.T) {
		h := NewMetrics(t, &recordingMetrics{configErr: fmt.Errorf("port busy: %w", sdk.ErrUnavailable)})
		_, err := h.Configure(ctx, json.RawMessage(`{}`))
		assert.Equal(t, codes.Unavailable, status.Code(err))
	})
	t.Run("validate only", func(t *testing.T) {
		plugin := &recordingMetrics{configErr: errors.New("Configure must not run")}
		h := NewMetrics(t, plugin)
		require.NoError(t, h.Validate(ctx, json.RawMessage(`{"a":1}`)))
		assert.Equal(t, []string{`{"a":1}`}, plugin.validated)
	})
}

func TestMetricsHarnessRecordError(t *testing.T) {
	h := NewMetrics(t, &recordingMetrics{recordErr: errors.New("disk full")})
	err := h.Record(context.Background(), sdk.EventBatch{})
	assert.Equal(t, codes.Internal, status.Code(err))
	assert.Contains(t, status.Convert(err).Message(), "disk full")

	info, err := h.Info(context.Background())
	require.NoError(t, err)
	assert.Equal(t, "recording", info.Name)
}
