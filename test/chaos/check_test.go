package chaos

import (
	"context"
	"database/sql"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/coordinator/store"
)

// newCheckStore creates a store with the coordinator's schema and runs
// the statements on it directly, so that a test can write states that the
// store's own methods would never write.
func newCheckStore(t *testing.T, statements ...string) string {
	t.Helper()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "coordinator.db")
	s, err := store.OpenSQLite(ctx, path)
	require.NoError(t, err)
	require.NoError(t, s.Close())

	db, err := sql.Open("sqlite", "file:"+path)
	require.NoError(t, err)
	defer db.Close()
	for _, statement := range statements {
		_, err := db.ExecContext(ctx, statement)
		require.NoError(t, err, statement)
	}
	return path
}

// A task that lost its first attempt, resumed from the first attempt's
// newest checkpoint and succeeded on the second. Times are in
// milliseconds; the executor's report names the checkpoint it resumed
// from and the step that checkpoint holds.
var goodTask = []string{
	`INSERT INTO tasks (id, seq, batch, type, payload, max_attempts, state, attempt, created_ms, updated_ms)
		VALUES ('t1', 1, 'b', 'checkpoint', '{"steps":10,"interval_ms":100}', 3, 'succeeded', 2, 1, 50)`,
	`INSERT INTO attempts (task_id, attempt, worker_id, state, reason, started_ms, ended_ms)
		VALUES ('t1', 1, 'w1', 'lost', 'lost: worker w1 did not return', 10, 20)`,
	`INSERT INTO attempts (task_id, attempt, worker_id, state, started_ms, ended_ms, by_outcome,
		resumed_attempt, resumed_sequence) VALUES ('t1', 2, 'w2', 'succeeded', 30, 50, 1, 1, 5)`,
	`INSERT INTO outcomes (task_id, attempt, worker_id, status, exit_code, result, received_ms)
		VALUES ('t1', 2, 'w2', 'succeeded', 0, '{"started_at":5,"steps":10,"resumed_from":{"attempt":1,"sequence":5}}', 50)`,
	`INSERT INTO checkpoint_history (task_id, position, attempt, sequence, size, saved_ms, stored_ms)
		VALUES ('t1', 1, 1, 4, 1, 12, 12), ('t1', 2, 1, 5, 1, 15, 15), ('t1', 3, 2, 1, 1, 35, 35)`,
	`INSERT INTO checkpoints (task_id, attempt, sequence, data, size, saved_ms, stored_ms)
		VALUES ('t1', 2, 1, x'00', 1, 35, 35)`,
}

func TestCheckPassesGoodStore(t *testing.T) {
	path := newCheckStore(t, goodTask...)

	report, err := Check(context.Background(), path, "")
	require.NoError(t, err)

	assert.Empty(t, report.Violations)
	assert.Equal(t, 1, report.Tasks)
	assert.Equal(t, 2, report.Attempts)
	assert.Equal(t, 1, report.Resumed)
	assert.Equal(t, 3, report.Checkpoints)
	assert.Equal(t, 1, report.ExecutorReports)
}

func TestCheckFindsBrokenInvariants(t *testing.T) {
	cases := map[string]struct {
		change string
		want   string
	}{
		"stale outcome": {
			change: `UPDATE outcomes SET attempt = 1, worker_id = 'w1', status = 'lost'`,
			want:   "stale outcome",
		},
		"task not terminal": {
			change: `UPDATE tasks SET state = 'running'`,
			want:   `state "running" is not terminal`,
		},
		"two successes": {
			change: `UPDATE attempts SET state = 'succeeded' WHERE attempt = 1`,
			want:   "2 attempts succeeded",
		},
		"checkpoint moved backwards": {
			change: `UPDATE checkpoint_history SET sequence = 3 WHERE position = 2`,
			want:   "moved backwards",
		},
		"attempt resumed from an older checkpoint": {
			change: `UPDATE attempts SET resumed_sequence = 4 WHERE attempt = 2`,
			want:   "the newest stored before it is (attempt 1, sequence 5)",
		},
		"outcome from another worker": {
			change: `UPDATE outcomes SET worker_id = 'w1'`,
			want:   `came from worker "w1"`,
		},
		"newest checkpoint behind the history": {
			change: `UPDATE checkpoints SET attempt = 1, sequence = 5`,
			want:   "last stored is (attempt 2, sequence 1)",
		},
		"superseded attempt failed without a retry": {
			change: `UPDATE attempts SET state = 'failed', by_outcome = 1, reason = 'exit status 1' WHERE attempt = 1`,
			want:   "which does not let attempt 2 start",
		},
		"superseded attempt changed after the next started": {
			change: `UPDATE attempts SET state = 'failed', by_outcome = 1, reason = 'retryable failure: executor crashed',
				ended_ms = 40 WHERE attempt = 1`,
			want: "after attempt 2 started at 30 ms",
		},
		"superseded attempt without an end time": {
			change: `UPDATE attempts SET ended_ms = 0 WHERE attempt = 1`,
			want:   "attempt 1 has no end time",
		},
		"outcome applied apart from its attempt's end": {
			change: `UPDATE outcomes SET received_ms = 60`,
			want:   "was not applied when it ended the attempt",
		},
		"outcome on an attempt the coordinator ended": {
			change: `UPDATE attempts SET by_outcome = 0 WHERE attempt = 2`,
			want:   "the coordinator ended the attempt",
		},
		"last attempt ended otherwise than the task": {
			change: `UPDATE tasks SET state = 'timed_out'`,
			want:   `the task is timed_out, but its last attempt 2 ended "succeeded"`,
		},
		"checkpoint of a superseded attempt stored late": {
			change: `UPDATE checkpoint_history SET stored_ms = 31 WHERE position = 2`,
			want:   "stored at 31 ms, after attempt 2 started at 30 ms",
		},
		"checkpoint stored before its attempt started": {
			change: `UPDATE checkpoint_history SET stored_ms = 25 WHERE position = 3`,
			want:   "stored at 25 ms, before attempt 2 started",
		},
		"executor resumed from another checkpoint": {
			change: `UPDATE outcomes SET result = '{"started_at":4,"steps":10,"resumed_from":{"attempt":1,"sequence":4}}'`,
			want:   "reports resuming from (attempt 1, sequence 4), but it was handed (attempt 1, sequence 5)",
		},
		"executor started fresh despite a checkpoint": {
			change: `UPDATE outcomes SET result = '{"started_at":0,"steps":10}'`,
			want:   "but the executor reports a fresh start",
		},
		"executor resumed from a checkpoint it was not handed": {
			change: `UPDATE attempts SET resumed_attempt = 0, resumed_sequence = 0 WHERE attempt = 2`,
			want:   "but it was handed (attempt 0, sequence 0)",
		},
		"executor started at another step": {
			change: `UPDATE outcomes SET result = '{"started_at":3,"steps":10,"resumed_from":{"attempt":1,"sequence":5}}'`,
			want:   "reports starting after step 3, but checkpoint (attempt 1, sequence 5) holds step 5",
		},
		"executor report missing": {
			change: `UPDATE outcomes SET result = ''`,
			want:   "without a readable executor report",
		},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			path := newCheckStore(t, append(append([]string(nil), goodTask...), c.change)...)

			report, err := Check(context.Background(), path, "")
			require.NoError(t, err)

			require.NotEmpty(t, report.Violations)
			assert.Contains(t, strings.Join(report.Violations, "\n"), c.want)
		})
	}
}
