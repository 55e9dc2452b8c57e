package store

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/dtf-io/dtf/coordinator/api"
)

// validateNewTasks checks a submission before any row is written, so that
// an invalid task fails the whole submission with an error naming it.
func validateNewTasks(tasks []NewTask) error {
	seen := make(map[string]int, len(tasks))
	for i, t := range tasks {
		if t.ID == "" {
			return fmt.Errorf("tasks[%d]: id is empty; give every task a unique id", i)
		}
		if first, ok := seen[t.ID]; ok {
			return fmt.Errorf("tasks[%d]: id %q is also used by tasks[%d]; task ids must be unique", i, t.ID, first)
		}
		seen[t.ID] = i
		if t.Type == "" {
			return fmt.Errorf("tasks[%d] %s: type is empty; set the task type, such as \"command\"", i, t.ID)
		}
		if t.MaxAttempts < 1 {
			return fmt.Errorf("tasks[%d] %s: max_attempts %d is invalid; use 1 or more", i, t.ID, t.MaxAttempts)
		}
		if t.TimeoutMS < 0 {
			return fmt.Errorf("tasks[%d] %s: timeout_ms %d is negative; use 0 for no timeout", i, t.ID, t.TimeoutMS)
		}
		if len(t.Payload) > 0 && !json.Valid(t.Payload) {
			return fmt.Errorf("tasks[%d] %s: payload is not valid JSON", i, t.ID)
		}
		for name := range t.Labels {
			if name == "" {
				return fmt.Errorf("tasks[%d] %s: a label name is empty; name every required label", i, t.ID)
			}
		}
	}
	return nil
}

// requireID returns an error naming what is empty, or nil.
func requireID(what, value string) error {
	if value == "" {
		return fmt.Errorf("%s is empty", what)
	}
	return nil
}

// validateOutcome checks the fields that fencing and the outcome row need.
func validateOutcome(o Outcome) error {
	if err := errors.Join(requireID("task id", o.TaskID), requireID("worker id", o.WorkerID)); err != nil {
		return fmt.Errorf("apply outcome of task %q: %w", o.TaskID, err)
	}
	if o.Attempt < 1 {
		return fmt.Errorf("apply outcome of task %s: attempt %d is invalid; attempts start at 1", o.TaskID, o.Attempt)
	}
	if !api.Terminal(o.Status) {
		return fmt.Errorf("apply outcome of task %s: unknown status %q; use succeeded, failed, cancelled "+
			"or timed_out", o.TaskID, o.Status)
	}
	if len(o.Result) > 0 && !json.Valid(o.Result) {
		return fmt.Errorf("apply outcome of task %s: result is not valid JSON", o.TaskID)
	}
	return nil
}

// terminalError is the error of CancelTask for a task that already ended.
// It matches both ErrTerminal and ErrConflict, because an ended task is
// also not in the state that the cancellation expects.
type terminalError struct {
	id    string
	state string
}

func (e *terminalError) Error() string {
	return fmt.Sprintf("cancel task %s: task already ended as %s", e.id, e.state)
}

func (e *terminalError) Is(target error) bool {
	return target == ErrTerminal || target == ErrConflict
}
