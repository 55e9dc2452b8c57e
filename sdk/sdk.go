// Package sdk is the public API for authors of dtf task-executor plugins.
// An executor implements Executor and calls ServeExecutor from its main
// function; the worker host launches the binary through go-plugin and hands
// it the tasks whose types the executor declares. The package sdktest runs
// an Executor behind a real gRPC connection in a plain go test.
//
// Plugin authors import only this package and sdktest: the generated
// protobuf code and the go-plugin glue stay behind them. docs/plugins.md
// in the dtf repository has a tutorial and the rules a plugin follows.
package sdk

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

// MaxCheckpointBytes bounds the data of one checkpoint: 1 MiB. The
// coordinator enforces the same limit, so larger state belongs in the
// executor's own storage, with only a reference to it in the checkpoint.
//
// The value is a literal because importing package protocol would link the
// wire codec and its SCRAM library into every executor. That adds about
// 0.8 MiB of resident memory to each idle executor process, measured with
// dtf-load -mode host-rss on Linux amd64. A test checks that the value
// equals protocol.MaxCheckpointBytes.
const MaxCheckpointBytes = 1 << 20

// Errors of Reporter.Checkpoint that callers test with errors.Is.
var (
	// ErrCheckpointTooLarge is wrapped by the error for data over
	// MaxCheckpointBytes, which names both sizes.
	ErrCheckpointTooLarge = errors.New("checkpoint too large")
	// ErrAttemptFinished is returned for a checkpoint saved after Execute
	// returned, when the attempt's result is already sent.
	ErrAttemptFinished = errors.New("attempt already finished")
)

// Causes of an attempt's context when the worker host stops the attempt
// through the executor's Stop call. Read them with context.Cause(ctx) and
// errors.Is. The cause's message also gives the host's reason.
var (
	// ErrReleased is the cause when the worker stops and gives the attempt
	// back unfinished, as at the end of a drain. The task runs again on a
	// later attempt, which resumes from the newest checkpoint.
	ErrReleased = errors.New("attempt released by the worker")
	// ErrCancelled is the cause when the coordinator cancelled the attempt.
	ErrCancelled = errors.New("attempt cancelled by the coordinator")
)

// Status is the terminal state of one task attempt.
type Status string

// Terminal states of an attempt.
const (
	StatusSucceeded Status = "succeeded"
	StatusFailed    Status = "failed"
	StatusCancelled Status = "cancelled"
	StatusTimedOut  Status = "timed_out"
)

// Info describes an executor plugin.
type Info struct {
	// Name identifies the executor in logs, for example "command".
	Name string
	// Version is the plugin's release version.
	Version string
	// TaskTypes lists the task types the executor runs; the host routes each
	// assignment to the executor that declared its type.
	TaskTypes []string
}

// Task is one attempt of a task, as handed to an executor.
type Task struct {
	// ID is the task's ID, assigned by the coordinator at submission.
	ID string
	// Attempt counts from 1 and grows each time the task is handed out again.
	Attempt int
	// Type is the task type, one of the executor's Info.TaskTypes.
	Type string
	// Payload is the task's JSON object as submitted.
	Payload json.RawMessage
	// Timeout is the task's time limit; zero means the executor's default.
	Timeout time.Duration
	// Checkpoint is the newest checkpoint that an earlier attempt saved and
	// the coordinator stored. The attempt resumes from it. It is nil for a
	// fresh start.
	Checkpoint *Checkpoint
}

// Checkpoint is state that an attempt saved so that a later attempt of the
// same task can resume where it stopped.
type Checkpoint struct {
	// Data is the executor's own encoding of its state.
	Data []byte
	// Fraction and Message are the progress reported with the checkpoint.
	Fraction float64
	Message  string
	// Attempt is the attempt that saved the checkpoint, and Sequence its
	// number among that attempt's checkpoints, from 1.
	Attempt  int
	Sequence uint64
}

// Result is what an attempt produced.
type Result struct {
	// Status is required; a Result without one is recorded as failed.
	Status Status
	// ExitCode is the exit code of the program the attempt ran, if any.
	ExitCode int
	// Message is a one-line summary for tables and logs.
	Message string
	// Output is the tail of the attempt's output. The host keeps only its
	// last MaxOutputBytes (1 MiB) and notes the cut in Message.
	Output []byte
	// Data is executor-specific JSON, for example per-test results.
	Data json.RawMessage
}

// Reporter lets a running task report progress to the coordinator.
type Reporter interface {
	// Progress reports a completed fraction between 0 and 1 and a short note.
	Progress(fraction float64, message string)
	// Checkpoint saves data from which a later attempt can resume, with the
	// progress reached. It returns once the host has the checkpoint. The
	// coordinator stores it shortly after, or stores it from the attempt's
	// outcome when the attempt ends first. Only the newest checkpoint of a
	// task is kept, so each must contain the whole state.
	// It returns an error wrapping ErrCheckpointTooLarge for data over
	// MaxCheckpointBytes, ErrAttemptFinished after Execute returned, or
	// the error of the stream to the host.
	Checkpoint(data []byte, fraction float64, message string) error
}

// Executor runs tasks. Execute must return when ctx is cancelled, after
// stopping everything the task started.
//
// When the worker host stops an attempt, for example to release it at the
// end of a drain, ctx ends with a cause that wraps ErrReleased or
// ErrCancelled, and the connection to the host stays open. Execute may
// then save a last checkpoint with the progress reached, which the host
// passes on with the attempt's outcome, and return. The host waits a
// bounded time for the result (10 seconds in this version) and then closes
// the connection. After that, or when ctx ends for another reason such as
// the plugin's shutdown, a checkpoint fails with the stream's error.
type Executor interface {
	// Info describes the executor. It is called before Configure, and by
	// ServeExecutor for -version, so it returns constant values.
	Info() Info
	// Configure receives the plugin block's config as a JSON object before
	// any task, {} without a config block, and again after each restart of
	// the plugin process. The executor checks it and does its slow setup
	// here. An error at startup stops the worker host with the error's
	// message, so the message names the bad value and the fix.
	Configure(config json.RawMessage) error
	// Execute runs one attempt of task and returns its result. It is
	// called concurrently, up to the worker's slots. An error, or a panic,
	// becomes a failed result with the error's message, except an error
	// that is ctx's own after ctx ended, which becomes a cancelled result.
	Execute(ctx context.Context, task Task, reporter Reporter) (Result, error)
}
