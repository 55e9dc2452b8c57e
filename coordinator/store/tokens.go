package store

import (
	"context"
	"errors"
	"time"
)

// ErrTokenNotFound is returned for an API token the store does not have.
var ErrTokenNotFound = errors.New("API token not found")

// APIToken is the stored record of one bearer token of the HTTP API: its
// SHA-256 hash, never the token.
type APIToken struct {
	ID string
	// Name is a free-form label chosen at creation, such as "ci".
	Name string
	// Role is "read" or "submit".
	Role string
	// Hash is the SHA-256 of the whole token text.
	Hash    []byte
	Created time.Time
	// Expires is when the token stops working; zero never.
	Expires time.Time
	// Revoked is when the token was revoked; zero while it is not.
	Revoked time.Time
}

// ActiveAt reports whether the token is neither revoked nor expired at now.
func (t APIToken) ActiveAt(now time.Time) bool {
	if !t.Revoked.IsZero() && !t.Revoked.After(now) {
		return false
	}
	return t.Expires.IsZero() || t.Expires.After(now)
}

// TokenStore keeps API tokens. The dtf tokens command writes them,
// possibly while the coordinator runs, and the coordinator reads one on
// every authenticated API request.
type TokenStore interface {
	// CreateAPIToken stores a new token record.
	CreateAPIToken(ctx context.Context, token APIToken) error
	// ListAPITokens returns every token record, ordered by creation time.
	ListAPITokens(ctx context.Context) ([]APIToken, error)
	// APITokenByHash returns the record whose hash is hash, or
	// ErrTokenNotFound.
	APITokenByHash(ctx context.Context, hash []byte) (APIToken, error)
	// RevokeAPIToken revokes the token id at now, or returns
	// ErrTokenNotFound. Revoking a revoked token keeps its first time.
	RevokeAPIToken(ctx context.Context, id string, now time.Time) error
}
