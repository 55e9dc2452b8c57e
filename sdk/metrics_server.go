package sdk

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"

	dtfplugin "github.com/dtf-io/dtf/plugin"
	"github.com/dtf-io/dtf/plugin/pb"
)

// ServeMetrics serves m as a dtf metrics plugin and returns when the host
// kills the plugin, the host process exits, or the process receives
// SIGTERM. A plugin that serves its own listener closes it after
// ServeMetrics returns. It takes the options of ServeExecutor, and the
// stop timeout is unused. The first argument -version or --version prints
// the plugin's version line and exits, as with ServeExecutor.
func ServeMetrics(m MetricsPlugin, opts ...Option) {
	o := buildOptions(opts)
	if o.logger == nil {
		// The logger must exist before serving, because go-plugin swaps
		// os.Stderr while it serves.
		o.logger = NewLogger(m.Info().Name)
		opts = append(opts, WithLogger(o.logger))
	}
	dtfplugin.ServeMetrics(NewMetricsServer(m, opts...), dtfplugin.WithLogger(o.logger))
}

// MetricsServer adapts a MetricsPlugin to the gRPC service that the host
// calls. ServeMetrics and the sdktest package use it. A plugin does not
// need it: its methods take the generated plugin API types, which may
// change between dtf releases.
type MetricsServer struct {
	pb.UnimplementedMetricsServer

	plugin MetricsPlugin
}

// NewMetricsServer returns the gRPC adapter of m. No option changes it
// yet; it takes them for symmetry with NewExecutorServer.
func NewMetricsServer(m MetricsPlugin, _ ...Option) *MetricsServer {
	return &MetricsServer{plugin: m}
}

// Info returns the plugin's Info.
func (s *MetricsServer) Info(context.Context, *pb.Empty) (*pb.PluginInfo, error) {
	info := s.plugin.Info()
	return &pb.PluginInfo{Name: info.Name, Version: info.Version}, nil
}

// Configure passes the plugin block's JSON config to the plugin, or to its
// ValidateConfig when the host only checks the config. A *ConfigError
// returns as the response's problems, and any other error as
// INVALID_ARGUMENT with its message, unless it already is a gRPC status.
func (s *MetricsServer) Configure(
	_ context.Context,
	req *pb.ConfigureRequest,
) (*pb.MetricsConfigureResponse, error) {
	var interval time.Duration
	var err error
	if validator, ok := s.plugin.(ConfigValidator); ok && req.GetValidateOnly() {
		err = validator.ValidateConfig(req.GetConfigJson())
	} else {
		interval, err = s.plugin.Configure(req.GetConfigJson())
	}
	if problems := configProblemsToProto(err); problems != nil {
		return &pb.MetricsConfigureResponse{Problems: problems}, nil
	}
	if err != nil {
		return nil, toStatus(err, codes.InvalidArgument)
	}
	return &pb.MetricsConfigureResponse{SummaryIntervalMs: interval.Milliseconds()}, nil
}

// Record converts the host's events and passes them to the plugin.
func (s *MetricsServer) Record(ctx context.Context, req *pb.RecordRequest) (*pb.Empty, error) {
	batch := EventBatch{
		Events:              make([]HostEvent, 0, len(req.GetEvents())),
		DroppedBufferFull:   req.GetDroppedBufferFull(),
		DroppedRecordFailed: req.GetDroppedRecordFailed(),
	}
	for _, event := range req.GetEvents() {
		batch.Events = append(batch.Events, hostEventFromProto(event))
	}
	if err := s.plugin.Record(ctx, batch); err != nil {
		return nil, toStatus(err, codes.Internal)
	}
	return &pb.Empty{}, nil
}

// Summary returns the plugin's summary.
func (s *MetricsServer) Summary(ctx context.Context, _ *pb.Empty) (*pb.WorkerSummary, error) {
	summary, err := s.plugin.Summary(ctx)
	if err != nil {
		return nil, toStatus(err, codes.Internal)
	}
	return workerSummaryToProto(summary), nil
}

var _ pb.MetricsServer = (*MetricsServer)(nil)
