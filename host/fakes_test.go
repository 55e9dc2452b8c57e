package host

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	dtfplugin "github.com/dtf-io/dtf/plugin"
	"github.com/dtf-io/dtf/plugin/pb"
	"github.com/dtf-io/dtf/protocol"
	wirepb "github.com/dtf-io/dtf/protocol/pb"
	"github.com/dtf-io/dtf/sdk"
)

// fakeProcess is an in-process stand-in for a plugin process: a gRPC server
// on an in-memory listener and a client connected to it.
type fakeProcess struct {
	info      *pb.PluginInfo
	executor  pb.ExecutorClient
	connector pb.ConnectorClient
	metrics   pb.MetricsClient
	server    *grpc.Server
	conn      *grpc.ClientConn
	killed    atomic.Bool
	killOnce  sync.Once
}

func newFakeProcess(t *testing.T, info *pb.PluginInfo, register func(*grpc.Server)) *fakeProcess {
	t.Helper()
	listener := bufconn.Listen(1 << 20)
	// The message limits of a real plugin process, so large results and
	// frames reach the host's own bounds.
	server := grpc.NewServer(grpc.MaxRecvMsgSize(dtfplugin.MaxMessageBytes),
		grpc.MaxSendMsgSize(dtfplugin.MaxMessageBytes))
	register(server)
	go func() { _ = server.Serve(listener) }()
	conn, err := grpc.NewClient("passthrough:///fake",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			return listener.DialContext(ctx)
		}),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(dtfplugin.MaxMessageBytes),
			grpc.MaxCallSendMsgSize(dtfplugin.MaxMessageBytes)))
	require.NoError(t, err)
	p := &fakeProcess{info: info, server: server, conn: conn}
	t.Cleanup(p.Kill)
	return p
}

func (p *fakeProcess) Info() *pb.PluginInfo          { return p.info }
func (p *fakeProcess) Executor() pb.ExecutorClient   { return p.executor }
func (p *fakeProcess) Connector() pb.ConnectorClient { return p.connector }
func (p *fakeProcess) Metrics() pb.MetricsClient     { return p.metrics }
func (p *fakeProcess) Exited() bool                  { return p.killed.Load() }

// Pid is 0, because a fake runs inside the test process.
func (p *fakeProcess) Pid() int { return 0 }

// ExitStatus describes a fake's end as a killed process.
func (p *fakeProcess) ExitStatus() string {
	if !p.killed.Load() {
		return ""
	}
	return "signal: killed"
}
func (p *fakeProcess) Kill() {
	p.killOnce.Do(func() {
		p.killed.Store(true)
		_ = p.conn.Close()
		p.server.Stop()
	})
}

// fakeConnector plays the coordinator's side of the session through the
// Connector service: a test pushes events and reads the frames the host
// sends.
type fakeConnector struct {
	pb.UnimplementedConnectorServer

	configured  chan *pb.ConnectorConfig
	events      chan *pb.ConnectorEvent
	sent        chan *wirepb.Frame
	crash       chan struct{}
	stopped     chan struct{}
	stopOnce    sync.Once
	unavailable atomic.Bool
	// exhausted makes a Send of an outcome or a state sync fail as the
	// plugin does when its queue stayed full for send_timeout. stall makes
	// it wait until the caller's deadline. failedSends counts the Sends
	// failed either way.
	exhausted   atomic.Bool
	stall       atomic.Bool
	failedSends atomic.Int32
	// rejectOutcomes makes every outcome Send fail with InvalidArgument,
	// as the plugin rejects a frame over its max_frame_bytes.
	rejectOutcomes atomic.Bool
	// unaryOnly makes SendBatch fail with Unimplemented, as a plugin built
	// before the method existed does. sendCalls and batchCalls count the
	// Send and SendBatch calls served, the rejected ones included.
	unaryOnly  atomic.Bool
	sendCalls  atomic.Int32
	batchCalls atomic.Int32
	// holdBatches makes every SendBatch call wait until release is closed
	// or the call's deadline passes.
	holdBatches atomic.Bool
	release     chan struct{}
}

func newFakeConnector() *fakeConnector {
	return &fakeConnector{
		configured: make(chan *pb.ConnectorConfig, 4),
		events:     make(chan *pb.ConnectorEvent, 64),
		sent:       make(chan *wirepb.Frame, 64),
		crash:      make(chan struct{}),
		stopped:    make(chan struct{}),
		release:    make(chan struct{}),
	}
}

func (c *fakeConnector) Configure(_ context.Context, cfg *pb.ConnectorConfig) (*pb.ConfigureResponse, error) {
	c.configured <- cfg
	return &pb.ConfigureResponse{}, nil
}

func (c *fakeConnector) Events(_ *pb.Empty, stream grpc.ServerStreamingServer[pb.ConnectorEvent]) error {
	for {
		select {
		case event := <-c.events:
			if err := stream.Send(event); err != nil {
				return err
			}
		case <-c.crash:
			return status.Error(codes.Internal, "connector crashed")
		case <-c.stopped:
			return nil
		case <-stream.Context().Done():
			return nil
		}
	}
}

func (c *fakeConnector) Send(ctx context.Context, req *pb.SendRequest) (*pb.Empty, error) {
	c.sendCalls.Add(1)
	if err := c.accept(ctx, req.GetFrame()); err != nil {
		return nil, err
	}
	return &pb.Empty{}, nil
}

// SendBatch accepts the frames in order, as Send does, up to the first
// rejection. Like the reconnection plugin it waits no longer than the
// request's timeout_ms.
func (c *fakeConnector) SendBatch(ctx context.Context, req *pb.SendBatchRequest) (*pb.SendBatchResponse, error) {
	if c.unaryOnly.Load() {
		return nil, status.Error(codes.Unimplemented, "method SendBatch not implemented")
	}
	c.batchCalls.Add(1)
	if c.holdBatches.Load() {
		select {
		case <-c.release:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	if timeout := time.Duration(req.GetTimeoutMs()) * time.Millisecond; timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	for i, data := range req.GetFrames() {
		if err := c.accept(ctx, data); err != nil {
			rejection := status.Convert(err)
			return &pb.SendBatchResponse{
				Accepted:     uint32(i),
				ErrorCode:    uint32(rejection.Code()),
				ErrorMessage: rejection.Message(),
			}, nil
		}
	}
	return &pb.SendBatchResponse{Accepted: uint32(len(req.GetFrames()))}, nil
}

// accept passes one frame to the test on sent, or fails as the flags set.
func (c *fakeConnector) accept(ctx context.Context, data []byte) error {
	if c.unavailable.Load() {
		return status.Error(codes.Unavailable, "no session")
	}
	frame, err := protocol.Decode(data, 0)
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	// Only the frames that the host must deliver fail, so that progress
	// reports neither slow a test down nor count as failures.
	if typ := protocol.TypeOf(frame); typ == "task_outcome" || typ == "state_sync" {
		switch {
		case typ == "task_outcome" && c.rejectOutcomes.Load():
			c.failedSends.Add(1)
			return status.Error(codes.InvalidArgument, "frame exceeds max_frame_bytes")
		case c.exhausted.Load():
			c.failedSends.Add(1)
			return status.Error(codes.ResourceExhausted, "send queue still full after send_timeout")
		case c.stall.Load():
			<-ctx.Done()
			c.failedSends.Add(1)
			return status.FromContextError(ctx.Err()).Err()
		}
	}
	c.sent <- frame
	return nil
}

func (c *fakeConnector) Stop(context.Context, *pb.Empty) (*pb.Empty, error) {
	c.stopOnce.Do(func() { close(c.stopped) })
	return &pb.Empty{}, nil
}

func (c *fakeConnector) state(state, reason string) {
	c.events <- &pb.ConnectorEvent{Event: &pb.ConnectorEvent_State{State: &pb.StateChange{
		State: state, Reason: reason, SessionId: "s-1",
	}}}
}

func (c *fakeConnector) frame(t *testing.T, frame *wirepb.Frame) {
	data, err := protocol.Encode(frame)
	require.NoError(t, err)
	c.events <- &pb.ConnectorEvent{Event: &pb.ConnectorEvent_Frame{Frame: data}}
}

// fakePlugins launches fakes in place of plugin binaries: every connector
// launch creates a new fakeConnector published on connectors, and each
// executor serves the sdk.Executor of its plugin name.
type fakePlugins struct {
	t          *testing.T
	connectors chan *fakeConnector
	executors  map[string]sdk.Executor
	// metrics serves, per plugin name, the metrics plugins; every launch
	// of a name serves the same server.
	metrics map[string]pb.MetricsServer
	// failExecutors makes every executor launch fail, as a binary that
	// crashes at start does.
	failExecutors atomic.Bool
	mu            sync.Mutex
	launched      []*fakeProcess
	// byName lists the processes launched per plugin block name.
	byName map[string][]*fakeProcess
}

func (f *fakePlugins) launch(_ context.Context, cfg dtfplugin.LaunchConfig) (pluginProcess, error) {
	var proc *fakeProcess
	switch cfg.Kind {
	case dtfplugin.KindConnector:
		fake := newFakeConnector()
		proc = newFakeProcess(f.t, &pb.PluginInfo{Name: cfg.Name, Version: "test"}, func(s *grpc.Server) {
			pb.RegisterConnectorServer(s, fake)
		})
		proc.connector = pb.NewConnectorClient(proc.conn)
		f.connectors <- fake
	case dtfplugin.KindExecutor:
		if f.failExecutors.Load() {
			return nil, fmt.Errorf("start plugin %s: exited before it reported its address", cfg.Name)
		}
		exec := f.executors[cfg.Name]
		info := exec.Info()
		var server pb.ExecutorServer = sdk.NewExecutorServer(exec)
		if custom, ok := exec.(interface{ server() pb.ExecutorServer }); ok {
			server = custom.server()
		}
		proc = newFakeProcess(f.t, &pb.PluginInfo{Name: info.Name, Version: info.Version, TaskTypes: info.TaskTypes},
			func(s *grpc.Server) { pb.RegisterExecutorServer(s, server) })
		proc.executor = pb.NewExecutorClient(proc.conn)
	case dtfplugin.KindMetrics:
		server := f.metrics[cfg.Name]
		proc = newFakeProcess(f.t, &pb.PluginInfo{Name: cfg.Name, Version: "test"},
			func(s *grpc.Server) { pb.RegisterMetricsServer(s, server) })
		proc.metrics = pb.NewMetricsClient(proc.conn)
	}
	f.mu.Lock()
	f.launched = append(f.launched, proc)
	if f.byName == nil {
		f.byName = make(map[string][]*fakeProcess)
	}
	f.byName[cfg.Name] = append(f.byName[cfg.Name], proc)
	f.mu.Unlock()
	return proc, nil
}

// processes returns the processes launched for the plugin block name, oldest
// first.
func (f *fakePlugins) processes(name string) []*fakeProcess {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*fakeProcess(nil), f.byName[name]...)
}

func (f *fakePlugins) allKilled() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range f.launched {
		if !p.killed.Load() {
			return false
		}
	}
	return len(f.launched) > 0
}
