package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/dtf-io/dtf/sdk"
)

// TaskType is the task type this executor declares.
const TaskType = "checkpoint"

const pluginName = "dtf-exec-checkpoint"

// version is the plugin's release version; builds may set it with
// -ldflags "-X main.version=...".
var version = "0.1.0"

// Payload bounds. A step costs one checkpoint, so maxSteps also bounds the
// checkpoints one task writes to the coordinator's store.
const (
	maxSteps    = 1_000_000
	maxInterval = time.Hour
)

// Payload is the JSON object of a "checkpoint" task.
type Payload struct {
	// Steps is the number to count to, from 1 to 1,000,000.
	Steps int `json:"steps"`
	// IntervalMS is the time each step takes, in milliseconds, from 0 to
	// one hour.
	IntervalMS int64 `json:"interval_ms"`
	// CheckpointEvery is the number of steps between checkpoints, from 1
	// to 1,000,000; 0 or absent means 1. The last step and a stop always
	// save one.
	CheckpointEvery int `json:"checkpoint_every"`
}

// State is the checkpoint data: the last step completed.
type State struct {
	Step int `json:"step"`
}

// Report is the result data of a task.
type Report struct {
	// StartedAt is the step the attempt resumed after; 0 for a fresh start.
	StartedAt int `json:"started_at"`
	Steps     int `json:"steps"`
	// ResumedFrom names the checkpoint the attempt resumed from.
	ResumedFrom *CheckpointRef `json:"resumed_from,omitempty"`
}

// CheckpointRef names a checkpoint by the attempt that saved it and its
// sequence number within that attempt.
type CheckpointRef struct {
	Attempt  int    `json:"attempt"`
	Sequence uint64 `json:"sequence"`
}

// Executor runs "checkpoint" tasks. It keeps no state between tasks: all
// progress lives in the checkpoints.
type Executor struct{}

var _ sdk.Executor = (*Executor)(nil)

// NewExecutor returns an Executor.
func NewExecutor() *Executor {
	return &Executor{}
}

// Info describes the plugin.
func (e *Executor) Info() sdk.Info {
	return sdk.Info{Name: pluginName, Version: version, TaskTypes: []string{TaskType}}
}

// Configure accepts only an empty config, because the executor has no
// settings.
func (e *Executor) Configure(raw json.RawMessage) error {
	trimmed := string(bytes.TrimSpace(raw))
	if trimmed != "" && trimmed != "null" && trimmed != "{}" {
		return fmt.Errorf("invalid checkpoint plugin config %s: the plugin has no settings; "+
			"remove its config block", trimmed)
	}
	return nil
}

// Execute counts from the step after the task's checkpoint to the payload's
// steps, saving a checkpoint every checkpoint_every steps and reporting
// progress after the others. When the worker host stops the attempt, for
// example to release it at the end of a drain, it saves the step reached
// before it returns, so that the next attempt loses no completed step. A
// stopped or cancelled task returns the context's error.
func (e *Executor) Execute(ctx context.Context, task sdk.Task, reporter sdk.Reporter) (sdk.Result, error) {
	payload, err := parsePayload(task.Payload)
	if err != nil {
		return sdk.Result{}, err
	}
	start, err := resumeStep(task.Checkpoint, payload.Steps)
	if err != nil {
		return sdk.Result{}, err
	}
	if task.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, task.Timeout)
		defer cancel()
	}

	interval := time.Duration(payload.IntervalMS) * time.Millisecond
	saved := start
	for step := start + 1; step <= payload.Steps; step++ {
		if err := wait(ctx, interval); err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				return sdk.Result{Status: sdk.StatusTimedOut, Message: fmt.Sprintf(
					"timed out after %s at step %d of %d", task.Timeout, step-1, payload.Steps)}, nil
			}
			return sdk.Result{}, saveOnStop(ctx, reporter, saved, step-1, payload.Steps, err)
		}
		message := fmt.Sprintf("step %d of %d", step, payload.Steps)
		fraction := float64(step) / float64(payload.Steps)
		if step%payload.CheckpointEvery != 0 && step != payload.Steps {
			reporter.Progress(fraction, message)
			continue
		}
		if err := saveStep(reporter, step, payload.Steps, message); err != nil {
			return sdk.Result{}, err
		}
		saved = step
	}
	return result(task.Checkpoint, start, payload.Steps), nil
}

// saveStep saves the checkpoint of a completed step.
func saveStep(reporter sdk.Reporter, step, steps int, message string) error {
	data, _ := json.Marshal(State{Step: step})
	if err := reporter.Checkpoint(data, float64(step)/float64(steps), message); err != nil {
		return fmt.Errorf("save checkpoint at step %d: %w", step, err)
	}
	return nil
}

// saveOnStop saves the last completed step when the attempt was stopped
// after it and before its checkpoint, and returns err, the context's error.
// The worker host keeps the stream to the executor open after a stop
// (sdk.ErrReleased or sdk.ErrCancelled in the context's cause), so this
// checkpoint reaches the coordinator with the attempt's outcome. After any
// other end of the context the stream is gone, so the save fails and the
// returned error contains that failure too.
func saveOnStop(ctx context.Context, reporter sdk.Reporter, saved, reached, steps int, err error) error {
	cause := context.Cause(ctx)
	stopped := errors.Is(cause, sdk.ErrReleased) || errors.Is(cause, sdk.ErrCancelled)
	if !stopped || reached <= saved {
		return err
	}
	message := fmt.Sprintf("step %d of %d, saved when stopped", reached, steps)
	if saveErr := saveStep(reporter, reached, steps, message); saveErr != nil {
		return fmt.Errorf("%w; %v", err, saveErr)
	}
	return err
}

func result(from *sdk.Checkpoint, start, steps int) sdk.Result {
	report := Report{StartedAt: start, Steps: steps}
	message := fmt.Sprintf("counted to %d from the start", steps)
	if from != nil {
		report.ResumedFrom = &CheckpointRef{Attempt: from.Attempt, Sequence: from.Sequence}
		message = fmt.Sprintf("counted to %d, resumed after step %d", steps, start)
	}
	data, _ := json.Marshal(report)
	return sdk.Result{Status: sdk.StatusSucceeded, Message: message, Data: data}
}

// parsePayload decodes and checks a task's payload.
func parsePayload(raw json.RawMessage) (Payload, error) {
	var p Payload
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return Payload{}, fmt.Errorf("invalid checkpoint payload: %w; "+
			`use an object such as {"steps": 100, "interval_ms": 100}`, err)
	}
	if p.Steps < 1 || p.Steps > maxSteps {
		return Payload{}, fmt.Errorf("invalid checkpoint payload: steps is %d; use 1 to %d", p.Steps, maxSteps)
	}
	if p.IntervalMS < 0 || p.IntervalMS > maxInterval.Milliseconds() {
		return Payload{}, fmt.Errorf("invalid checkpoint payload: interval_ms is %d; use 0 to %d",
			p.IntervalMS, maxInterval.Milliseconds())
	}
	if p.CheckpointEvery < 0 || p.CheckpointEvery > maxSteps {
		return Payload{}, fmt.Errorf("invalid checkpoint payload: checkpoint_every is %d; use 1 to %d, "+
			"or 0 for every step", p.CheckpointEvery, maxSteps)
	}
	if p.CheckpointEvery == 0 {
		p.CheckpointEvery = 1
	}
	return p, nil
}

// resumeStep returns the last step completed according to cp, or 0 when
// cp is nil.
func resumeStep(cp *sdk.Checkpoint, steps int) (int, error) {
	if cp == nil {
		return 0, nil
	}
	var state State
	if err := json.Unmarshal(cp.Data, &state); err != nil {
		return 0, fmt.Errorf("checkpoint %d of attempt %d has invalid data: %w; "+
			"it was not written by this executor", cp.Sequence, cp.Attempt, err)
	}
	if state.Step < 0 || state.Step > steps {
		return 0, fmt.Errorf("checkpoint %d of attempt %d is at step %d, outside 0 to %d; "+
			"the checkpoint belongs to a task with other steps", cp.Sequence, cp.Attempt, state.Step, steps)
	}
	return state.Step, nil
}

// wait returns after d, or with the context's error when ctx ends first.
func wait(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}
