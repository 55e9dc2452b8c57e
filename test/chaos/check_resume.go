package chaos

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
)

// position is a checkpoint's place in a task's order: attempt first, then
// sequence.
type position struct {
	attempt  int
	sequence int64
}

func (p position) less(q position) bool {
	return p.attempt < q.attempt || (p.attempt == q.attempt && p.sequence < q.sequence)
}

// storedCheckpoint is one row of checkpoint_history.
type storedCheckpoint struct {
	position
	// storedMS is when the coordinator stored it, and so acknowledged it.
	storedMS int64
}

// checkCheckpoints checks the checkpoint history of one task and where
// each attempt started, and returns the history in the order it was
// stored.
func checkCheckpoints(ctx context.Context, db *sql.DB, report *Report, id string,
	attempts []attemptRow) ([]storedCheckpoint, error) {
	history, err := loadHistory(ctx, db, id)
	if err != nil {
		return nil, err
	}
	report.Checkpoints += len(history)

	for i := 1; i < len(history); i++ {
		if !history[i-1].less(history[i].position) {
			report.violate("task %s: checkpoint %d (attempt %d, sequence %d) stored after (attempt %d, sequence %d): moved backwards",
				id, i+1, history[i].attempt, history[i].sequence, history[i-1].attempt, history[i-1].sequence)
		}
	}
	checkStoredWhileCurrent(report, id, attempts, history)
	if err := checkNewest(ctx, db, report, id, history); err != nil {
		return nil, err
	}

	for _, a := range attempts {
		want := newestAtStart(history, a)
		got := position{attempt: a.resumedAttempt, sequence: a.resumedSequence}
		if got != want {
			report.violate("task %s: attempt %d started from checkpoint (attempt %d, sequence %d), the newest stored before it is (attempt %d, sequence %d)",
				id, a.number, got.attempt, got.sequence, want.attempt, want.sequence)
		}
		if got.attempt > 0 {
			report.Resumed++
		}
	}
	return history, nil
}

func loadHistory(ctx context.Context, db *sql.DB, id string) ([]storedCheckpoint, error) {
	rows, err := db.QueryContext(ctx, `SELECT attempt, sequence, stored_ms FROM checkpoint_history
		WHERE task_id = ? ORDER BY position`, id)
	if err != nil {
		return nil, fmt.Errorf("read checkpoint history: %w", err)
	}
	defer rows.Close()
	var history []storedCheckpoint
	for rows.Next() {
		var c storedCheckpoint
		if err := rows.Scan(&c.attempt, &c.sequence, &c.storedMS); err != nil {
			return nil, fmt.Errorf("read checkpoint history: %w", err)
		}
		history = append(history, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read checkpoint history: %w", err)
	}
	return history, nil
}

// checkStoredWhileCurrent checks that each checkpoint was stored while its
// attempt was the task's current one: not before the attempt started and
// not after the next attempt started. The coordinator admits a checkpoint
// only from the running current attempt, so one stored later is a stale
// checkpoint that was applied.
func checkStoredWhileCurrent(report *Report, id string, attempts []attemptRow, history []storedCheckpoint) {
	for _, c := range history {
		if c.attempt < 1 || c.attempt > len(attempts) {
			report.violate("task %s: checkpoint (attempt %d, sequence %d) of an attempt that does not exist",
				id, c.attempt, c.sequence)
			continue
		}
		own := attempts[c.attempt-1]
		if c.storedMS < own.startedMS {
			report.violate("task %s: checkpoint (attempt %d, sequence %d) stored at %d ms, before attempt %d started at %d ms",
				id, c.attempt, c.sequence, c.storedMS, own.number, own.startedMS)
		}
		if c.attempt < len(attempts) {
			next := attempts[c.attempt]
			if c.storedMS > next.startedMS {
				report.violate("task %s: checkpoint (attempt %d, sequence %d) stored at %d ms, after attempt %d started at %d ms",
					id, c.attempt, c.sequence, c.storedMS, next.number, next.startedMS)
			}
		}
	}
}

// checkNewest checks that the task's newest checkpoint is the last one in
// its history.
func checkNewest(ctx context.Context, db *sql.DB, report *Report, id string, history []storedCheckpoint) error {
	var newest position
	err := db.QueryRowContext(ctx, `SELECT attempt, sequence FROM checkpoints WHERE task_id = ?`, id).
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
	case newest != history[len(history)-1].position:
		last := history[len(history)-1]
		report.violate("task %s: newest checkpoint is (attempt %d, sequence %d), last stored is (attempt %d, sequence %d)",
			id, newest.attempt, newest.sequence, last.attempt, last.sequence)
	}
	return nil
}

// newestAtStart returns the newest checkpoint that was stored, and so
// acknowledged, when attempt a started; the zero position when there was
// none. Those are the checkpoints of earlier attempts, because
// checkStoredWhileCurrent checks that each was stored before the next
// attempt started and none before its own attempt did.
func newestAtStart(history []storedCheckpoint, a attemptRow) position {
	var newest position
	for _, c := range history {
		if c.attempt < a.number && newest.less(c.position) {
			newest = c.position
		}
	}
	return newest
}

// executorReport is the result data of the example checkpoint executor
// (the Report type in examples/checkpoint), decoded here because that
// package is a plugin's main package.
type executorReport struct {
	// StartedAt is the step the attempt resumed after, 0 for a fresh start.
	StartedAt   int64     `json:"started_at"`
	Steps       int64     `json:"steps"`
	ResumedFrom *position `json:"resumed_from"`
}

// UnmarshalJSON decodes a checkpoint reference of the executor's report.
func (p *position) UnmarshalJSON(data []byte) error {
	var ref struct {
		Attempt  int   `json:"attempt"`
		Sequence int64 `json:"sequence"`
	}
	if err := json.Unmarshal(data, &ref); err != nil {
		return err
	}
	*p = position{attempt: ref.Attempt, sequence: ref.Sequence}
	return nil
}

// checkpointTaskType is the task type of the example checkpoint executor,
// the one executor whose result reports where it resumed.
const checkpointTaskType = "checkpoint"

// checkExecutorReport compares the resume point that the example
// checkpoint executor reports with the store. The store's resumed_attempt and
// resumed_sequence are written by the coordinator in the transaction that
// hands the checkpoint out, so only the executor's own report shows that
// the Assign carried it and the executor started from it. For a succeeded
// checkpoint task the report must name the checkpoint that the attempt was
// handed, or none for a fresh start, and that must be the newest one
// stored when the attempt started. When the task saves a checkpoint at
// every step, the report's start step must also equal the step that
// checkpoint holds, which the history gives (see checkpointStep).
//
// NOTE: the store keeps the executor's result only for the outcome that
// ended the task. A released attempt or a retryable failure keeps only its
// state and reason, and a lost attempt reports nothing, so the resume
// point of a superseded attempt is checked against the coordinator's
// record only.
func checkExecutorReport(report *Report, id string, task taskRow, attempts []attemptRow,
	history []storedCheckpoint, o *outcomeRow) {
	if task.taskType != checkpointTaskType || o == nil || o.status != "succeeded" {
		return
	}
	if o.attempt < 1 || o.attempt > len(attempts) {
		return // checkOutcome reports it.
	}
	a := attempts[o.attempt-1]
	var got executorReport
	if err := json.Unmarshal([]byte(o.result), &got); err != nil {
		report.violate("task %s: attempt %d succeeded without a readable executor report %q: %v",
			id, a.number, o.result, err)
		return
	}
	report.ExecutorReports++

	handed := position{attempt: a.resumedAttempt, sequence: a.resumedSequence}
	newest := newestAtStart(history, a)
	switch {
	case got.ResumedFrom == nil && handed.attempt != 0:
		report.violate("task %s: attempt %d was handed checkpoint (attempt %d, sequence %d), but the executor reports a fresh start",
			id, a.number, handed.attempt, handed.sequence)
	case got.ResumedFrom != nil && *got.ResumedFrom != handed:
		report.violate("task %s: the executor of attempt %d reports resuming from (attempt %d, sequence %d), but it was handed (attempt %d, sequence %d)",
			id, a.number, got.ResumedFrom.attempt, got.ResumedFrom.sequence, handed.attempt, handed.sequence)
	}
	var resumed position
	if got.ResumedFrom != nil {
		resumed = *got.ResumedFrom
	}
	if resumed != newest {
		report.violate("task %s: the executor of attempt %d resumed from (attempt %d, sequence %d), but the newest checkpoint stored when it started is (attempt %d, sequence %d)",
			id, a.number, resumed.attempt, resumed.sequence, newest.attempt, newest.sequence)
	}

	if !checkpointsEveryStep(task.payload) {
		return
	}
	step, ok := checkpointStep(attempts, handed)
	if ok && got.StartedAt != step {
		report.violate("task %s: the executor of attempt %d reports starting after step %d, but checkpoint (attempt %d, sequence %d) holds step %d",
			id, a.number, got.StartedAt, handed.attempt, handed.sequence, step)
	}
}

// checkpointsEveryStep reports whether a checkpoint task's payload saves a
// checkpoint at every step: checkpoint_every absent, 0 or 1.
func checkpointsEveryStep(payload string) bool {
	var p struct {
		CheckpointEvery int `json:"checkpoint_every"`
	}
	if err := json.Unmarshal([]byte(payload), &p); err != nil {
		return false
	}
	return p.CheckpointEvery <= 1
}

// checkpointStep returns the step that checkpoint p of a task holds when
// the example executor saves one checkpoint per step. An attempt that
// started after step s saves step s+n as its sequence n. So p holds the
// start step of its attempt plus p.sequence, and that start step is the
// step of the checkpoint the attempt was handed. The zero position holds step 0. ok is false when the chain names
// an attempt that does not exist or does not go back to earlier attempts,
// which checkCheckpoints reports.
func checkpointStep(attempts []attemptRow, p position) (step int64, ok bool) {
	for p.attempt > 0 {
		if p.attempt > len(attempts) {
			return 0, false
		}
		step += p.sequence
		a := attempts[p.attempt-1]
		next := position{attempt: a.resumedAttempt, sequence: a.resumedSequence}
		if next.attempt >= p.attempt {
			return 0, false
		}
		p = next
	}
	return step, true
}
