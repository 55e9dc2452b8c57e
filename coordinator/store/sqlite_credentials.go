package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

var _ CredentialStore = (*SQLite)(nil)

const credentialColumns = `worker_id, credential_id, salt, iterations, stored_key, server_key,
	created_ms, expires_ms, revoked_ms`

// CreateCredential stores a new credential.
func (s *SQLite) CreateCredential(ctx context.Context, cred Credential) error {
	if err := requireID("worker id", cred.WorkerID); err != nil {
		return fmt.Errorf("create credential: %w", err)
	}
	if err := requireID("credential id", cred.CredentialID); err != nil {
		return fmt.Errorf("create credential of worker %s: %w", cred.WorkerID, err)
	}
	if len(cred.Salt) == 0 || cred.Iterations <= 0 || len(cred.StoredKey) == 0 || len(cred.ServerKey) == 0 {
		return fmt.Errorf("create credential %s of worker %s: salt, iterations, stored key and server key "+
			"must all be set", cred.CredentialID, cred.WorkerID)
	}
	return s.inTx(ctx, func(ctx context.Context, tx *txn) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO worker_credentials (`+credentialColumns+`)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			cred.WorkerID, cred.CredentialID, cred.Salt, cred.Iterations, cred.StoredKey, cred.ServerKey,
			toMillis(cred.Created), toMillis(cred.Expires), toMillis(cred.Revoked))
		if err != nil {
			return fmt.Errorf("create credential %s of worker %s: %w", cred.CredentialID, cred.WorkerID, err)
		}
		return nil
	})
}

// ListCredentials returns the credentials of workerID, or of every worker
// when it is empty, ordered by worker and creation time.
func (s *SQLite) ListCredentials(ctx context.Context, workerID string) ([]Credential, error) {
	query := `SELECT ` + credentialColumns + ` FROM worker_credentials`
	var args []any
	if workerID != "" {
		query += ` WHERE worker_id = ?`
		args = append(args, workerID)
	}
	query += ` ORDER BY worker_id, created_ms, credential_id`
	creds, err := s.queryCredentials(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("list credentials: %w", err)
	}
	return creds, nil
}

// GetCredential returns one credential of workerID, or
// ErrCredentialNotFound.
func (s *SQLite) GetCredential(ctx context.Context, workerID, credentialID string) (Credential, error) {
	creds, err := s.queryCredentials(ctx, `SELECT `+credentialColumns+` FROM worker_credentials
		WHERE worker_id = ? AND credential_id = ?`, workerID, credentialID)
	if err != nil {
		return Credential{}, fmt.Errorf("read credential %s of worker %s: %w", credentialID, workerID, err)
	}
	if len(creds) == 0 {
		return Credential{}, fmt.Errorf("%w: %s of worker %s", ErrCredentialNotFound, credentialID, workerID)
	}
	return creds[0], nil
}

// HasCredentials reports whether workerID has any credential.
func (s *SQLite) HasCredentials(ctx context.Context, workerID string) (bool, error) {
	var count int
	err := s.reader.QueryRowContext(ctx, `SELECT COUNT(*) FROM worker_credentials WHERE worker_id = ?`,
		workerID).Scan(&count)
	if err != nil {
		return false, fmt.Errorf("read credentials of worker %s: %w", workerID, err)
	}
	return count > 0, nil
}

// ActiveCredentials returns the credentials of workerID that are neither
// revoked nor expired at now.
func (s *SQLite) ActiveCredentials(ctx context.Context, workerID string, now time.Time) ([]Credential, error) {
	ms := now.UnixMilli()
	creds, err := s.queryCredentials(ctx, `SELECT `+credentialColumns+` FROM worker_credentials
		WHERE worker_id = ? AND (revoked_ms = 0 OR revoked_ms > ?) AND (expires_ms = 0 OR expires_ms > ?)
		ORDER BY created_ms, credential_id`, workerID, ms, ms)
	if err != nil {
		return nil, fmt.Errorf("read active credentials of worker %s: %w", workerID, err)
	}
	return creds, nil
}

// RevokeCredentials revokes credentialID of workerID, or every active
// credential of workerID when credentialID is empty, and returns the ids
// it revoked. Revoking an unknown or already revoked credential returns
// ErrCredentialNotFound.
func (s *SQLite) RevokeCredentials(ctx context.Context, workerID, credentialID string, now time.Time) ([]string, error) {
	ms := now.UnixMilli()
	var revoked []string
	err := s.inTx(ctx, func(ctx context.Context, tx *txn) error {
		revoked = nil
		query := `SELECT credential_id FROM worker_credentials WHERE worker_id = ? AND revoked_ms = 0`
		args := []any{workerID}
		if credentialID != "" {
			query += ` AND credential_id = ?`
			args = append(args, credentialID)
		}
		ids, err := queryIDs(ctx, tx, query, args...)
		if err != nil {
			return err
		}
		for _, id := range ids {
			if _, err := tx.ExecContext(ctx, `UPDATE worker_credentials SET revoked_ms = ?
				WHERE credential_id = ?`, ms, id); err != nil {
				return err
			}
		}
		revoked = ids
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("revoke credentials of worker %s: %w", workerID, err)
	}
	if len(revoked) == 0 {
		what := "no unrevoked credential"
		if credentialID != "" {
			what = "no unrevoked credential " + credentialID
		}
		return nil, fmt.Errorf("%w: worker %s has %s", ErrCredentialNotFound, workerID, what)
	}
	return revoked, nil
}

// ExpireCredentials sets the expiry of the active credentials of workerID
// other than keep to expires, unless they expire earlier, and returns the
// ids it changed.
func (s *SQLite) ExpireCredentials(ctx context.Context, workerID, keep string, expires time.Time) ([]string, error) {
	ms := expires.UnixMilli()
	var changed []string
	err := s.inTx(ctx, func(ctx context.Context, tx *txn) error {
		ids, err := queryIDs(ctx, tx, `SELECT credential_id FROM worker_credentials
			WHERE worker_id = ? AND credential_id <> ? AND revoked_ms = 0 AND (expires_ms = 0 OR expires_ms > ?)`,
			workerID, keep, ms)
		if err != nil {
			return err
		}
		for _, id := range ids {
			if _, err := tx.ExecContext(ctx, `UPDATE worker_credentials SET expires_ms = ?
				WHERE credential_id = ?`, ms, id); err != nil {
				return err
			}
		}
		changed = ids
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("expire credentials of worker %s: %w", workerID, err)
	}
	return changed, nil
}

// EndedCredentials returns the credentials revoked in (since, now] or
// expiring in (since, now], each id mapped to how it ended. A credential
// that did both in the window counts as revoked.
func (s *SQLite) EndedCredentials(ctx context.Context, since, now time.Time) (map[string]string, error) {
	from, to := since.UnixMilli(), now.UnixMilli()
	rows, err := s.reader.QueryContext(ctx, `SELECT credential_id,
		CASE WHEN revoked_ms > ? AND revoked_ms <= ? THEN 'revoked' ELSE 'expired' END
		FROM worker_credentials
		WHERE (revoked_ms > ? AND revoked_ms <= ?) OR (expires_ms > ? AND expires_ms <= ?)`,
		from, to, from, to, from, to)
	if err != nil {
		return nil, fmt.Errorf("read ended credentials: %w", err)
	}
	defer rows.Close()
	ended := map[string]string{}
	for rows.Next() {
		var id, how string
		if err := rows.Scan(&id, &how); err != nil {
			return nil, fmt.Errorf("read ended credentials: %w", err)
		}
		ended[id] = how
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read ended credentials: %w", err)
	}
	return ended, nil
}

func (s *SQLite) queryCredentials(ctx context.Context, query string, args ...any) ([]Credential, error) {
	rows, err := s.reader.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var creds []Credential
	for rows.Next() {
		var (
			c                         Credential
			created, expires, revoked int64
		)
		if err := rows.Scan(&c.WorkerID, &c.CredentialID, &c.Salt, &c.Iterations, &c.StoredKey,
			&c.ServerKey, &created, &expires, &revoked); err != nil {
			return nil, err
		}
		c.Created, c.Expires, c.Revoked = fromMillis(created), fromMillis(expires), fromMillis(revoked)
		creds = append(creds, c)
	}
	return creds, rows.Err()
}

func queryIDs(ctx context.Context, q queryer, query string, args ...any) ([]string, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, err
	}
	return ids, nil
}
