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
	// Violations lists every broken invariant, one line each, naming the
	// task and the values.
	Violations []string
}

func (r *Report) violate(format string, args ...any) {
	r.Violations = append(r.Violations, fmt.Sprintf(format, args...))
}

// attemptRow is one row of the attempts table.
type attemptRow struct {
	number          int
	workerID        string
	state           string
	resumedAttempt  int
	resumedSequence int64
}

// position is a checkpoint's place in a task's order: attempt first, then
// sequence.
type position struct {
	attempt  int
	sequence int64
}

func (p position) less(q position) bool {
	return p.attempt < q.attempt || (p.attempt == q.attempt && p.sequence < q.sequence)
}

// Check opens the SQLite store at path read-only and checks, for every
// task (or only those of batch, when it is not empty):
//
//   - the task is in exactly one terminal state, and no attempt of it is
//     still running;
//   - a task with an outcome has it from its current attempt, the
//     attempt's worker and state agree with the outcome, and no other
//     attempt succeeded (so no stale or doubled outcome was applied);
//   - the stored checkpoints never moved backwards, and the task's newest
//     checkpoint is the last one stored;
//   - every attempt started from the newest checkpoint stored before it,
//     which is the newest one of an earlier attempt, because the
//     coordinator accepts checkpoints only from the current attempt.
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
	state   string
	attempt int
}

func loadTasks(ctx context.Context, db *sql.DB, batch string) (map[string]taskRow, error) {
	query := "SELECT id, state, attempt FROM tasks"
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
		if err := rows.Scan(&id, &t.state, &t.attempt); err != nil {
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

	if err := checkOutcome(ctx, db, report, id, task, attempts); err != nil {
		return err
	}
	return checkCheckpoints(ctx, db, report, id, attempts)
}

func loadAttempts(ctx context.Context, db *sql.DB, id string) ([]attemptRow, error) {
	rows, err := db.QueryContext(ctx, `SELECT attempt, worker_id, state, resumed_attempt, resumed_sequence
		FROM attempts WHERE task_id = ? ORDER BY attempt`, id)
	if err != nil {
		return nil, fmt.Errorf("read attempts: %w", err)
	}
	defer rows.Close()
	var attempts []attemptRow
	for rows.Next() {
		var a attemptRow
		if err := rows.Scan(&a.number, &a.workerID, &a.state, &a.resumedAttempt, &a.resumedSequence); err != nil {
			return nil, fmt.Errorf("read attempts: %w", err)
		}
		attempts = append(attempts, a)
	}
	return attempts, rows.Err()
}

// checkAttempts checks the numbering of the attempts and that none of a
// terminal task still runs and at most one succeeded.
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
	}
	if succeeded > 1 {
		report.violate("task %s: %d attempts succeeded, at most one may", id, succeeded)
	}
	if len(attempts) != task.attempt {
		report.violate("task %s: the task names attempt %d as current, but %d attempts exist",
			id, task.attempt, len(attempts))
	}
}

// checkOutcome checks that the applied outcome came from the current
// attempt and agrees with it.
func checkOutcome(ctx context.Context, db *sql.DB, report *Report, id string, task taskRow, attempts []attemptRow) error {
	var attempt int
	var workerID, status string
	err := db.QueryRowContext(ctx, `SELECT attempt, worker_id, status FROM outcomes WHERE task_id = ?`, id).
		Scan(&attempt, &workerID, &status)
	if err == sql.ErrNoRows {
		if task.state == "succeeded" {
			report.violate("task %s: succeeded without an outcome", id)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("read outcome: %w", err)
	}
	if attempt != task.attempt {
		report.violate("task %s: outcome of attempt %d applied, but the current attempt is %d (stale outcome)",
			id, attempt, task.attempt)
	}
	if attempt < 1 || attempt > len(attempts) {
		report.violate("task %s: outcome of attempt %d, which does not exist", id, attempt)
		return nil
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
	return nil
}

// checkCheckpoints checks the checkpoint history of one task and where
// each attempt started.
func checkCheckpoints(ctx context.Context, db *sql.DB, report *Report, id string, attempts []attemptRow) error {
	rows, err := db.QueryContext(ctx, `SELECT attempt, sequence FROM checkpoint_history
		WHERE task_id = ? ORDER BY position`, id)
	if err != nil {
		return fmt.Errorf("read checkpoint history: %w", err)
	}
	var history []position
	for rows.Next() {
		var p position
		if err := rows.Scan(&p.attempt, &p.sequence); err != nil {
			rows.Close()
			return fmt.Errorf("read checkpoint history: %w", err)
		}
		history = append(history, p)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read checkpoint history: %w", err)
	}
	report.Checkpoints += len(history)

	for i := 1; i < len(history); i++ {
		if !history[i-1].less(history[i]) {
			report.violate("task %s: checkpoint %d (attempt %d, sequence %d) stored after (attempt %d, sequence %d): moved backwards",
				id, i+1, history[i].attempt, history[i].sequence, history[i-1].attempt, history[i-1].sequence)
		}
	}

	var newest position
	err = db.QueryRowContext(ctx, `SELECT attempt, sequence FROM checkpoints WHERE task_id = ?`, id).
		Scan(&newest.attempt, &newest.sequence)
	switch {
	case err == sql.ErrNoRows:
		if len(history) > 0 {
			report.violate("task %s: %d checkpoints stored, none kept as newest", id, len(history))
		}
	case err != nil:
		return fmt.Errorf("read newest checkpoint: %w", err)
	case len(history) == 0:
		report.violate("task %s: newest checkpoint (attempt %d, sequence %d) without history",
			id, newest.attempt, newest.sequence)
	case newest != history[len(history)-1]:
		last := history[len(history)-1]
		report.violate("task %s: newest checkpoint is (attempt %d, sequence %d), last stored is (attempt %d, sequence %d)",
			id, newest.attempt, newest.sequence, last.attempt, last.sequence)
	}

	for _, a := range attempts {
		var want position
		for _, p := range history {
			if p.attempt < a.number && want.less(p) {
				want = p
			}
		}
		got := position{attempt: a.resumedAttempt, sequence: a.resumedSequence}
		if got != want {
			report.violate("task %s: attempt %d started from checkpoint (attempt %d, sequence %d), the newest stored before it is (attempt %d, sequence %d)",
				id, a.number, got.attempt, got.sequence, want.attempt, want.sequence)
		}
		if got.attempt > 0 {
			report.Resumed++
		}
	}
	return nil
}
