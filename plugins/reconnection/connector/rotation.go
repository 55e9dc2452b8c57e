package connector

import (
	"errors"
	"time"

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
var errSecretRotated = errors.New("secret_file holds a new credential; logging in again with it")

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
	for {
		select {
		case <-s.done:
			return
		case <-ticker.C:
		}
		secret, err := s.cfg.readSecret()
		if err != nil {
			continue
		}
		id, err := protocol.CredentialIDOf(secret)
		if err != nil || id == current {
			continue
		}
		s.log.Info("secret_file holds a new credential; reconnecting to log in with it and resume the session",
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
