package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/dtf-io/dtf/coordinator/api"
)

// TaskCounts summarizes the tasks table for metrics.
type TaskCounts struct {
	// ByState is the number of tasks in each state that has any.
	ByState map[string]int
	// OldestReady is the time since which the longest-waiting queued task
	// could run: the later of its last change and the end of its retry
	// backoff. It is zero when no task is queued.
	OldestReady time.Time
}

// CountTasks returns the number of tasks by state and the oldest ready
// queued task. The count by state reads the index on (state, type, seq),
// one entry per task. The second query reads only the queued tasks.
func (s *SQLite) CountTasks(ctx context.Context) (TaskCounts, error) {
	rows, err := s.reader.QueryContext(ctx, `SELECT state, COUNT(*) FROM tasks GROUP BY state`)
	if err != nil {
		return TaskCounts{}, fmt.Errorf("count tasks by state: %w", err)
	}
	defer rows.Close()
	counts := TaskCounts{ByState: map[string]int{}}
	for rows.Next() {
		var state string
		var n int
		if err := rows.Scan(&state, &n); err != nil {
			return TaskCounts{}, fmt.Errorf("count tasks by state: %w", err)
		}
		counts.ByState[state] = n
	}
	if err := rows.Err(); err != nil {
		return TaskCounts{}, fmt.Errorf("count tasks by state: %w", err)
	}

	var oldest sql.NullInt64
	err = s.reader.QueryRowContext(ctx, `SELECT MIN(MAX(updated_ms, not_before_ms)) FROM tasks WHERE state = ?`,
		api.StateQueued).Scan(&oldest)
	if err != nil {
		return TaskCounts{}, fmt.Errorf("find the oldest queued task: %w", err)
	}
	if oldest.Valid {
		counts.OldestReady = fromMillis(oldest.Int64)
	}
	return counts, nil
}
