package store

import (
	"context"
	"fmt"
	"time"
)

var _ TokenStore = (*SQLite)(nil)

const tokenColumns = `token_id, name, role, hash, created_ms, expires_ms, revoked_ms`

// CreateAPIToken stores a new token record.
func (s *SQLite) CreateAPIToken(ctx context.Context, token APIToken) error {
	if err := requireID("token id", token.ID); err != nil {
		return fmt.Errorf("create API token: %w", err)
	}
	if token.Role == "" || len(token.Hash) == 0 {
		return fmt.Errorf("create API token %s: role and hash must be set", token.ID)
	}
	return s.inTx(ctx, func(ctx context.Context, tx *txn) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO api_tokens (`+tokenColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?)`,
			token.ID, token.Name, token.Role, token.Hash, toMillis(token.Created), toMillis(token.Expires),
			toMillis(token.Revoked))
		if err != nil {
			return fmt.Errorf("create API token %s: %w", token.ID, err)
		}
		return nil
	})
}

// ListAPITokens returns every token record, ordered by creation time.
func (s *SQLite) ListAPITokens(ctx context.Context) ([]APIToken, error) {
	tokens, err := s.queryTokens(ctx, `SELECT `+tokenColumns+` FROM api_tokens ORDER BY created_ms, token_id`)
	if err != nil {
		return nil, fmt.Errorf("list API tokens: %w", err)
	}
	return tokens, nil
}

// APITokenByHash returns the record whose hash is hash, or
// ErrTokenNotFound.
func (s *SQLite) APITokenByHash(ctx context.Context, hash []byte) (APIToken, error) {
	tokens, err := s.queryTokens(ctx, `SELECT `+tokenColumns+` FROM api_tokens WHERE hash = ?`, hash)
	if err != nil {
		return APIToken{}, fmt.Errorf("read API token: %w", err)
	}
	if len(tokens) == 0 {
		return APIToken{}, ErrTokenNotFound
	}
	return tokens[0], nil
}

// RevokeAPIToken revokes the token id at now, or returns ErrTokenNotFound.
func (s *SQLite) RevokeAPIToken(ctx context.Context, id string, now time.Time) error {
	return s.inTx(ctx, func(ctx context.Context, tx *txn) error {
		res, err := tx.ExecContext(ctx, `UPDATE api_tokens
			SET revoked_ms = CASE WHEN revoked_ms = 0 THEN ? ELSE revoked_ms END WHERE token_id = ?`,
			toMillis(now), id)
		if err != nil {
			return fmt.Errorf("revoke API token %s: %w", id, err)
		}
		if n, err := res.RowsAffected(); err == nil && n == 0 {
			return fmt.Errorf("%w: %s", ErrTokenNotFound, id)
		}
		return nil
	})
}

func (s *SQLite) queryTokens(ctx context.Context, query string, args ...any) ([]APIToken, error) {
	rows, err := s.reader.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var tokens []APIToken
	for rows.Next() {
		var (
			t                         APIToken
			created, expires, revoked int64
		)
		if err := rows.Scan(&t.ID, &t.Name, &t.Role, &t.Hash, &created, &expires, &revoked); err != nil {
			return nil, err
		}
		t.Created, t.Expires, t.Revoked = fromMillis(created), fromMillis(expires), fromMillis(revoked)
		tokens = append(tokens, t)
	}
	return tokens, rows.Err()
}
