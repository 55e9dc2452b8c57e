package sdktest

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/dtf-io/dtf/plugin/pb"
	"github.com/dtf-io/dtf/sdk"
)

// MetricsHarness serves one metrics plugin on an in-memory gRPC
// connection, through the adapter that sdk.ServeMetrics uses, and calls it
// as the worker host does.
type MetricsHarness struct {
	process *inProcess
	client  pb.MetricsClient
}

// NewMetrics serves m and registers Close with t.Cleanup. Options are the
// ones that sdk.ServeMetrics takes.
func NewMetrics(t testing.TB, m sdk.MetricsPlugin, opts ...sdk.Option) *MetricsHarness {
	t.Helper()
	server := sdk.NewMetricsServer(m, opts...)
	process := serveInProcess(t, func(s *grpc.Server) { pb.RegisterMetricsServer(s, server) })
	h := &MetricsHarness{process: process, client: pb.NewMetricsClient(process.conn)}
	t.Cleanup(h.Close)
	return h
}

// Info calls the plugin's Info through gRPC.
func (h *MetricsHarness) Info(ctx context.Context) (sdk.Info, error) {
	info, err := h.client.Info(ctx, &pb.Empty{})
	if err != nil {
		return sdk.Info{}, err
	}
	return sdk.Info{Name: info.GetName(), Version: info.GetVersion()}, nil
}

// Configure passes config to the plugin as the host does at launch and
// returns the summary interval. Problems that the plugin reported return
// as a *sdk.ConfigError.
func (h *MetricsHarness) Configure(ctx context.Context, config json.RawMessage) (time.Duration, error) {
	resp, err := h.client.Configure(ctx, &pb.ConfigureRequest{ConfigJson: config})
	if err != nil {
		return 0, err
	}
	if problems := resp.GetProblems(); len(problems) > 0 {
		return 0, configErrorFromProto(problems)
	}
	return time.Duration(resp.GetSummaryIntervalMs()) * time.Millisecond, nil
}

// Validate passes config to the plugin as `dtf validate` does, so that a
// plugin that implements sdk.ConfigValidator only checks it.
func (h *MetricsHarness) Validate(ctx context.Context, config json.RawMessage) error {
	resp, err := h.client.Configure(ctx, &pb.ConfigureRequest{ConfigJson: config, ValidateOnly: true})
	if err != nil {
		return err
	}
	if problems := resp.GetProblems(); len(problems) > 0 {
		return configErrorFromProto(problems)
	}
	return nil
}

// Record sends batch to the plugin in one Record call. Event times are
// sent in whole milliseconds, as the host sends them.
func (h *MetricsHarness) Record(ctx context.Context, batch sdk.EventBatch) error {
	req := &pb.RecordRequest{
		Events:              make([]*pb.HostEvent, 0, len(batch.Events)),
		DroppedBufferFull:   batch.DroppedBufferFull,
		DroppedRecordFailed: batch.DroppedRecordFailed,
	}
	for _, event := range batch.Events {
		req.Events = append(req.Events, hostEventToProto(event))
	}
	_, err := h.client.Record(ctx, req)
	return err
}

// Summary calls the plugin's Summary. Times and durations come back in
// the units of the plugin API: window times in milliseconds, the
// disconnected time in milliseconds and the RTT in microseconds.
func (h *MetricsHarness) Summary(ctx context.Context) (sdk.WorkerSummary, error) {
	s, err := h.client.Summary(ctx, &pb.Empty{})
	if err != nil {
		return sdk.WorkerSummary{}, err
	}
	out := sdk.WorkerSummary{
		Reconnects:     s.GetReconnects(),
		Disconnected:   time.Duration(s.GetDisconnectedMs()) * time.Millisecond,
		SmoothedRTT:    time.Duration(s.GetSmoothedRttMicros()) * time.Microsecond,
		FramesIn:       s.GetFramesIn(),
		FramesOut:      s.GetFramesOut(),
		BytesIn:        s.GetBytesIn(),
		BytesOut:       s.GetBytesOut(),
		TasksSucceeded: s.GetTasksSucceeded(),
		TasksFailed:    s.GetTasksFailed(),
		TasksCancelled: s.GetTasksCancelled(),
		TasksTimedOut:  s.GetTasksTimedOut(),
		PluginRestarts: s.GetPluginRestarts(),
		EventsDropped:  s.GetEventsDropped(),
	}
	if ms := s.GetWindowStartUnixMs(); ms > 0 {
		out.WindowStart = time.UnixMilli(ms)
	}
	if ms := s.GetWindowEndUnixMs(); ms > 0 {
		out.WindowEnd = time.UnixMilli(ms)
	}
	return out, nil
}

// Close stops the server. It is safe to call more than once.
func (h *MetricsHarness) Close() {
	h.process.close()
}

func configErrorFromProto(problems []*pb.ConfigProblem) *sdk.ConfigError {
	configErr := &sdk.ConfigError{}
	for _, p := range problems {
		configErr.Problems = append(configErr.Problems,
			sdk.ConfigProblem{Path: p.GetPath(), Summary: p.GetSummary(), Detail: p.GetDetail()})
	}
	return configErr
}
