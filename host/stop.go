package host

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dtf-io/dtf/plugin/pb"
)

// The host stops a running attempt, to release it or because the
// coordinator cancelled it, in two steps. It first calls the executor's
// Stop method, which ends the attempt's context in the plugin while the
// Execute stream stays open. The executor can then save a last checkpoint,
// which the host numbers, sends and attaches to the attempt's outcome, and
// return its result. Only when no result arrived within the stop grace
// (defaultStopGrace) does the host cancel the Execute call. A plugin built
// before the Stop method returns UNIMPLEMENTED, and the host then cancels
// the call at once, as it did before: the attempt keeps only the
// checkpoints it saved earlier.

const (
	// defaultStopGrace bounds the wait for the result of an attempt after
	// its executor accepted Stop. It covers the example executors' default
	// kill grace of 5 seconds between SIGTERM and SIGKILL of a task's
	// process group, plus the last checkpoint. It is the same as
	// executorGrace, which gives an executor the same time after a timeout.
	defaultStopGrace = executorGrace
	// stopCallTimeout bounds the Stop call itself. The SDK returns from it
	// without waiting for the executor.
	stopCallTimeout = 2 * time.Second
)

// stopAttempt ends a running attempt: through the executor's Stop method
// once its Execute call is open, else by cancelling its context. It
// returns at once. The caller sets the attempt's cancel or release reason
// first, so that runTask reports the right outcome.
func (h *Host) stopAttempt(task *runningTask, reason pb.StopReason, message string) {
	task.mu.Lock()
	client := task.client
	task.mu.Unlock()
	if client == nil {
		// The attempt waits for a slot or has not opened its call yet.
		task.cancel()
		return
	}
	go h.stopExecution(task, client, reason, message)
}

// stopExecution calls Stop and waits up to h.stopGrace for the attempt to
// end, then cancels its call. It also ends when the attempt ends.
func (h *Host) stopExecution(task *runningTask, client pb.ExecutorClient, reason pb.StopReason, message string) {
	logger := h.logger.With("plugin", task.plugin, "task_id", task.ref.TaskID, "attempt", task.ref.Attempt)
	callCtx, cancelCall := context.WithTimeout(task.ctx, stopCallTimeout)
	_, err := client.Stop(callCtx, &pb.StopRequest{
		TaskId:  task.ref.TaskID,
		Attempt: task.ref.Attempt,
		Reason:  reason,
		Message: message,
	})
	cancelCall()
	switch {
	case task.ctx.Err() != nil:
		return
	case status.Code(err) == codes.Unimplemented:
		logger.Debug("executor plugin has no Stop method; cancelling the call, " +
			"so the attempt cannot send a last checkpoint")
		task.cancel()
		return
	case err != nil:
		// NOT_FOUND: the call has not reached the executor yet, or the
		// attempt just ended. Either way only the call is left to end.
		logger.Debug("stop call failed; cancelling the call", "error", err)
		task.cancel()
		return
	}

	timer := time.NewTimer(h.stopGrace)
	defer timer.Stop()
	select {
	case <-task.ctx.Done():
	case <-timer.C:
		logger.Warn("executor plugin did not return the stopped attempt's result in time; the host ends "+
			"the call and frees the slot, but the plugin may still run the attempt until its process stops",
			"grace", h.stopGrace)
		task.cancel()
	}
}
