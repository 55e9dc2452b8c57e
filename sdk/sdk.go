// Package sdk is the public API for authors of dtf task-executor plugins.
// An executor implements Executor and calls ServeExecutor from its main
// function; the worker host launches the binary through go-plugin and hands
// it the tasks whose types the executor declares.
package sdk

import (
	"context"
	"encoding/json"
	"time"
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
	ID string
	// Attempt counts from 1 and grows each time the task is handed out again.
	Attempt int
	Type    string
	// Payload is the task's JSON object as submitted.
	Payload json.RawMessage
	// Timeout is the task's time limit; zero means the executor's default.
	Timeout time.Duration
}

// Result is what an attempt produced.
type Result struct {
	Status   Status
	ExitCode int
	// Message is a one-line summary for tables and logs.
	Message string
	// Output is the tail of the attempt's output; the host does not truncate
	// it, so executors bound it.
	Output []byte
	// Data is executor-specific JSON, for example per-test results.
	Data json.RawMessage
}

// Reporter lets a running task report progress to the coordinator.
type Reporter interface {
	// Progress reports a completed fraction between 0 and 1 and a short note.
	Progress(fraction float64, message string)
}

// Executor runs tasks. Execute must return when ctx is cancelled, after
// stopping everything the task started.
type Executor interface {
	Info() Info
	// Configure receives the plugin block's config as JSON before any task.
	Configure(config json.RawMessage) error
	Execute(ctx context.Context, task Task, reporter Reporter) (Result, error)
}
