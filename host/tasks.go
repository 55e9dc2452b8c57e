package host

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dtf-io/dtf/host/config"
	dtfplugin "github.com/dtf-io/dtf/plugin"
	"github.com/dtf-io/dtf/plugin/pb"
	wirepb "github.com/dtf-io/dtf/protocol/pb"
)

// executorGrace is how long an executor may run past a task's timeout
// before the host cancels the call itself. Executors enforce the timeout
// and report timed_out, so the grace only leaves them time to kill the task.
const executorGrace = 10 * time.Second

// executorPlugin is one executor plugin and its current process. Its
// supervisor (supervisor.go) relaunches a process that crashed.
type executorPlugin struct {
	cfg  config.Plugin
	host *Host
	// crashed wakes the supervisor when a task's call broke.
	crashed chan struct{}

	mu   sync.Mutex
	proc pluginProcess
	// launches counts the processes started, so the current one has
	// number launches. started is when it started.
	launches uint64
	started  time.Time
	// down is the exit of the crashed process while proc is nil, and
	// exits maps the launch numbers of recent crashes to their exits.
	down  string
	exits map[uint64]string
	// upAgain, while the plugin is down, is closed when it runs again.
	upAgain chan struct{}
	// staysDown is set when the plugin crashed and its restart policy is
	// never.
	staysDown bool
}

func (e *executorPlugin) current() pluginProcess {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.proc
}

func (e *executorPlugin) configure(ctx context.Context, proc pluginProcess) error {
	resp, err := proc.Executor().Configure(ctx, &pb.ConfigureRequest{ConfigJson: e.cfg.ConfigJSON})
	return configureResult(e.cfg, resp.GetProblems(), err)
}

// runningTask is an attempt that runs on this worker.
type runningTask struct {
	ref taskRef
	// plugin is the name of the executor plugin block that runs it.
	plugin string
	// ctx is the attempt's context. It ends with cancel, which also
	// cancels the Execute call, or when runTask returns.
	ctx    context.Context
	cancel context.CancelFunc

	mu           sync.Mutex
	cancelReason string
	// releaseReason is set when a stopping host gives the attempt back
	// (drain.go). started is set once the attempt holds a slot, and launch
	// numbers the executor process that runs it (supervisor.go).
	releaseReason string
	started       bool
	launch        uint64
	// client is the executor client of the attempt's Execute call, set
	// just before the call opens; stop.go calls its Stop method.
	client      pb.ExecutorClient
	checkpoints attemptCheckpoints
}

// handleAssign starts an assigned attempt on the executor of its type.
func (h *Host) handleAssign(frame *wirepb.Frame) {
	assign := frame.GetAssign()
	ref := refOf(assign.GetRef())
	logger := h.logger.With("task_id", ref.TaskID, "attempt", ref.Attempt)

	h.mu.Lock()
	_, isRunning := h.running[ref]
	h.mu.Unlock()
	if isRunning {
		logger.Debug("ignoring repeated assignment of a running attempt")
		return
	}
	if h.queueUnaccepted(ref) {
		logger.Debug("repeated assignment of a finished attempt; " +
			"its outcome is sent again unless the connector already has it")
		return
	}

	ex := h.routes[assign.GetType()]
	if ex == nil {
		logger.Warn("no executor for task type", "type", assign.GetType())
		now := time.Now().UnixMilli()
		h.complete(ref, &wirepb.TaskOutcome{
			Ref:            ref.proto(),
			Status:         wirepb.Status_STATUS_FAILED,
			Message:        fmt.Sprintf("worker has no executor for task type %q", assign.GetType()),
			StartedUnixMs:  now,
			FinishedUnixMs: now,
		})
		return
	}

	ctx, cancel := context.WithCancel(h.tasksCtx)
	task := &runningTask{ref: ref, plugin: ex.cfg.Name, ctx: ctx, cancel: cancel}
	h.mu.Lock()
	h.lastAssign = time.Now()
	stopping := h.stopping
	if stopping {
		// The attempt counts as running until complete holds its released
		// outcome, so that a drain or stop waits for that outcome instead
		// of closing the session while the outbox write is under way. The
		// release reason keeps release from stopping it a second time.
		task.releaseReason = releasedWhileStopping
	}
	h.running[ref] = task
	h.mu.Unlock()
	if stopping {
		cancel()
		logger.Info("releasing task: the worker is stopping")
		h.complete(ref, rejectedOutcome(ref, releasedWhileStopping, true))
		return
	}
	h.tasks.Add(1)
	go func() {
		defer h.tasks.Done()
		defer cancel()
		h.runTask(ctx, task, ex, assign)
	}()
	logger.Info("task assigned", "type", assign.GetType(), "name", assign.GetName(), "plugin", ex.cfg.Name)
}

// runTask waits for a free slot, runs the attempt on its executor and
// records the outcome. An attempt interrupted by the host's shutdown has
// no outcome: the coordinator requeues it when the worker's state sync no
// longer lists it, or after its grace period.
func (h *Host) runTask(ctx context.Context, task *runningTask, ex *executorPlugin, assign *wirepb.Assign) {
	select {
	case h.slots <- struct{}{}:
		defer func() { <-h.slots }()
	case <-ctx.Done():
		h.finishCancelled(task, time.Now())
		return
	}
	task.mu.Lock()
	task.started = true
	task.mu.Unlock()

	started := time.Now()
	h.sendBestEffort(&wirepb.Frame{Body: &wirepb.Frame_TaskStarted{
		TaskStarted: &wirepb.TaskStarted{Ref: task.ref.proto()},
	}})
	result, err := h.execute(ctx, task, ex, assign)
	interrupted := result == nil || result.GetStatus() == pb.Status_STATUS_CANCELLED
	if h.tasksCtx.Err() != nil && task.reason() == "" && task.released() == "" && interrupted {
		h.mu.Lock()
		delete(h.running, task.ref)
		h.mu.Unlock()
		h.logger.Info("task interrupted by shutdown, the coordinator will requeue it",
			"task_id", task.ref.TaskID, "attempt", task.ref.Attempt)
		return
	}

	outcome := &wirepb.TaskOutcome{
		Ref:            task.ref.proto(),
		StartedUnixMs:  started.UnixMilli(),
		FinishedUnixMs: time.Now().UnixMilli(),
	}
	switch {
	case result != nil:
		outcome.Status = wireStatus(result.GetStatus())
		outcome.ExitCode = result.GetExitCode()
		outcome.Message = result.GetMessage()
		outcome.Output = result.GetOutput()
		outcome.Result = result.GetResultJson()
		if task.reason() != "" && outcome.Status == wirepb.Status_STATUS_CANCELLED {
			outcome.Message = task.reason()
		}
	case task.reason() != "":
		outcome.Status = wirepb.Status_STATUS_CANCELLED
		outcome.Message = task.reason()
	case task.released() != "":
		// markReleased fills in the outcome.
	case errors.Is(err, errPastTimeout):
		h.logger.Warn("executor plugin ignored the task timeout; the host ended the call and freed the slot, "+
			"but the plugin may still run the attempt until its process stops",
			"plugin", ex.cfg.Name, "task_id", task.ref.TaskID, "attempt", task.ref.Attempt, "grace", h.timeoutGrace)
		outcome.Status = wirepb.Status_STATUS_TIMED_OUT
		outcome.Message = fmt.Sprintf("executor %s did not stop within the task timeout plus %s", ex.cfg.Name, h.timeoutGrace)
	default:
		outcome.Status = wirepb.Status_STATUS_FAILED
		outcome.Message = fmt.Sprintf("executor plugin %s failed: %v", ex.cfg.Name, err)
		if crash := ex.crashMessage(task, err); crash != "" {
			outcome.Message, outcome.Retryable = crash, true
		}
	}
	markReleased(task, outcome)
	h.attachCheckpoint(task, outcome)
	h.complete(task.ref, outcome)
}

// releasedWhileStopping is the message of the released outcome of an
// attempt assigned after the host began to drain or stop.
const releasedWhileStopping = "not started before the worker began stopping"

// errPastTimeout marks an Execute call that the host ended because the
// executor ran past the task timeout plus timeoutGrace.
var errPastTimeout = errors.New("executor ran past the task timeout and its grace")

// execute calls the executor and forwards its progress and checkpoints. It
// returns the result, or nil and the error when the call failed before a
// result. The error wraps errPastTimeout when the task timeout plus
// timeoutGrace ended the call.
func (h *Host) execute(
	ctx context.Context,
	task *runningTask,
	ex *executorPlugin,
	assign *wirepb.Assign,
) (result *pb.Result, err error) {
	if timeout := assign.GetTimeoutMs(); timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(timeout)*time.Millisecond+h.timeoutGrace)
		defer cancel()
		defer func() {
			// gRPC sends the deadline to the plugin, whose own timer can
			// end the call a moment before ctx's timer fires here.
			pastDeadline := errors.Is(ctx.Err(), context.DeadlineExceeded) ||
				status.Code(err) == codes.DeadlineExceeded
			if err != nil && pastDeadline {
				err = fmt.Errorf("%w: %w", errPastTimeout, err)
			}
		}()
	}
	client, err := ex.clientFor(task)
	var down *executorDownError
	if errors.As(err, &down) {
		h.logger.Info("task waits for its executor plugin to restart", "task_id", task.ref.TaskID,
			"attempt", task.ref.Attempt, "plugin", ex.cfg.Name, "max_wait", h.executorUpWait)
		// Asked again whether or not the wait ended with a restart: the
		// plugin may have been left down meanwhile, and the error then
		// says so instead of "restarting".
		ex.awaitUp(ctx, h.executorUpWait)
		client, err = ex.clientFor(task)
	}
	if err != nil {
		return nil, err
	}
	stream, err := client.Execute(ctx, &pb.ExecuteRequest{
		TaskId:     task.ref.TaskID,
		Attempt:    task.ref.Attempt,
		Type:       assign.GetType(),
		Payload:    assign.GetPayload(),
		TimeoutMs:  assign.GetTimeoutMs(),
		Checkpoint: executeCheckpoint(assign.GetCheckpoint()),
	})
	if err != nil {
		return nil, err
	}
	for {
		event, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil, errors.New("executor ended the call without a result")
		}
		if err != nil {
			return nil, err
		}
		if progress := event.GetProgress(); progress != nil {
			h.sendBestEffort(&wirepb.Frame{Body: &wirepb.Frame_TaskProgress{TaskProgress: &wirepb.TaskProgress{
				Ref: task.ref.proto(), Fraction: progress.GetFraction(),
				Message: dtfplugin.BoundMessage(progress.GetMessage()),
			}}})
			continue
		}
		if cp := event.GetCheckpoint(); cp != nil {
			h.saveCheckpoint(task, cp)
			continue
		}
		if result := event.GetResult(); result != nil {
			return result, nil
		}
	}
}

// finishCancelled records an attempt cancelled or released before it got a
// slot.
func (h *Host) finishCancelled(task *runningTask, at time.Time) {
	if reason := task.released(); reason != "" && task.reason() == "" {
		h.complete(task.ref, rejectedOutcome(task.ref, reason, true))
		return
	}
	if task.reason() == "" {
		h.mu.Lock()
		delete(h.running, task.ref)
		h.mu.Unlock()
		return
	}
	h.complete(task.ref, &wirepb.TaskOutcome{
		Ref:            task.ref.proto(),
		Status:         wirepb.Status_STATUS_CANCELLED,
		Message:        task.reason(),
		StartedUnixMs:  at.UnixMilli(),
		FinishedUnixMs: at.UnixMilli(),
	})
}

// Bounds of the retries of a failed outbox write. A write fails on a full
// disk, a read-only or removed folder or wrong permissions. A few short
// retries ride out a passing condition without holding the task's slot for
// long.
const (
	outboxWriteAttempts = 3
	outboxRetryDelay    = 200 * time.Millisecond
)

// complete writes the outcome to the outbox, holds it and queues it for the
// resender. The outcome is written before it is sent, so an acknowledgement
// never refers to an outcome that a crash could lose.
//
// When every write attempt fails, the outcome is held in memory and sent
// anyway: the coordinator can still apply it, and while the host runs it is
// resent like any other. Only a stop of the host before the acknowledgement
// loses it. The next state sync then lists the attempt as neither running
// nor held, so the coordinator ends it as lost and requeues the task within
// its max_attempts.
func (h *Host) complete(ref taskRef, outcome *wirepb.TaskOutcome) {
	logger := h.logger.With("task_id", ref.TaskID, "attempt", ref.Attempt)
	if notes := boundOutcome(outcome); len(notes) > 0 {
		logger.Warn("outcome bounded to fit one frame", "changes", logMessage(strings.Join(notes, "; ")))
	}
	var memory *wirepb.TaskOutcome
	h.outboxWrites <- struct{}{}
	err := h.writeOutbox(outcome)
	<-h.outboxWrites
	if err != nil {
		logger.Error("outcome not written to outbox; it is kept in memory only and lost if the worker "+
			"stops before the coordinator acknowledges it, and the coordinator then requeues the task; "+
			"check free space and permissions of the outbox folder",
			"dir", h.outbox.Dir(), "write_attempts", outboxWriteAttempts, "error", err)
		memory = outcome
	}
	h.holdOutcome(ref, memory)
	h.recordOutcome(outcome)
	logger.Info("task finished", "status", outcome.GetStatus().String(), "exit_code", outcome.GetExitCode(),
		"message", logMessage(outcome.GetMessage()))
}

// maxOutboxWrites is how many outcomes complete encodes and writes to the
// outbox at once. The JSON encoding of an outcome takes several times the
// outcome's size in transient memory. When many slots finish at the same
// moment, as after a network cut, at most this many encodings are under
// way, instead of one per slot.
const maxOutboxWrites = 2

// writeOutbox puts outcome in the outbox, trying up to outboxWriteAttempts
// times with a growing delay, and returns the last error.
func (h *Host) writeOutbox(outcome *wirepb.TaskOutcome) error {
	delay := outboxRetryDelay
	var err error
	for attempt := 1; attempt <= outboxWriteAttempts; attempt++ {
		if err = h.outbox.Put(outcome); err == nil {
			return nil
		}
		if attempt < outboxWriteAttempts {
			h.logger.Warn("outbox write failed, retrying", "task_id", outcome.GetRef().GetTaskId(),
				"attempt", outcome.GetRef().GetAttempt(), "write_attempt", attempt, "error", err)
			time.Sleep(delay)
			delay *= 2
		}
	}
	return err
}

// cancelTask cancels a running attempt; an attempt not running here is
// ignored, because it finished or never started.
func (h *Host) cancelTask(ref taskRef, reason string) {
	h.mu.Lock()
	task := h.running[ref]
	h.mu.Unlock()
	logger := h.logger.With("task_id", ref.TaskID, "attempt", ref.Attempt)
	if task == nil {
		logger.Debug("cancel for an attempt that is not running", "reason", reason)
		return
	}
	task.mu.Lock()
	first := task.cancelReason == ""
	task.cancelReason = reason
	task.mu.Unlock()
	if !first {
		logger.Debug("repeated cancel of a task being cancelled", "reason", reason)
		return
	}
	logger.Info("cancelling task", "reason", reason)
	h.stopAttempt(task, pb.StopReason_STOP_REASON_CANCELLED, reason)
}

func (t *runningTask) reason() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.cancelReason
}

// wireStatus converts a plugin API status to the wire status. The numbers
// match today, but the two enums belong to different APIs.
func wireStatus(s pb.Status) wirepb.Status {
	switch s {
	case pb.Status_STATUS_SUCCEEDED:
		return wirepb.Status_STATUS_SUCCEEDED
	case pb.Status_STATUS_CANCELLED:
		return wirepb.Status_STATUS_CANCELLED
	case pb.Status_STATUS_TIMED_OUT:
		return wirepb.Status_STATUS_TIMED_OUT
	default:
		return wirepb.Status_STATUS_FAILED
	}
}
