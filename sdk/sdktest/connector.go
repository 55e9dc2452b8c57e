package sdktest

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dtf-io/dtf/plugin/pb"
	"github.com/dtf-io/dtf/sdk"
)

// ConnectorHarness serves one connector on an in-memory gRPC connection,
// through the adapter that sdk.ServeConnector uses, and calls it as the
// worker host does.
type ConnectorHarness struct {
	process *inProcess
	client  pb.ConnectorClient
}

// NewConnector serves c and registers Close with t.Cleanup. Options are
// the ones that sdk.ServeConnector takes.
func NewConnector(t testing.TB, c sdk.Connector, opts ...sdk.Option) *ConnectorHarness {
	t.Helper()
	server := sdk.NewConnectorServer(c, opts...)
	process := serveInProcess(t, func(s *grpc.Server) { pb.RegisterConnectorServer(s, server) })
	h := &ConnectorHarness{process: process, client: pb.NewConnectorClient(process.conn)}
	t.Cleanup(h.Close)
	return h
}

// Configure passes cfg to the connector as the host does before Events.
// Problems that the connector reported return as a *sdk.ConfigError.
func (h *ConnectorHarness) Configure(ctx context.Context, cfg sdk.ConnectorConfig) error {
	return h.configure(ctx, connectorConfigToProto(cfg))
}

// Validate passes config to the connector as `dtf validate` and the
// health check of a live upgrade do.
func (h *ConnectorHarness) Validate(ctx context.Context, config json.RawMessage) error {
	return h.configure(ctx, &pb.ConnectorConfig{ConfigJson: config, ValidateOnly: true})
}

func (h *ConnectorHarness) configure(ctx context.Context, req *pb.ConnectorConfig) error {
	resp, err := h.client.Configure(ctx, req)
	if err != nil {
		return err
	}
	if problems := resp.GetProblems(); len(problems) > 0 {
		return configErrorFromProto(problems)
	}
	return nil
}

// EventStream is an open Events stream of a connector.
type EventStream struct {
	stream grpc.ServerStreamingClient[pb.ConnectorEvent]
	cancel context.CancelFunc
}

// Events opens the connector's event stream. Cancelling ctx or calling
// Close on the stream ends it, as the host going away does.
func (h *ConnectorHarness) Events(ctx context.Context) (*EventStream, error) {
	ctx, cancel := context.WithCancel(ctx)
	stream, err := h.client.Events(ctx, &pb.Empty{})
	if err != nil {
		cancel()
		return nil, err
	}
	return &EventStream{stream: stream, cancel: cancel}, nil
}

// Next returns the next event. It returns io.EOF after the connector's
// Events returned nil, and the stream's status error otherwise.
func (s *EventStream) Next() (sdk.ConnectorEvent, error) {
	msg, err := s.stream.Recv()
	if err != nil {
		return sdk.ConnectorEvent{}, err
	}
	switch e := msg.GetEvent().(type) {
	case *pb.ConnectorEvent_Frame:
		return sdk.ConnectorEvent{Frame: e.Frame}, nil
	case *pb.ConnectorEvent_State:
		state := stateChangeFromProto(e.State)
		return sdk.ConnectorEvent{State: &state}, nil
	case *pb.ConnectorEvent_Stats:
		stats := connectorStatsFromProto(e.Stats)
		return sdk.ConnectorEvent{Stats: &stats}, nil
	}
	return sdk.ConnectorEvent{}, fmt.Errorf("connector sent an event of unknown type %T", msg.GetEvent())
}

// Close ends the stream.
func (s *EventStream) Close() {
	s.cancel()
}

// Send passes one frame to the connector's Send.
func (h *ConnectorHarness) Send(ctx context.Context, frame []byte) error {
	_, err := h.client.Send(ctx, &pb.SendRequest{Frame: frame})
	return err
}

// SendBatch passes frames to the connector's SendBatch with the host's
// bound timeout, and returns how many it accepted and, when it stopped
// early, the gRPC status error of the first frame it did not accept.
func (h *ConnectorHarness) SendBatch(ctx context.Context, frames [][]byte, timeout time.Duration) (int, error) {
	resp, err := h.client.SendBatch(ctx, &pb.SendBatchRequest{Frames: frames, TimeoutMs: timeout.Milliseconds()})
	if err != nil {
		return 0, err
	}
	accepted := int(resp.GetAccepted())
	if accepted < len(frames) {
		return accepted, status.Error(codes.Code(resp.GetErrorCode()), resp.GetErrorMessage())
	}
	return accepted, nil
}

// Stop calls the connector's Stop.
func (h *ConnectorHarness) Stop(ctx context.Context) error {
	_, err := h.client.Stop(ctx, &pb.Empty{})
	return err
}

// Export calls the connector's Export, which returns UNIMPLEMENTED for a
// connector that is not an sdk.SessionExporter.
func (h *ConnectorHarness) Export(ctx context.Context) (sdk.SessionHandover, error) {
	resp, err := h.client.Export(ctx, &pb.Empty{})
	if err != nil {
		return sdk.SessionHandover{}, err
	}
	return sdk.SessionHandover{
		SessionID:      resp.GetSessionId(),
		NextSeq:        resp.GetNextSeq(),
		Received:       resp.GetReceived(),
		Unacknowledged: resp.GetUnacknowledged(),
		Queued:         resp.GetQueued(),
	}, nil
}

// Close stops the server. It is safe to call more than once.
func (h *ConnectorHarness) Close() {
	h.process.close()
}

func connectorConfigToProto(cfg sdk.ConnectorConfig) *pb.ConnectorConfig {
	req := &pb.ConnectorConfig{
		Url:         cfg.URL,
		WorkerId:    cfg.WorkerID,
		Token:       cfg.Token,
		Secret:      cfg.Secret,
		SecretFile:  cfg.SecretFile,
		CaFile:      cfg.CAFile,
		TaskTypes:   cfg.TaskTypes,
		Slots:       uint32(cfg.Slots),
		Labels:      cfg.Labels,
		HostVersion: cfg.HostVersion,
		ConfigJson:  cfg.Config,
	}
	for _, p := range cfg.Plugins {
		req.Plugins = append(req.Plugins, &pb.HostPlugin{
			Name: p.Name, Kind: p.Kind, Version: p.Version, ApiVersion: uint32(p.APIVersion),
		})
	}
	if r := cfg.Resume; r != nil {
		req.Resume = &pb.SessionHandover{
			SessionId:      r.SessionID,
			NextSeq:        r.NextSeq,
			Received:       r.Received,
			Unacknowledged: r.Unacknowledged,
			Queued:         r.Queued,
		}
	}
	return req
}
