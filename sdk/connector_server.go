package sdk

import (
	"context"
	"errors"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	dtfplugin "github.com/dtf-io/dtf/plugin"
	"github.com/dtf-io/dtf/plugin/pb"
)

// ServeConnector serves c as a dtf connector plugin and returns when the
// host kills the plugin, the host process exits, or the process receives
// SIGTERM. Each of these cancels the context of Events. It offers
// connector plugin API version 2 when c implements SessionExporter, and
// version 1 otherwise. It takes the options of ServeExecutor, and the stop
// timeout is unused. The first argument -version or --version prints the
// plugin's version line and exits, as with ServeExecutor.
func ServeConnector(c Connector, opts ...Option) {
	o := buildOptions(opts)
	if o.logger == nil {
		// The logger must exist before serving, because go-plugin swaps
		// os.Stderr while it serves.
		o.logger = NewLogger(c.Info().Name)
		opts = append(opts, WithLogger(o.logger))
	}
	versions := []int{dtfplugin.APIVersion}
	if _, ok := c.(SessionExporter); ok {
		versions = append(versions, dtfplugin.ConnectorAPIVersion)
	}
	dtfplugin.ServeConnector(NewConnectorServer(c, opts...),
		dtfplugin.WithLogger(o.logger), dtfplugin.WithAPIVersions(versions...))
}

// ConnectorServer adapts a Connector to the gRPC service that the host
// calls. ServeConnector and the sdktest package use it. A connector does
// not need it: its methods take the generated plugin API types, which may
// change between dtf releases.
type ConnectorServer struct {
	pb.UnimplementedConnectorServer

	connector Connector
}

// NewConnectorServer returns the gRPC adapter of c. No option changes it
// yet; it takes them for symmetry with NewExecutorServer.
func NewConnectorServer(c Connector, _ ...Option) *ConnectorServer {
	return &ConnectorServer{connector: c}
}

// Info returns the connector's Info.
func (s *ConnectorServer) Info(context.Context, *pb.Empty) (*pb.PluginInfo, error) {
	info := s.connector.Info()
	return &pb.PluginInfo{Name: info.Name, Version: info.Version}, nil
}

// Configure passes the host's settings to the connector, or the plugin
// block's config to its ValidateConfig when the host only checks the
// config. A *ConfigError returns as the response's problems, and any other
// error as INVALID_ARGUMENT, unless it wraps ErrUnavailable or already is
// a gRPC status.
func (s *ConnectorServer) Configure(ctx context.Context, req *pb.ConnectorConfig) (*pb.ConfigureResponse, error) {
	var err error
	if validator, ok := s.connector.(ConfigValidator); ok && req.GetValidateOnly() {
		err = validator.ValidateConfig(req.GetConfigJson())
	} else {
		err = s.connector.Configure(ctx, connectorConfigFromProto(req))
	}
	if problems := configProblemsToProto(err); problems != nil {
		return &pb.ConfigureResponse{Problems: problems}, nil
	}
	if err != nil {
		return nil, toStatus(err, codes.InvalidArgument)
	}
	return &pb.ConfigureResponse{}, nil
}

// Events runs the connector's Events with a send function that writes to
// the stream. gRPC streams do not allow concurrent sends, so sends are
// serialized.
func (s *ConnectorServer) Events(_ *pb.Empty, stream grpc.ServerStreamingServer[pb.ConnectorEvent]) error {
	var mu sync.Mutex
	send := func(event ConnectorEvent) error {
		msg, err := connectorEventToProto(event)
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		return stream.Send(msg)
	}
	if err := s.connector.Events(stream.Context(), send); err != nil {
		return toStatus(err, codes.Internal)
	}
	return nil
}

// errEmptyEvent is returned by the send function of Events for an event
// with no field set.
var errEmptyEvent = errors.New("connector event has no frame, state or stats set; set exactly one")

func connectorEventToProto(event ConnectorEvent) (*pb.ConnectorEvent, error) {
	switch {
	case event.Frame != nil:
		return &pb.ConnectorEvent{Event: &pb.ConnectorEvent_Frame{Frame: event.Frame}}, nil
	case event.State != nil:
		return &pb.ConnectorEvent{Event: &pb.ConnectorEvent_State{State: stateChangeToProto(*event.State)}}, nil
	case event.Stats != nil:
		return &pb.ConnectorEvent{Event: &pb.ConnectorEvent_Stats{Stats: connectorStatsToProto(*event.Stats)}}, nil
	}
	return nil, errEmptyEvent
}

// Send queues one frame.
func (s *ConnectorServer) Send(ctx context.Context, req *pb.SendRequest) (*pb.Empty, error) {
	if err := s.connector.Send(ctx, req.GetFrame()); err != nil {
		return nil, connectorStatus(err)
	}
	return &pb.Empty{}, nil
}

// SendBatch queues frames in order, within the request's timeout, and
// reports the status of the first frame it did not queue in the response.
func (s *ConnectorServer) SendBatch(ctx context.Context, req *pb.SendBatchRequest) (*pb.SendBatchResponse, error) {
	if timeout := time.Duration(req.GetTimeoutMs()) * time.Millisecond; timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	frames := req.GetFrames()
	accepted, err := s.connector.SendBatch(ctx, frames)
	accepted = min(max(accepted, 0), len(frames))
	resp := &pb.SendBatchResponse{Accepted: uint32(accepted)}
	if err != nil && accepted < len(frames) {
		rejection := status.Convert(connectorStatus(err))
		resp.ErrorCode = uint32(rejection.Code())
		resp.ErrorMessage = rejection.Message()
	}
	return resp, nil
}

// Stop closes the session.
func (s *ConnectorServer) Stop(ctx context.Context, _ *pb.Empty) (*pb.Empty, error) {
	if err := s.connector.Stop(ctx); err != nil {
		return nil, connectorStatus(err)
	}
	return &pb.Empty{}, nil
}

// Export hands the session over, or returns UNIMPLEMENTED for a connector
// that is not a SessionExporter.
func (s *ConnectorServer) Export(ctx context.Context, _ *pb.Empty) (*pb.SessionHandover, error) {
	exporter, ok := s.connector.(SessionExporter)
	if !ok {
		return nil, status.Error(codes.Unimplemented,
			"this connector does not implement sdk.SessionExporter, so it cannot hand its session over")
	}
	handover, err := exporter.Export(ctx)
	if err != nil {
		return nil, connectorStatus(err)
	}
	return sessionHandoverToProto(handover), nil
}

// connectorStatus converts an error of Send, SendBatch, Stop or Export:
// ErrInvalidFrame becomes INVALID_ARGUMENT, and the rest as in toStatus
// with INTERNAL.
func connectorStatus(err error) error {
	if errors.Is(err, ErrInvalidFrame) {
		if _, ok := status.FromError(err); !ok {
			return status.Error(codes.InvalidArgument, err.Error())
		}
	}
	return toStatus(err, codes.Internal)
}

func connectorConfigFromProto(req *pb.ConnectorConfig) ConnectorConfig {
	cfg := ConnectorConfig{
		URL:         req.GetUrl(),
		WorkerID:    req.GetWorkerId(),
		Token:       req.GetToken(),
		Secret:      req.GetSecret(),
		SecretFile:  req.GetSecretFile(),
		CAFile:      req.GetCaFile(),
		TaskTypes:   req.GetTaskTypes(),
		Slots:       int(req.GetSlots()),
		Labels:      req.GetLabels(),
		HostVersion: req.GetHostVersion(),
		Config:      req.GetConfigJson(),
	}
	for _, p := range req.GetPlugins() {
		cfg.Plugins = append(cfg.Plugins, HostPlugin{
			Name: p.GetName(), Kind: p.GetKind(), Version: p.GetVersion(), APIVersion: int(p.GetApiVersion()),
		})
	}
	if resume := req.GetResume(); resume != nil {
		cfg.Resume = &SessionHandover{
			SessionID:      resume.GetSessionId(),
			NextSeq:        resume.GetNextSeq(),
			Received:       resume.GetReceived(),
			Unacknowledged: resume.GetUnacknowledged(),
			Queued:         resume.GetQueued(),
		}
	}
	return cfg
}

func sessionHandoverToProto(h SessionHandover) *pb.SessionHandover {
	return &pb.SessionHandover{
		SessionId:      h.SessionID,
		NextSeq:        h.NextSeq,
		Received:       h.Received,
		Unacknowledged: h.Unacknowledged,
		Queued:         h.Queued,
	}
}

var _ pb.ConnectorServer = (*ConnectorServer)(nil)
