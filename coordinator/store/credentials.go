package store

import (
	"context"
	"errors"
	"time"
)

// ErrCredentialNotFound is returned for a credential id the store does not
// have for the given worker.
var ErrCredentialNotFound = errors.New("credential not found")

// Credential is the stored verifier of one worker credential: what SCRAM
// needs to check a worker's proof, never the secret.
type Credential struct {
	WorkerID     string
	CredentialID string
	Salt         []byte
	Iterations   int
	StoredKey    []byte
	ServerKey    []byte
	Created      time.Time
	// Expires is when the credential stops working; zero never.
	Expires time.Time
	// Revoked is when the credential was revoked; zero while it is not.
	Revoked time.Time
}

// ActiveAt reports whether the credential is neither revoked nor expired
// at now.
func (c Credential) ActiveAt(now time.Time) bool {
	if !c.Revoked.IsZero() && !c.Revoked.After(now) {
		return false
	}
	return c.Expires.IsZero() || c.Expires.After(now)
}

// CredentialStore keeps worker credentials. The dtf credentials command
// writes them, possibly while the coordinator runs, and the coordinator
// reads them on every handshake.
type CredentialStore interface {
	// CreateCredential stores a new credential.
	CreateCredential(ctx context.Context, cred Credential) error
	// ListCredentials returns the credentials of workerID, or of every
	// worker when it is empty, ordered by worker and creation time.
	ListCredentials(ctx context.Context, workerID string) ([]Credential, error)
	// GetCredential returns one credential of workerID, or
	// ErrCredentialNotFound.
	GetCredential(ctx context.Context, workerID, credentialID string) (Credential, error)
	// HasCredentials reports whether workerID has any credential, active or
	// not. Such a worker must authenticate with SCRAM.
	HasCredentials(ctx context.Context, workerID string) (bool, error)
	// ActiveCredentials returns the credentials of workerID that are
	// neither revoked nor expired at now.
	ActiveCredentials(ctx context.Context, workerID string, now time.Time) ([]Credential, error)
	// RevokeCredentials revokes at now the credential credentialID of
	// workerID, or every active one of workerID when credentialID is
	// empty, and returns the ids it revoked.
	RevokeCredentials(ctx context.Context, workerID, credentialID string, now time.Time) ([]string, error)
	// ExpireCredentials sets the expiry of every active credential of
	// workerID other than keep to expires, unless it expires earlier,
	// and returns the ids it changed. Rotation uses it for the grace
	// period of the old credentials.
	ExpireCredentials(ctx context.Context, workerID, keep string, expires time.Time) ([]string, error)
	// EndedCredentials returns the credentials revoked in (since, now] or
	// expiring in (since, now], each id mapped to how it ended: "revoked"
	// or "expired".
	EndedCredentials(ctx context.Context, since, now time.Time) (map[string]string, error)
}
