package store

import (
	"context"
	"fmt"
)

// SaveSessions replaces every saved session with sessions in one
// transaction.
func (s *SQLite) SaveSessions(ctx context.Context, sessions []SavedSession) error {
	for _, ss := range sessions {
		if err := requireID("session id", ss.ID); err != nil {
			return fmt.Errorf("save session: %w", err)
		}
		if err := requireID("worker id", ss.WorkerID); err != nil {
			return fmt.Errorf("save session %s: %w", ss.ID, err)
		}
	}
	return s.inTx(ctx, func(ctx context.Context, tx *txn) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM saved_sessions`); err != nil {
			return fmt.Errorf("clear saved sessions: %w", err)
		}
		for _, ss := range sessions {
			_, err := tx.ExecContext(ctx, `INSERT INTO saved_sessions (id, worker_id, state, saved_ms)
				VALUES (?, ?, ?, ?)`, ss.ID, ss.WorkerID, ss.State, toMillis(ss.Saved))
			if err != nil {
				return fmt.Errorf("save session %s of worker %s: %w", ss.ID, ss.WorkerID, err)
			}
		}
		return nil
	})
}

// TakeSessions returns the saved sessions ordered by worker ID and deletes
// them in the same transaction, so that a session is restored at most once.
func (s *SQLite) TakeSessions(ctx context.Context) ([]SavedSession, error) {
	var sessions []SavedSession
	err := s.inTx(ctx, func(ctx context.Context, tx *txn) error {
		rows, err := tx.QueryContext(ctx, `SELECT id, worker_id, state, saved_ms FROM saved_sessions
			ORDER BY worker_id, id`)
		if err != nil {
			return fmt.Errorf("read saved sessions: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var (
				ss    SavedSession
				saved int64
			)
			if err := rows.Scan(&ss.ID, &ss.WorkerID, &ss.State, &saved); err != nil {
				return fmt.Errorf("read saved sessions: %w", err)
			}
			ss.Saved = fromMillis(saved)
			sessions = append(sessions, ss)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("read saved sessions: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM saved_sessions`); err != nil {
			return fmt.Errorf("delete saved sessions: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return sessions, nil
}
