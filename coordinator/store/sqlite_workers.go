package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// TouchWorker moves the worker's last-seen time forward.
func (s *SQLite) TouchWorker(ctx context.Context, id string, lastSeen time.Time) error {
	return s.inTx(ctx, func(ctx context.Context, tx *txn) error {
		_, err := tx.ExecContext(ctx, `UPDATE workers SET last_seen_ms = MAX(last_seen_ms, ?) WHERE id = ?`,
			toMillis(lastSeen), id)
		if err != nil {
			return fmt.Errorf("record last-seen time of worker %s: %w", id, err)
		}
		return nil
	})
}

// UpsertWorker records a worker's declaration from its latest Hello.
func (s *SQLite) UpsertWorker(ctx context.Context, w WorkerRecord) error {
	if err := requireID("worker id", w.ID); err != nil {
		return fmt.Errorf("record worker: %w", err)
	}
	if w.Slots < 0 {
		return fmt.Errorf("record worker %s: slots %d is negative", w.ID, w.Slots)
	}
	types, err := json.Marshal(w.TaskTypes)
	if err != nil {
		return fmt.Errorf("encode task types of worker %s: %w", w.ID, err)
	}
	labels, err := json.Marshal(w.Labels)
	if err != nil {
		return fmt.Errorf("encode labels of worker %s: %w", w.ID, err)
	}
	return s.inTx(ctx, func(ctx context.Context, tx *txn) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO workers (id, task_types, slots, labels,
			host_version, plugin_version, last_seen_ms) VALUES (?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (id) DO UPDATE SET task_types = excluded.task_types,
			slots = excluded.slots, labels = excluded.labels,
			host_version = excluded.host_version, plugin_version = excluded.plugin_version,
			last_seen_ms = excluded.last_seen_ms`,
			w.ID, string(types), w.Slots, string(labels), w.HostVersion, w.PluginVersion,
			toMillis(w.LastSeen))
		if err != nil {
			return fmt.Errorf("record worker %s: %w", w.ID, err)
		}
		return nil
	})
}

// ListWorkers returns every recorded worker ordered by ID.
func (s *SQLite) ListWorkers(ctx context.Context) ([]WorkerRecord, error) {
	rows, err := s.reader.QueryContext(ctx, `SELECT id, task_types, slots, labels, host_version,
		plugin_version, last_seen_ms FROM workers ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list workers: %w", err)
	}
	defer rows.Close()
	var workers []WorkerRecord
	for rows.Next() {
		var (
			w             WorkerRecord
			types, labels string
			lastSeen      int64
		)
		if err := rows.Scan(&w.ID, &types, &w.Slots, &labels, &w.HostVersion, &w.PluginVersion,
			&lastSeen); err != nil {
			return nil, fmt.Errorf("list workers: %w", err)
		}
		if err := json.Unmarshal([]byte(types), &w.TaskTypes); err != nil {
			return nil, fmt.Errorf("decode task types of worker %s: %w", w.ID, err)
		}
		if err := json.Unmarshal([]byte(labels), &w.Labels); err != nil {
			return nil, fmt.Errorf("decode labels of worker %s: %w", w.ID, err)
		}
		w.LastSeen = fromMillis(lastSeen)
		workers = append(workers, w)
	}
	return workers, rows.Err()
}

// DeleteWorker removes the worker's record, or returns ErrWorkerNotFound.
// The worker's tasks and attempts stay, so the history of its tasks still
// names it.
func (s *SQLite) DeleteWorker(ctx context.Context, id string) error {
	var deleted int64
	err := s.inTx(ctx, func(ctx context.Context, tx *txn) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM workers WHERE id = ?`, id)
		if err != nil {
			return fmt.Errorf("delete worker %s: %w", id, err)
		}
		deleted, err = res.RowsAffected()
		if err != nil {
			return fmt.Errorf("delete worker %s: %w", id, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if deleted == 0 {
		return fmt.Errorf("delete worker %s: %w", id, ErrWorkerNotFound)
	}
	return nil
}
