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
// newest checkpoint and succeeded on the second.
var goodTask = []string{
	`INSERT INTO tasks (id, seq, batch, type, payload, max_attempts, state, attempt, created_ms, updated_ms)
		VALUES ('t1', 1, 'b', 'checkpoint', '{}', 3, 'succeeded', 2, 1, 1)`,
	`INSERT INTO attempts (task_id, attempt, worker_id, state, started_ms) VALUES ('t1', 1, 'w1', 'lost', 1)`,
	`INSERT INTO attempts (task_id, attempt, worker_id, state, started_ms, resumed_attempt, resumed_sequence)
		VALUES ('t1', 2, 'w2', 'succeeded', 2, 1, 5)`,
	`INSERT INTO outcomes (task_id, attempt, worker_id, status, exit_code, received_ms)
		VALUES ('t1', 2, 'w2', 'succeeded', 0, 3)`,
	`INSERT INTO checkpoint_history (task_id, position, attempt, sequence, size, saved_ms, stored_ms)
		VALUES ('t1', 1, 1, 4, 1, 1, 1), ('t1', 2, 1, 5, 1, 1, 1), ('t1', 3, 2, 1, 1, 2, 2)`,
	`INSERT INTO checkpoints (task_id, attempt, sequence, data, size, saved_ms, stored_ms)
		VALUES ('t1', 2, 1, x'00', 1, 2, 2)`,
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
