package connector

import (
	"errors"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/gorilla/websocket"

	"github.com/dtf-io/dtf/protocol"
)

// secretCheckInterval is how often a connected worker reads its
// secret_file to find a rotated credential. Reading a file of about 60
// bytes every two seconds costs nothing, and a new secret is in use
// seconds after `dtf credentials rotate` wrote it, long before the old
// credential's grace period ends.
const secretCheckInterval = 2 * time.Second

// errSecretRotated ends a connection whose worker logs in again with the
// new credential in its secret_file.
var errSecretRotated = errors.New("secret_file contains a new credential; logging in again with it")

// watchSecretFile ends s once cfg.SecretFile holds a credential other than
// the one s logged in with. The connect loop then redials at once and
// resumes the session with the new credential, so a rotation costs one
// resume instead of a rejection when the old credential expires. A file
// that cannot be read or contains no valid secret is skipped here, because
// it may be in the middle of being replaced. The next handshake reports a
// lasting problem.
func (s *session) watchSecretFile(interval time.Duration) {
	if s.handshake == nil || s.cfg.SecretFile == "" {
		return
	}
	current := s.handshake.CredentialID()
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	// lastProblem is the file's problem that was logged last, so that each
	// one is logged once while the session lasts.
	lastProblem := ""
	for {
		select {
		case <-s.done:
			return
		case <-ticker.C:
		}
		secret, err := s.cfg.readSecret()
		if err != nil {
			// Two reads in a row with the same problem are not a file in
			// the middle of being replaced.
			if problem := err.Error(); problem != lastProblem {
				lastProblem = problem
			} else if problem != "" && !s.reportedSecretProblem {
				s.reportedSecretProblem = true
				s.log.Warn("secret_file cannot be used; the session goes on with the secret it logged in "+
					"with, but the next login fails unless the file is fixed", "session_id", s.id, "error", err)
			}
			continue
		}
		lastProblem = ""
		id, err := protocol.CredentialIDOf(secret)
		if err != nil || id == current || s.hooks.link.creds.isRejected(id) {
			continue
		}
		s.log.Info("secret_file contains a new credential; reconnecting to log in with it and resume the session",
			"session_id", s.id, "old_credential_id", current, "credential_id", id)
		s.rotated.Store(true)
		s.closeFor("worker logs in with a new credential", errSecretRotated)
		return
	}
}

// closeFor sends a normal close frame with reason, waits up to closeWait
// for the coordinator's close frame, and ends the connection with err.
func (s *session) closeFor(reason string, err error) {
	msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, reason)
	select {
	case s.out <- outbound{messageType: websocket.CloseMessage, data: msg}:
	case <-s.done:
		return
	}
	timer := time.NewTimer(closeWait)
	defer timer.Stop()
	select {
	case <-s.done:
	case <-timer.C:
	}
	s.end(err)
}

// credentialMemory remembers, across the connections of one link, the
// secret of the last welcomed session and the credentials that the
// coordinator rejected. A worker whose secret_file receives a secret that
// the coordinator rejects, such as another worker's, then logs in again
// with the secret that worked instead of failing until it stops.
type credentialMemory struct {
	mu sync.Mutex
	// good is the secret of the last session that the coordinator welcomed.
	good string
	// attempted is the credential id of the latest handshake.
	attempted string
	// rejected holds the credential ids that the coordinator rejected as
	// unauthenticated; it is bounded by the secrets written to the file.
	rejected map[string]bool
}

// choose returns the secret to log in with: the file's, unless the
// coordinator rejected its credential and a secret that worked is known.
func (m *credentialMemory) choose(fromFile string, log hclog.Logger) string {
	id, err := protocol.CredentialIDOf(fromFile)
	m.mu.Lock()
	defer m.mu.Unlock()
	if err == nil && m.rejected[id] && m.good != "" && m.good != fromFile {
		goodID, _ := protocol.CredentialIDOf(m.good)
		log.Warn("secret_file contains a credential that the coordinator rejected; logging in with the "+
			"previous credential instead; put a valid secret in secret_file",
			"rejected_credential_id", id, "credential_id", goodID)
		fromFile = m.good
		id = goodID
	}
	m.attempted = id
	return fromFile
}

// welcomed records secret as the one that works.
func (m *credentialMemory) welcomed(secret string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.good = secret
	if id, err := protocol.CredentialIDOf(secret); err == nil {
		delete(m.rejected, id)
	}
}

// rejectAttempted records that the coordinator rejected the credential of
// the latest handshake.
func (m *credentialMemory) rejectAttempted() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.attempted == "" {
		return
	}
	if m.rejected == nil {
		m.rejected = map[string]bool{}
	}
	m.rejected[m.attempted] = true
}

// isRejected reports whether the coordinator rejected credential id.
func (m *credentialMemory) isRejected(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.rejected[id]
}

// fileHasUntried reports whether cfg's secret_file now holds a credential
// that the coordinator has not rejected, so that a retry need not wait.
func (m *credentialMemory) fileHasUntried(cfg *Config) bool {
	if cfg.SecretFile == "" {
		return false
	}
	secret, err := cfg.readSecret()
	if err != nil {
		return false
	}
	id, err := protocol.CredentialIDOf(secret)
	return err == nil && !m.isRejected(id)
}
