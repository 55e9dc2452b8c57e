package connector

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/dtf-io/dtf/protocol"
	"github.com/dtf-io/dtf/protocol/pb"
)

// maxSecretFileBytes bounds the secret file that is read before every
// handshake. A secret is about 60 bytes, so a larger file is a wrong path.
const maxSecretFileBytes = 4 << 10

// usesCredential reports whether the worker authenticates with SCRAM.
func (c *Config) usesCredential() bool {
	return c.Secret != "" || c.SecretFile != ""
}

// checkSecret rejects a config with both secret and secret_file, and a
// secret that is not in the format `dtf credentials create` prints. A
// secret file is read here too, so a wrong path fails at Configure.
func (c *Config) checkSecret() error {
	if c.Secret != "" && c.SecretFile != "" {
		return errors.New("coordinator.secret and coordinator.secret_file are both set; set only one")
	}
	if !c.usesCredential() {
		return nil
	}
	_, err := c.readSecret()
	return err
}

// readSecret returns the secret, from SecretFile when it is set. Errors
// name the file, never its content.
func (c *Config) readSecret() (string, error) {
	secret := c.Secret
	if c.SecretFile != "" {
		data, err := readSecretFile(c.SecretFile)
		if err != nil {
			return "", err
		}
		secret = data
	}
	secret = strings.TrimSpace(secret)
	if _, err := protocol.CredentialIDOf(secret); err != nil {
		if c.SecretFile != "" {
			return "", fmt.Errorf("coordinator.secret_file %s: %w", c.SecretFile, err)
		}
		return "", fmt.Errorf("coordinator.secret: %w", err)
	}
	return secret, nil
}

func readSecretFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("coordinator.secret_file: %w; write the secret from `dtf credentials create` "+
			"into it", err)
	}
	defer f.Close()
	data := make([]byte, maxSecretFileBytes+1)
	n, err := f.Read(data)
	if err != nil && n == 0 {
		return "", fmt.Errorf("coordinator.secret_file %s: %w", path, err)
	}
	if n > maxSecretFileBytes {
		return "", fmt.Errorf("coordinator.secret_file %s is larger than %d bytes; it must contain only "+
			"the secret from `dtf credentials create`", path, maxSecretFileBytes)
	}
	return string(data[:n]), nil
}

// startHandshake reads the secret and fills hello's SCRAM fields.
func (s *session) startHandshake(hello *pb.Hello) error {
	secret, err := s.cfg.readSecret()
	if err != nil {
		return err
	}
	secret = s.hooks.link.creds.choose(secret, s.log)
	s.secret = secret
	handshake, err := protocol.NewClientHandshake(s.cfg.WorkerID, secret)
	if err != nil {
		return err
	}
	clientFirst, err := handshake.ClientFirst()
	if err != nil {
		return err
	}
	hello.Token = ""
	hello.CredentialId = handshake.CredentialID()
	hello.ScramClientFirst = clientFirst
	s.handshake = handshake
	return nil
}

// onChallenge replies to the coordinator's SCRAM challenge with a proof.
func (s *session) onChallenge(frame *pb.Frame) error {
	if s.handshake == nil || s.proofSent || s.isWelcomed.Load() {
		return errors.New("coordinator sent an unexpected challenge; the worker has no secret configured " +
			"or already answered one")
	}
	clientFinal, err := s.handshake.Respond(frame.GetChallenge().GetScramServerFirst())
	if err != nil {
		return err
	}
	s.transcript.Add(s.inbound)
	proof, err := protocol.Encode(&pb.Frame{Body: &pb.Frame_Proof{Proof: &pb.Proof{
		ScramClientFinal: clientFinal,
	}}})
	if err != nil {
		return fmt.Errorf("encode proof: %w", err)
	}
	s.transcript.Add(proof)
	s.proofSent = true
	s.queueMessage(proof)
	return nil
}

// openWelcome checks the tagged Welcome that ends a SCRAM handshake and
// returns its bytes without the tag. It first reads the Welcome unchecked
// for the coordinator's signature and the session id, then checks the
// signature, derives the session keys and checks the tag with them, so
// that nothing in the Welcome is used before it is authenticated.
func (s *session) openWelcome(message []byte) ([]byte, error) {
	if !s.proofSent {
		return nil, errors.New("coordinator sent a tagged message before the SCRAM handshake ended")
	}
	frame, err := protocol.Decode(protocol.StripTag(message), s.cfg.MaxFrameBytes)
	if err != nil || frame.GetWelcome() == nil {
		return nil, fmt.Errorf("coordinator sent a tagged %s frame instead of welcome", protocol.TypeOf(frame))
	}
	welcome := frame.GetWelcome()
	if err := s.handshake.Verify(welcome.GetScramServerFinal()); err != nil {
		return nil, err
	}
	s.hooks.link.creds.welcomed(s.secret)
	keys, err := s.handshake.SessionKeys(welcome.GetSessionId(), s.transcript.Sum())
	if err != nil {
		return nil, err
	}
	opener := protocol.NewOpener(keys.ToWorker)
	body, err := opener.Open(message)
	if err != nil {
		return nil, fmt.Errorf("welcome from the coordinator: %w", err)
	}
	s.opener = opener
	s.sealer = protocol.NewSealer(keys.ToCoordinator)
	return body, nil
}

// openMessage checks the tag of a received message on an authenticated
// connection. It returns the message for decoding, or an error that ends
// the connection.
func (s *session) openMessage(message []byte) ([]byte, error) {
	if s.opener != nil {
		body, err := s.opener.Open(message)
		if err != nil {
			return nil, s.rejectMessage(err)
		}
		return body, nil
	}
	// In the token mode a flagged encoding byte is only a malformed
	// message, which the decoder counts without ending the connection.
	if s.handshake != nil && protocol.Tagged(message) {
		return s.openWelcome(message)
	}
	return message, nil
}

// rejectMessage counts and logs a message that failed its tag and returns
// the error that ends the connection. The connector then reconnects and
// resumes the session, as after any drop.
func (s *session) rejectMessage(err error) error {
	reason := protocol.RejectBadTag
	var tagErr *protocol.TagError
	if errors.As(err, &tagErr) {
		reason = tagErr.Reason
	}
	s.hooks.stats.rejectedFrames.Add(1)
	s.log.Warn("message from the coordinator failed authentication; closing the connection",
		"reason", reason, "error", err)
	return fmt.Errorf("message from the coordinator failed authentication: %w", err)
}

// checkUntaggedWelcome rejects a Welcome without a tag when the worker has
// a secret: a coordinator that skips the SCRAM exchange has not proved
// that it holds the worker's verifier.
func (s *session) checkUntaggedWelcome(frame *pb.Frame) error {
	if s.handshake != nil && s.opener == nil && frame.GetWelcome() != nil {
		return fmt.Errorf("%w: the coordinator welcomed worker_id %q without a SCRAM exchange although the "+
			"worker has a secret; check that url points at a coordinator where this worker has a credential",
			protocol.ErrAuthentication, s.cfg.WorkerID)
	}
	return nil
}
