package sdk

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	dtfplugin "github.com/dtf-io/dtf/plugin"
	"github.com/dtf-io/dtf/plugin/pb"
)

// DefaultStopTimeout is how long ServeExecutor waits for running tasks to
// return after it cancelled them at shutdown. It leaves an executor time to
// kill its process groups and stays under the host's own shutdown grace.
const DefaultStopTimeout = 5 * time.Second

// Bounds that the worker host applies to each Result before it sends the
// outcome, so that the outcome fits one frame to the coordinator. Output
// keeps its last MaxOutputBytes, and Message becomes one line of at most
// MaxMessageBytes. Data over MaxDataBytes is dropped. The message then
// ends with a note of each cut. Progress and checkpoint messages get the
// Message bound. The sdktest harness applies the same bounds.
const (
	MaxOutputBytes  = dtfplugin.MaxResultOutputBytes
	MaxMessageBytes = dtfplugin.MaxResultMessageBytes
	MaxDataBytes    = dtfplugin.MaxResultDataBytes
)

// Option configures ServeExecutor and NewExecutorServer.
type Option func(*options)

type options struct {
	logger      hclog.Logger
	stopTimeout time.Duration
}

// WithLogger sets the logger of the executor plugin. It must not write to
// stdout; the default, from NewLogger, logs JSON to stderr, which the host
// relays.
func WithLogger(logger hclog.Logger) Option {
	return func(o *options) { o.logger = logger }
}

// WithStopTimeout sets how long ServeExecutor waits at shutdown for
// cancelled tasks to return; the default is DefaultStopTimeout.
func WithStopTimeout(timeout time.Duration) Option {
	return func(o *options) { o.stopTimeout = timeout }
}

// NewLogger returns the logger that a plugin named name uses by default:
// hclog JSON lines on stderr, which the worker host relays into its own
// log under the plugin block's name, at the host's log level. Create it in
// main before ServeExecutor, because go-plugin replaces os.Stderr while it
// serves, and pass it to ServeExecutor with WithLogger.
func NewLogger(name string) hclog.Logger {
	return dtfplugin.NewLogger(name)
}

func buildOptions(opts []Option) options {
	o := options{stopTimeout: DefaultStopTimeout}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// ServeExecutor serves e as a dtf executor plugin and returns when the host
// kills the plugin, the host process exits, or the process receives
// SIGTERM. Each of these cancels the context of every running task, and
// ServeExecutor then waits up to the stop timeout for the tasks to return.
// Call it from main and return from main after it.
//
// When the binary's first argument is -version or --version, ServeExecutor
// instead prints one line with e's name and version, the plugin kind and
// the plugin API versions it serves, and exits with status 0. This works
// without the worker host, so release tooling and operators can ask any
// executor binary what it is.
func ServeExecutor(e Executor, opts ...Option) {
	o := buildOptions(opts)
	if o.logger == nil {
		// The logger must exist before serving, because go-plugin swaps
		// os.Stderr while it serves.
		o.logger = NewLogger(e.Info().Name)
		opts = append(opts, WithLogger(o.logger))
	}
	server := NewExecutorServer(e, opts...)
	dtfplugin.ServeExecutor(server, dtfplugin.WithLogger(o.logger))
	if !server.Shutdown(o.stopTimeout) {
		o.logger.Warn("tasks still running at exit", "stop_timeout", o.stopTimeout)
	}
}

// ExecutorServer adapts an Executor to the gRPC service that the host calls.
// ServeExecutor uses it, and the sdktest package and the worker host's own
// tests serve it on their own gRPC server. An executor does not need it: its
// methods take the generated plugin API types, which may change between
// dtf releases.
type ExecutorServer struct {
	pb.UnimplementedExecutorServer

	executor Executor
	logger   hclog.Logger

	mu       sync.Mutex
	closed   bool
	attempts map[int]*runningAttempt
	nextID   int
	running  sync.WaitGroup
}

// runningAttempt is one Execute call in progress.
type runningAttempt struct {
	taskID  string
	attempt uint32
	cancel  context.CancelCauseFunc
}

// NewExecutorServer returns the gRPC adapter of e.
func NewExecutorServer(e Executor, opts ...Option) *ExecutorServer {
	o := buildOptions(opts)
	if o.logger == nil {
		o.logger = hclog.NewNullLogger()
	}
	return &ExecutorServer{executor: e, logger: o.logger, attempts: make(map[int]*runningAttempt)}
}

// Info returns the executor's Info.
func (s *ExecutorServer) Info(context.Context, *pb.Empty) (*pb.PluginInfo, error) {
	info := s.executor.Info()
	return &pb.PluginInfo{Name: info.Name, Version: info.Version, TaskTypes: info.TaskTypes}, nil
}

// Configure passes the plugin block's JSON config to the executor, or to
// its ValidateConfig when the host only checks the config. A *ConfigError
// returns as the response's problems, or as success when it has none, and
// any other error as INVALID_ARGUMENT with its message.
func (s *ExecutorServer) Configure(_ context.Context, req *pb.ConfigureRequest) (*pb.ConfigureResponse, error) {
	var err error
	if validator, ok := s.executor.(ConfigValidator); ok && req.GetValidateOnly() {
		err = validator.ValidateConfig(req.GetConfigJson())
	} else {
		err = s.executor.Configure(req.GetConfigJson())
	}
	var configErr *ConfigError
	if errors.As(err, &configErr) && len(configErr.Problems) == 0 {
		// A ConfigError without problems, such as one built straight from
		// an empty DecodeConfig result, accepts the config.
		err = nil
	}
	if errors.As(err, &configErr) {
		problems := make([]*pb.ConfigProblem, 0, len(configErr.Problems))
		for _, p := range configErr.Problems {
			problems = append(problems, &pb.ConfigProblem{Path: p.Path, Summary: p.Summary, Detail: p.Detail})
		}
		return &pb.ConfigureResponse{Problems: problems}, nil
	}
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return &pb.ConfigureResponse{}, nil
}

// Execute runs one attempt and streams its progress and then its result.
// The attempt's context ends when the host calls Stop for it, cancels the
// call, or at Shutdown.
func (s *ExecutorServer) Execute(req *pb.ExecuteRequest, stream grpc.ServerStreamingServer[pb.ExecuteEvent]) error {
	ctx, id, err := s.register(stream.Context(), req.GetTaskId(), req.GetAttempt())
	if err != nil {
		return err
	}
	defer s.unregister(id)

	task := Task{
		ID:      req.GetTaskId(),
		Attempt: int(req.GetAttempt()),
		Type:    req.GetType(),
		Payload: req.GetPayload(),
		Timeout: time.Duration(req.GetTimeoutMs()) * time.Millisecond,
	}
	if cp := req.GetCheckpoint(); cp != nil {
		task.Checkpoint = checkpointFromProto(cp)
	}
	logger := s.logger.With("task_id", task.ID, "attempt", task.Attempt)
	reporter := &streamReporter{stream: stream, logger: logger}

	result := s.run(ctx, task, reporter, logger)
	reporter.finish()
	return stream.Send(&pb.ExecuteEvent{Event: &pb.ExecuteEvent_Result{Result: resultToProto(result)}})
}

// run calls the executor and turns an error or a panic into a result, so
// the host always gets a final event while the stream is open.
func (s *ExecutorServer) run(ctx context.Context, task Task, reporter Reporter, logger hclog.Logger) (result Result) {
	defer func() {
		if p := recover(); p != nil {
			logger.Error("executor panicked", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			result = Result{Status: StatusFailed, Message: fmt.Sprintf("executor panicked: %v", p)}
		}
	}()

	result, err := s.executor.Execute(ctx, task, reporter)
	switch {
	case err != nil && ctx.Err() != nil && isContextError(ctx, err):
		return Result{Status: StatusCancelled, Message: "cancelled: " + cancelMessage(ctx, err)}
	case err != nil:
		logger.Warn("task failed in executor", "error", err)
		return Result{Status: StatusFailed, Message: err.Error(), Output: result.Output}
	case result.Status == "":
		return Result{Status: StatusFailed, Message: "executor returned a result without a status",
			ExitCode: result.ExitCode, Output: result.Output, Data: result.Data}
	}
	return result
}

// isContextError reports whether err is the end of ctx: its error or its
// cause, such as ErrReleased after Stop.
func isContextError(ctx context.Context, err error) bool {
	if errors.Is(err, ctx.Err()) {
		return true
	}
	cause := context.Cause(ctx)
	return cause != nil && errors.Is(err, cause)
}

// cancelMessage returns err's message, or the cause of ctx when err does
// not contain it, so that the result's message names why the host stopped
// the attempt.
func cancelMessage(ctx context.Context, err error) string {
	if cause := context.Cause(ctx); !errors.Is(err, cause) {
		return cause.Error()
	}
	return err.Error()
}

func (s *ExecutorServer) register(
	parent context.Context,
	taskID string,
	attempt uint32,
) (context.Context, int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, 0, status.Error(codes.Unavailable, "executor plugin is shutting down")
	}
	ctx, cancel := context.WithCancelCause(parent)
	s.nextID++
	s.attempts[s.nextID] = &runningAttempt{taskID: taskID, attempt: attempt, cancel: cancel}
	s.running.Add(1)
	return ctx, s.nextID, nil
}

func (s *ExecutorServer) unregister(id int) {
	s.mu.Lock()
	entry := s.attempts[id]
	delete(s.attempts, id)
	s.mu.Unlock()
	entry.cancel(nil)
	s.running.Done()
}

// Stop ends the context of a running attempt with a cause that wraps
// ErrReleased or ErrCancelled, and returns at once. The attempt's Execute
// call stays open, so the executor can still save a checkpoint before it
// returns its result. An attempt that is not running returns NOT_FOUND.
func (s *ExecutorServer) Stop(_ context.Context, req *pb.StopRequest) (*pb.StopResponse, error) {
	var sentinel error
	switch req.GetReason() {
	case pb.StopReason_STOP_REASON_RELEASED:
		sentinel = ErrReleased
	case pb.StopReason_STOP_REASON_CANCELLED:
		sentinel = ErrCancelled
	default:
		return nil, status.Errorf(codes.InvalidArgument,
			"stop reason %s of task %s attempt %d is not one of released, cancelled",
			req.GetReason(), req.GetTaskId(), req.GetAttempt())
	}
	cause := sentinel
	if req.GetMessage() != "" {
		cause = fmt.Errorf("%w: %s", sentinel, req.GetMessage())
	}

	found := false
	s.mu.Lock()
	for _, entry := range s.attempts {
		if entry.taskID == req.GetTaskId() && entry.attempt == req.GetAttempt() {
			entry.cancel(cause)
			found = true
		}
	}
	s.mu.Unlock()
	if !found {
		return nil, status.Errorf(codes.NotFound, "task %s attempt %d is not running in this executor",
			req.GetTaskId(), req.GetAttempt())
	}
	s.logger.Info("stopping task", "task_id", req.GetTaskId(), "attempt", req.GetAttempt(),
		"reason", cause.Error())
	return &pb.StopResponse{}, nil
}

// Shutdown rejects new tasks, cancels the running ones and waits up to
// timeout for them to return. It reports whether all of them returned.
func (s *ExecutorServer) Shutdown(timeout time.Duration) bool {
	s.mu.Lock()
	s.closed = true
	for _, entry := range s.attempts {
		entry.cancel(nil)
	}
	s.mu.Unlock()

	done := make(chan struct{})
	go func() {
		s.running.Wait()
		close(done)
	}()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-done:
		return true
	case <-timer.C:
		return false
	}
}

// streamReporter sends progress and checkpoint events on the Execute
// stream. gRPC streams do not allow concurrent sends, and executors may
// report from several goroutines, so sends are serialized. Progress after
// the result is dropped, and a checkpoint after it returns
// ErrAttemptFinished.
type streamReporter struct {
	stream grpc.ServerStreamingServer[pb.ExecuteEvent]
	logger hclog.Logger

	mu   sync.Mutex
	done bool
}

func (r *streamReporter) Progress(fraction float64, message string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		return
	}
	err := r.stream.Send(&pb.ExecuteEvent{Event: &pb.ExecuteEvent_Progress{
		Progress: &pb.Progress{Fraction: clampFraction(fraction), Message: message},
	}})
	if err != nil {
		// Progress is best effort; the host learns the result either way.
		r.logger.Debug("progress not sent", "error", err)
	}
}

// Checkpoint sends one checkpoint on the stream. Unlike progress it is not
// best effort: the executor learns when the host did not get it.
func (r *streamReporter) Checkpoint(data []byte, fraction float64, message string) error {
	if err := checkCheckpointSize(len(data)); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		return fmt.Errorf("save checkpoint: %w", ErrAttemptFinished)
	}
	err := r.stream.Send(&pb.ExecuteEvent{Event: &pb.ExecuteEvent_Checkpoint{
		Checkpoint: &pb.Checkpoint{Data: data, Fraction: clampFraction(fraction), Message: message},
	}})
	if err != nil {
		return fmt.Errorf("send checkpoint to worker host: %w", err)
	}
	return nil
}

// checkCheckpointSize returns an error wrapping ErrCheckpointTooLarge when
// size bytes of checkpoint data exceed MaxCheckpointBytes.
func checkCheckpointSize(size int) error {
	if size > MaxCheckpointBytes {
		return fmt.Errorf("save checkpoint: %w: %d bytes of data, the limit is %d bytes; "+
			"keep large state in the executor's own storage and checkpoint a reference to it",
			ErrCheckpointTooLarge, size, MaxCheckpointBytes)
	}
	return nil
}

// checkpointFromProto converts a checkpoint of the plugin API; nil stays nil.
func checkpointFromProto(cp *pb.Checkpoint) *Checkpoint {
	if cp == nil {
		return nil
	}
	return &Checkpoint{
		Data:     cp.GetData(),
		Fraction: cp.GetFraction(),
		Message:  cp.GetMessage(),
		Attempt:  int(cp.GetAttempt()),
		Sequence: cp.GetSequence(),
	}
}

func (r *streamReporter) finish() {
	r.mu.Lock()
	r.done = true
	r.mu.Unlock()
}

func clampFraction(f float64) float64 {
	switch {
	case f != f || f < 0: // NaN or negative
		return 0
	case f > 1:
		return 1
	}
	return f
}

func resultToProto(r Result) *pb.Result {
	return &pb.Result{
		Status:     statusToProto(r.Status),
		ExitCode:   int32(r.ExitCode),
		Message:    r.Message,
		Output:     r.Output,
		ResultJson: r.Data,
	}
}

// statusToProto converts a Status to its plugin API value; an unknown
// status becomes STATUS_UNSPECIFIED, which the host records as failed.
func statusToProto(s Status) pb.Status {
	switch s {
	case StatusSucceeded:
		return pb.Status_STATUS_SUCCEEDED
	case StatusFailed:
		return pb.Status_STATUS_FAILED
	case StatusCancelled:
		return pb.Status_STATUS_CANCELLED
	case StatusTimedOut:
		return pb.Status_STATUS_TIMED_OUT
	default:
		return pb.Status_STATUS_UNSPECIFIED
	}
}

var _ pb.ExecutorServer = (*ExecutorServer)(nil)
