// Package chaos runs a dtf cluster under a seeded schedule of faults and
// checks the coordinator's store afterwards. Check proves the task
// invariants from the store alone, so the single-fault tests in test/e2e
// use it too.
package chaos

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"sort"
	"strings"

	"github.com/dtf-io/dtf/coordinator/api"
	"github.com/dtf-io/dtf/coordinator/store"

	// The SQLite driver that the coordinator's store uses.
	_ "modernc.org/sqlite"
)

// terminalTaskStates are the task states that end a task.
var terminalTaskStates = map[string]bool{"succeeded": true, "failed": true, "cancelled": true, "timed_out": true}

// Report is what Check found.
type Report struct {
	// Tasks counts the tasks checked, and TasksByState splits them by state.
	Tasks        int
	TasksByState map[string]int
	// Attempts counts every attempt, and Resumed the attempts that started
	// from a checkpoint.
	Attempts int
	Resumed  int
	// Checkpoints counts the stored checkpoints over all tasks.
	Checkpoints int
	// ExecutorReports counts the checkpoint executors' reports of where
	// they resumed that were compared with the store, one per succeeded
	// checkpoint task.
	ExecutorReports int
	// Violations lists every broken invariant, one line each, naming the
	// task and the values.
	Violations []string
}

func (r *Report) violate(format string, args ...any) {
	r.Violations = append(r.Violations, fmt.Sprintf(format, args...))
}

// attemptRow is one row of the attempts table. Times are Unix
// milliseconds from the coordinator's clock.
type attemptRow struct {
	number    int
	workerID  string
	state     string
	reason    string
	startedMS int64
	// endedMS is 0 while the attempt runs.
	endedMS int64
	// byOutcome is set when the worker's outcome ended the attempt, and
	// unset when the coordinator ended it: lost, timed out or cancelled.
	byOutcome       bool
	resumedAttempt  int
	resumedSequence int64
}

// retryablePrefix starts the reason that the store writes on an attempt
// whose retryable failure queued its task again. The retryable failure of
// a task's last attempt gets another reason, because it ends the task.
const retryablePrefix = "retryable failure: "

// supersedable reports whether an attempt that ended this way lets its task
// start another attempt, by the store's state machine. Those ends are: lost
// or timed out by the coordinator, released by a draining worker, or a
// retryable failure that queued the task again. Every other end, such as a
// success or a failure that is not retryable, is terminal.
func supersedable(a attemptRow) bool {
	switch {
	case !a.byOutcome:
		return a.state == store.AttemptLost || a.state == store.AttemptTimedOut
	case a.state == store.AttemptReleased:
		return true
	default:
		return a.state != api.StateSucceeded && terminalTaskStates[a.state] &&
			strings.HasPrefix(a.reason, retryablePrefix)
	}
}

// Check opens the SQLite store at path read-only and checks, for every
// task (or only those of batch, when it is not empty):
//
//   - the task is in exactly one terminal state, no attempt of it is
//     still running, and its last attempt ended the way the task did;
//   - every attempt that a later one superseded ended as lost, timed out,
//     released or with a retryable failure, and it ended no later than the
//     next attempt started, so no outcome changed it afterwards;
//   - a task with an outcome has it from its current attempt, applied in
//     the transaction that ended that attempt. The attempt's worker and
//     state agree with the outcome, and no other attempt succeeded, so no
//     stale or doubled outcome was applied;
//   - the stored checkpoints never moved backwards, the task's newest
//     checkpoint is the last one stored, and each was stored while its
//     attempt was the current one;
//   - every attempt started from the newest checkpoint stored when it
//     started;
//   - a succeeded checkpoint task's executor reports that it resumed from
//     the checkpoint its attempt was handed, and at the step that
//     checkpoint holds (see checkExecutorReport).
//
// The times it compares are the coordinator's wall clock in milliseconds,
// so a clock stepped backwards during the run can show a false violation.
//
// Run it after the coordinator stopped, or at least after every task
// ended.
func Check(ctx context.Context, path, batch string) (*Report, error) {
	q := url.Values{}
	q.Set("mode", "ro")
	q.Add("_pragma", "busy_timeout(5000)")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	defer db.Close()

	report := &Report{TasksByState: map[string]int{}}
	tasks, err := loadTasks(ctx, db, batch)
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(tasks))
	for id := range tasks {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		if err := checkTask(ctx, db, report, id, tasks[id]); err != nil {
			return nil, fmt.Errorf("check task %s: %w", id, err)
		}
	}
	return report, nil
}

// taskRow is the part of a tasks row that Check reads.
type taskRow struct {
	state    string
	attempt  int
	taskType string
	payload  string
}

func loadTasks(ctx context.Context, db *sql.DB, batch string) (map[string]taskRow, error) {
	query := "SELECT id, state, attempt, type, payload FROM tasks"
	var args []any
	if batch != "" {
		query += " WHERE batch = ?"
		args = append(args, batch)
	}
	rows, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("read tasks: %w", err)
	}
	defer rows.Close()
	tasks := map[string]taskRow{}
	for rows.Next() {
		var id string
		var t taskRow
		if err := rows.Scan(&id, &t.state, &t.attempt, &t.taskType, &t.payload); err != nil {
			return nil, fmt.Errorf("read tasks: %w", err)
		}
		tasks[id] = t
	}
	return tasks, rows.Err()
}

func checkTask(ctx context.Context, db *sql.DB, report *Report, id string, task taskRow) error {
	report.Tasks++
	report.TasksByState[task.state]++
	if !terminalTaskStates[task.state] {
		report.violate("task %s: state %q is not terminal", id, task.state)
	}

	attempts, err := loadAttempts(ctx, db, id)
	if err != nil {
		return err
	}
	report.Attempts += len(attempts)
	checkAttempts(report, id, task, attempts)

	outcome, err := checkOutcome(ctx, db, report, id, task, attempts)
	if err != nil {
		return err
	}
	history, err := checkCheckpoints(ctx, db, report, id, attempts)
	if err != nil {
		return err
	}
	checkExecutorReport(report, id, task, attempts, history, outcome)
	return nil
}

func loadAttempts(ctx context.Context, db *sql.DB, id string) ([]attemptRow, error) {
	rows, err := db.QueryContext(ctx, `SELECT attempt, worker_id, state, reason, started_ms, ended_ms,
		by_outcome, resumed_attempt, resumed_sequence FROM attempts WHERE task_id = ? ORDER BY attempt`, id)
	if err != nil {
		return nil, fmt.Errorf("read attempts: %w", err)
	}
	defer rows.Close()
	var attempts []attemptRow
	for rows.Next() {
		var a attemptRow
		err := rows.Scan(&a.number, &a.workerID, &a.state, &a.reason, &a.startedMS, &a.endedMS,
			&a.byOutcome, &a.resumedAttempt, &a.resumedSequence)
		if err != nil {
			return nil, fmt.Errorf("read attempts: %w", err)
		}
		attempts = append(attempts, a)
	}
	return attempts, rows.Err()
}

// checkAttempts checks the numbering of the attempts, that none of a
// terminal task still runs and at most one succeeded, how each superseded
// attempt ended, and that the last one ended the way the task did.
func checkAttempts(report *Report, id string, task taskRow, attempts []attemptRow) {
	succeeded := 0
	for i, a := range attempts {
		if a.number != i+1 {
			report.violate("task %s: attempt %d found where attempt %d belongs", id, a.number, i+1)
		}
		if a.state == "running" && terminalTaskStates[task.state] {
			report.violate("task %s: attempt %d still running although the task is %s", id, a.number, task.state)
		}
		if a.state == "succeeded" {
			succeeded++
		}
		if a.endedMS != 0 && a.endedMS < a.startedMS {
			report.violate("task %s: attempt %d ended at %d ms, before it started at %d ms",
				id, a.number, a.endedMS, a.startedMS)
		}
		if i+1 < len(attempts) {
			checkSuperseded(report, id, a, attempts[i+1])
		}
	}
	if succeeded > 1 {
		report.violate("task %s: %d attempts succeeded, at most one may", id, succeeded)
	}
	if len(attempts) != task.attempt {
		report.violate("task %s: the task names attempt %d as current, but %d attempts exist",
			id, task.attempt, len(attempts))
	}
	if len(attempts) > 0 && terminalTaskStates[task.state] {
		checkLastAttempt(report, id, task, attempts[len(attempts)-1])
	}
}

// checkSuperseded checks an attempt that next replaced. It must have ended
// in a way that lets the task start again, and no later than next started.
// A stale outcome applied to it would change its state and its end time,
// so the time check also catches an outcome that kept a retryable state.
//
// NOTE: the store keeps no mark of when an attempt was superseded apart
// from its end time and the next attempt's start time, so this check
// rests on the coordinator's wall clock.
func checkSuperseded(report *Report, id string, a, next attemptRow) {
	if !supersedable(a) {
		report.violate("task %s: attempt %d ended %q (by its outcome: %t, reason %q), which does not let "+
			"attempt %d start; only lost, timed_out, released or a retryable failure do",
			id, a.number, a.state, a.byOutcome, a.reason, next.number)
	}
	switch {
	case a.endedMS == 0:
		report.violate("task %s: attempt %d has no end time, but attempt %d started at %d ms",
			id, a.number, next.number, next.startedMS)
	case a.endedMS > next.startedMS:
		report.violate("task %s: attempt %d ended at %d ms, after attempt %d started at %d ms, "+
			"so it changed after it was superseded", id, a.number, a.endedMS, next.number, next.startedMS)
	}
}

// checkLastAttempt checks that the last attempt of a terminal task ended
// the way the task did. It has the task's state, unless the coordinator
// lost it on the task's last allowed attempt, which fails the task, or the
// task was cancelled while it waited for another attempt.
func checkLastAttempt(report *Report, id string, task taskRow, a attemptRow) {
	if a.state == store.AttemptRunning {
		return
	}
	if a.endedMS == 0 {
		report.violate("task %s: last attempt %d ended %q without an end time", id, a.number, a.state)
	}
	switch {
	case a.state == task.state:
	case task.state == api.StateFailed && a.state == store.AttemptLost && !a.byOutcome:
	case task.state == api.StateCancelled && supersedable(a):
	default:
		report.violate("task %s: the task is %s, but its last attempt %d ended %q (by its outcome: %t)",
			id, task.state, a.number, a.state, a.byOutcome)
	}
}

// outcomeRow is the part of an outcomes row that Check reads.
type outcomeRow struct {
	attempt    int
	workerID   string
	status     string
	result     string
	receivedMS int64
}

// checkOutcome checks that the applied outcome came from the current
// attempt, was applied when it ended that attempt, and agrees with it. The
// outcomes table holds one row per task: the outcome that ended it. A
// released attempt or a retryable failure that queued the task again
// leaves only the attempt's state and reason, which checkSuperseded checks.
// It returns the outcome, or nil when the task has none.
func checkOutcome(ctx context.Context, db *sql.DB, report *Report, id string, task taskRow,
	attempts []attemptRow) (*outcomeRow, error) {
	var o outcomeRow
	err := db.QueryRowContext(ctx, `SELECT attempt, worker_id, status, result, received_ms
		FROM outcomes WHERE task_id = ?`, id).Scan(&o.attempt, &o.workerID, &o.status, &o.result, &o.receivedMS)
	if err == sql.ErrNoRows {
		if task.state == "succeeded" {
			report.violate("task %s: succeeded without an outcome", id)
		}
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read outcome: %w", err)
	}
	attempt, workerID, status := o.attempt, o.workerID, o.status
	if attempt != task.attempt {
		report.violate("task %s: outcome of attempt %d applied, but the current attempt is %d (stale outcome)",
			id, attempt, task.attempt)
	}
	if attempt < 1 || attempt > len(attempts) {
		report.violate("task %s: outcome of attempt %d, which does not exist", id, attempt)
		return &o, nil
	}
	a := attempts[attempt-1]
	if a.workerID != workerID {
		report.violate("task %s: outcome of attempt %d came from worker %q, the attempt ran on %q",
			id, attempt, workerID, a.workerID)
	}
	if a.state != status {
		report.violate("task %s: outcome status %q, attempt %d ended %q", id, status, attempt, a.state)
	}
	if status == "succeeded" && task.state != "succeeded" {
		report.violate("task %s: outcome succeeded, task is %s", id, task.state)
	}
	// The store inserts the outcome and ends its attempt in one
	// transaction, with one time for both.
	if !a.byOutcome {
		report.violate("task %s: outcome of attempt %d is stored, but the coordinator ended the attempt (%q), not an outcome",
			id, attempt, a.state)
	}
	if a.endedMS != o.receivedMS {
		report.violate("task %s: outcome of attempt %d received at %d ms, but the attempt ended at %d ms, "+
			"so the outcome was not applied when it ended the attempt", id, attempt, o.receivedMS, a.endedMS)
	}
	return &o, nil
}
