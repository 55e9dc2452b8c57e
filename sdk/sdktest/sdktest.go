// Package sdktest runs a dtf executor in-process behind a real gRPC
// connection, so that plugin authors can test their sdk.Executor through the
// same adapter and message limits that ServeExecutor uses, without building
// a binary or starting a worker host.
package sdktest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	dtfplugin "github.com/dtf-io/dtf/plugin"
	"github.com/dtf-io/dtf/plugin/pb"
	"github.com/dtf-io/dtf/sdk"
)

// Progress is one progress report of a task, in the order it arrived.
type Progress struct {
	Fraction float64
	Message  string
}

// Harness serves one executor on an in-memory gRPC connection.
type Harness struct {
	server  *sdk.ExecutorServer
	grpc    *grpc.Server
	conn    *grpc.ClientConn
	client  pb.ExecutorClient
	stopped chan struct{}
}

// bufferBytes sizes the in-memory connection's buffer; gRPC flow control
// keeps larger messages moving through it.
const bufferBytes = 1 << 20

// New serves e and registers Close with t.Cleanup. Options are the ones
// that sdk.ServeExecutor takes.
func New(t testing.TB, e sdk.Executor, opts ...sdk.Option) *Harness {
	t.Helper()
	listener := bufconn.Listen(bufferBytes)
	h := &Harness{
		server: sdk.NewExecutorServer(e, opts...),
		grpc: grpc.NewServer(
			grpc.MaxRecvMsgSize(dtfplugin.MaxMessageBytes),
			grpc.MaxSendMsgSize(dtfplugin.MaxMessageBytes),
		),
		stopped: make(chan struct{}),
	}
	pb.RegisterExecutorServer(h.grpc, h.server)
	go func() {
		defer close(h.stopped)
		_ = h.grpc.Serve(listener)
	}()

	conn, err := grpc.NewClient("passthrough:///sdktest",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			return listener.DialContext(ctx)
		}),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(dtfplugin.MaxMessageBytes),
			grpc.MaxCallSendMsgSize(dtfplugin.MaxMessageBytes),
		),
	)
	if err != nil {
		h.grpc.Stop()
		t.Fatalf("sdktest: connect to in-process executor: %v", err)
	}
	h.conn = conn
	h.client = pb.NewExecutorClient(conn)
	t.Cleanup(h.Close)
	return h
}

// Info calls the executor's Info through gRPC.
func (h *Harness) Info(ctx context.Context) (sdk.Info, error) {
	info, err := h.client.Info(ctx, &pb.Empty{})
	if err != nil {
		return sdk.Info{}, err
	}
	return sdk.Info{Name: info.GetName(), Version: info.GetVersion(), TaskTypes: info.GetTaskTypes()}, nil
}

// Configure passes config to the executor as the host would.
func (h *Harness) Configure(ctx context.Context, config json.RawMessage) error {
	_, err := h.client.Configure(ctx, &pb.ConfigureRequest{ConfigJson: config})
	return err
}

// Run executes task and returns its result and every progress report.
// Cancelling ctx cancels the task, as the host does on a CancelTask from the
// coordinator, and Run then returns the context's error. The error is set
// only when the call failed before a result arrived.
func (h *Harness) Run(ctx context.Context, task sdk.Task) (sdk.Result, []Progress, error) {
	stream, err := h.client.Execute(ctx, &pb.ExecuteRequest{
		TaskId:    task.ID,
		Attempt:   uint32(task.Attempt),
		Type:      task.Type,
		Payload:   task.Payload,
		TimeoutMs: task.Timeout.Milliseconds(),
	})
	if err != nil {
		return sdk.Result{}, nil, err
	}
	var progress []Progress
	for {
		event, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return sdk.Result{}, progress, fmt.Errorf("executor stream ended without a result")
		}
		if err != nil {
			return sdk.Result{}, progress, err
		}
		if p := event.GetProgress(); p != nil {
			progress = append(progress, Progress{Fraction: p.GetFraction(), Message: p.GetMessage()})
			continue
		}
		if r := event.GetResult(); r != nil {
			return sdk.Result{
				Status:   sdk.StatusFromProto(r.GetStatus()),
				ExitCode: int(r.GetExitCode()),
				Message:  r.GetMessage(),
				Output:   r.GetOutput(),
				Data:     r.GetResultJson(),
			}, progress, nil
		}
	}
}

// Close cancels running tasks, waits up to sdk.DefaultStopTimeout for them
// to return and stops the server. It is safe to call more than once.
func (h *Harness) Close() {
	h.server.Shutdown(sdk.DefaultStopTimeout)
	_ = h.conn.Close()
	h.grpc.Stop()
	select {
	case <-h.stopped:
	case <-time.After(sdk.DefaultStopTimeout):
	}
}
