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
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
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
	// tb logs the bounds that a result exceeded.
	tb testing.TB

	// StopGrace is how long Execute waits for the result of an attempt
	// after a Release or Cancel that the executor accepted. Then it ends
	// the call, as the worker host does. New sets it to HostStopGrace. A
	// test may shorten it before it calls Release or Cancel.
	StopGrace time.Duration

	mu sync.Mutex
	// calls are the open Execute calls by task id and attempt.
	calls map[attemptKey]*executeCall
}

// HostStopGrace is the worker host's wait for an attempt's result after
// its executor accepted Stop (defaultStopGrace in the host package). When
// it passes, the host ends the Execute call and reports the attempt
// cancelled or released without the executor's result.
const HostStopGrace = 10 * time.Second

// ErrStopGraceExceeded is wrapped by the error of an Execute call that
// the harness ended because the executor did not return within StopGrace
// after Release or Cancel.
var ErrStopGraceExceeded = errors.New("executor did not return its result within the stop grace")

type attemptKey struct {
	taskID  string
	attempt int
}

// executeCall is one open Execute call: cancel ends it, and done closes
// when it returns.
type executeCall struct {
	cancel context.CancelCauseFunc
	done   chan struct{}
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
		stopped:   make(chan struct{}),
		tb:        t,
		StopGrace: HostStopGrace,
		calls:     make(map[attemptKey]*executeCall),
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

// Configure passes config to the executor as the host would. Problems that
// the executor reported return as a *sdk.ConfigError.
func (h *Harness) Configure(ctx context.Context, config json.RawMessage) error {
	resp, err := h.client.Configure(ctx, &pb.ConfigureRequest{ConfigJson: config})
	if err != nil || len(resp.GetProblems()) == 0 {
		return err
	}
	configErr := &sdk.ConfigError{}
	for _, p := range resp.GetProblems() {
		configErr.Problems = append(configErr.Problems,
			sdk.ConfigProblem{Path: p.GetPath(), Summary: p.GetSummary(), Detail: p.GetDetail()})
	}
	return configErr
}

// Run executes task and returns its result and every progress report.
// Cancelling ctx cancels the task, as the host does on a CancelTask from the
// coordinator, and Run then returns the context's error. The error is set
// only when the call failed before a result arrived. Execute also returns
// the checkpoints.
func (h *Harness) Run(ctx context.Context, task sdk.Task) (sdk.Result, []Progress, error) {
	report, err := h.Execute(ctx, task)
	return report.Result, report.Progress, err
}

// Report is the record of everything one attempt sent, its result last.
type Report struct {
	Result   sdk.Result
	Progress []Progress
	// Checkpoints are the saved checkpoints in order. As the worker host
	// does, the harness sets Attempt to the task's attempt and numbers
	// Sequence from 1.
	Checkpoints []sdk.Checkpoint
	// Bounded lists what the worker host's result bounds changed in the
	// result, one note per field, as the host notes it in the message. It
	// is empty when the result was within the bounds.
	Bounded []string
}

// LastCheckpoint returns the newest checkpoint, or nil when the attempt
// saved none. Set it as the Checkpoint of the next attempt's Task to test
// resuming.
func (r Report) LastCheckpoint() *sdk.Checkpoint {
	if len(r.Checkpoints) == 0 {
		return nil
	}
	last := r.Checkpoints[len(r.Checkpoints)-1]
	return &last
}

// Execute runs task, passing task.Checkpoint to the executor as the host
// passes the coordinator's stored checkpoint, and returns everything the
// attempt reported. It applies the worker host's result bounds: 1 MiB of
// output tail, a one-line message of 4 KiB and 1 MiB of data. Progress and
// checkpoint messages get the message bound. It logs the bounds that a
// result exceeded. Errors are those of Run; the report
// then holds what arrived before the failure. When the executor does not
// return within StopGrace after a Release or Cancel, Execute ends the call
// and returns an error that wraps ErrStopGraceExceeded.
func (h *Harness) Execute(ctx context.Context, task sdk.Task) (Report, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	defer h.track(task, cancel)()
	report, err := h.execute(ctx, task)
	if cause := context.Cause(ctx); err != nil && errors.Is(cause, ErrStopGraceExceeded) {
		err = cause
	}
	return report, err
}

// track registers the Execute call of task and returns the function that
// removes it.
func (h *Harness) track(task sdk.Task, cancel context.CancelCauseFunc) (untrack func()) {
	key := attemptKey{taskID: task.ID, attempt: task.Attempt}
	call := &executeCall{cancel: cancel, done: make(chan struct{})}
	h.mu.Lock()
	h.calls[key] = call
	h.mu.Unlock()
	return func() {
		close(call.done)
		h.mu.Lock()
		if h.calls[key] == call {
			delete(h.calls, key)
		}
		h.mu.Unlock()
	}
}

// endAfterGrace ends the Execute call of task unless it returns within
// StopGrace.
func (h *Harness) endAfterGrace(task sdk.Task) {
	h.mu.Lock()
	call := h.calls[attemptKey{taskID: task.ID, attempt: task.Attempt}]
	grace := h.StopGrace
	h.mu.Unlock()
	if call == nil {
		return
	}
	go func() {
		timer := time.NewTimer(grace)
		defer timer.Stop()
		select {
		case <-call.done:
		case <-timer.C:
			call.cancel(fmt.Errorf("%w: task %s attempt %d did not return within %s after its stop; the worker host ends the call "+
				"here too, and the attempt keeps only the checkpoints saved before, so return from Execute "+
				"soon after its context ends", ErrStopGraceExceeded, task.ID, task.Attempt, grace))
		}
	}()
}

func (h *Harness) execute(ctx context.Context, task sdk.Task) (Report, error) {
	stream, err := h.client.Execute(ctx, &pb.ExecuteRequest{
		TaskId:     task.ID,
		Attempt:    uint32(task.Attempt),
		Type:       task.Type,
		Payload:    task.Payload,
		TimeoutMs:  task.Timeout.Milliseconds(),
		Checkpoint: checkpointToProto(task.Checkpoint),
	})
	if err != nil {
		return Report{}, err
	}
	var report Report
	for {
		event, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return report, fmt.Errorf("executor stream ended without a result")
		}
		if err != nil {
			return report, err
		}
		if p := event.GetProgress(); p != nil {
			report.Progress = append(report.Progress, Progress{Fraction: p.GetFraction(),
				Message: dtfplugin.BoundMessage(p.GetMessage())})
			continue
		}
		if cp := event.GetCheckpoint(); cp != nil {
			report.Checkpoints = append(report.Checkpoints, sdk.Checkpoint{
				Data:     cp.GetData(),
				Fraction: cp.GetFraction(),
				Message:  dtfplugin.BoundMessage(cp.GetMessage()),
				Attempt:  task.Attempt,
				Sequence: uint64(len(report.Checkpoints) + 1),
			})
			continue
		}
		if r := event.GetResult(); r != nil {
			report.Bounded = dtfplugin.BoundResult(r)
			if len(report.Bounded) > 0 {
				h.tb.Logf("sdktest: task %s attempt %d: the worker host bounds this result: %s",
					task.ID, task.Attempt, strings.Join(report.Bounded, "; "))
			}
			report.Result = sdk.Result{
				Status:   statusFromProto(r.GetStatus()),
				ExitCode: int(r.GetExitCode()),
				Message:  r.GetMessage(),
				Output:   r.GetOutput(),
				Data:     r.GetResultJson(),
			}
			return report, nil
		}
	}
}

// Release stops the running attempt of task as a draining worker host
// does: the attempt's context ends with a cause that wraps sdk.ErrReleased
// and message, while its Execute call stays open, so that the executor can
// still save a last checkpoint before it returns. Call it while Execute
// runs in another goroutine. Until the attempt has started in the
// executor, it tries again every 10 milliseconds, for at most
// stopRetryLimit or until ctx ends. Once the executor accepted the stop,
// Execute waits at most StopGrace for the result.
func (h *Harness) Release(ctx context.Context, task sdk.Task, message string) error {
	return h.stop(ctx, task, pb.StopReason_STOP_REASON_RELEASED, message)
}

// Cancel stops the running attempt of task as the worker host does when
// the coordinator cancels it: the cause wraps sdk.ErrCancelled. It retries
// as Release does.
func (h *Harness) Cancel(ctx context.Context, task sdk.Task, message string) error {
	return h.stop(ctx, task, pb.StopReason_STOP_REASON_CANCELLED, message)
}

// stopRetryLimit bounds how long Release and Cancel wait for the attempt
// to start.
const stopRetryLimit = 5 * time.Second

func (h *Harness) stop(ctx context.Context, task sdk.Task, reason pb.StopReason, message string) error {
	ctx, cancel := context.WithTimeout(ctx, stopRetryLimit)
	defer cancel()
	ticker := time.NewTicker(10 * time.Millisecond)
	defer ticker.Stop()
	var notFound error
	for {
		_, err := h.client.Stop(ctx, &pb.StopRequest{
			TaskId: task.ID, Attempt: uint32(task.Attempt), Reason: reason, Message: message,
		})
		code := status.Code(err)
		switch {
		case code == codes.NotFound:
			notFound = err
		case notFound != nil && (code == codes.DeadlineExceeded || code == codes.Canceled):
			return fmt.Errorf("stop task %s attempt %d: the attempt did not start: %w; last error: %v",
				task.ID, task.Attempt, err, notFound)
		case err == nil:
			h.endAfterGrace(task)
			return nil
		default:
			return err
		}
		select {
		case <-ctx.Done():
		case <-ticker.C:
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

// checkpointToProto converts a checkpoint to the plugin API, as the worker
// host does before it hands a stored checkpoint to an executor; nil stays
// nil.
func checkpointToProto(cp *sdk.Checkpoint) *pb.Checkpoint {
	if cp == nil {
		return nil
	}
	return &pb.Checkpoint{
		Data:     cp.Data,
		Fraction: cp.Fraction,
		Message:  cp.Message,
		Attempt:  uint32(cp.Attempt),
		Sequence: cp.Sequence,
	}
}

// statusFromProto converts a result's status as the worker host reads it:
// an unknown or unspecified value becomes sdk.StatusFailed.
func statusFromProto(s pb.Status) sdk.Status {
	switch s {
	case pb.Status_STATUS_SUCCEEDED:
		return sdk.StatusSucceeded
	case pb.Status_STATUS_CANCELLED:
		return sdk.StatusCancelled
	case pb.Status_STATUS_TIMED_OUT:
		return sdk.StatusTimedOut
	default:
		return sdk.StatusFailed
	}
}
