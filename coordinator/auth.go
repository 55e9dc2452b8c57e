package coordinator

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/hashicorp/go-hclog"

	"github.com/dtf-io/dtf/coordinator/store"
	"github.com/dtf-io/dtf/protocol"
	"github.com/dtf-io/dtf/protocol/pb"
)

// credentialCheckInterval is the period at which the coordinator looks for
// revoked and expired credentials and closes the connections that use them.
const credentialCheckInterval = time.Second

// createCredentialHint is the fix that rejections name: how to give a
// worker a credential.
const createCredentialHint = "create one with `dtf credentials create -config coordinator.hcl -worker %s` " +
	"and set secret or secret_file in the coordinator block of worker.hcl"

// authResult is a worker's authentication in the handshake. A nil
// *authResult is the token mode, whose messages carry no tags.
type authResult struct {
	credentialID string
	scram        *protocol.ServerHandshake
	transcript   protocol.Transcript
	serverFinal  string
}

// sessionKeys derives the connection's keys for sessionID and returns the
// sealer of the coordinator's messages and the opener of the worker's.
func (a *authResult) sessionKeys(sessionID string) (*protocol.Sealer, *protocol.Opener, error) {
	keys, err := a.scram.SessionKeys(sessionID, a.transcript.Sum())
	if err != nil {
		return nil, nil, err
	}
	return protocol.NewSealer(keys.ToWorker), protocol.NewOpener(keys.ToCoordinator), nil
}

// authenticate checks the worker's identity after its Hello: the SCRAM
// exchange of Challenge and Proof when the hello starts one, otherwise the
// token mode. It returns the result, or a Reject for the connection.
func (s *Server) authenticate(ws *websocket.Conn, hello *pb.Hello, helloBytes []byte, log hclog.Logger) (*authResult, *pb.Frame) {
	ctx, cancel := storeContext()
	defer cancel()
	if hello.GetScramClientFirst() == "" {
		return nil, s.checkToken(ctx, hello, log)
	}
	verifier, reject := s.lookupCredential(ctx, hello, log)
	if reject != nil {
		return nil, reject
	}
	auth := &authResult{credentialID: verifier.CredentialID}
	auth.transcript.Add(helloBytes)
	var err error
	auth.scram, err = protocol.NewServerHandshake(hello.GetWorkerId(), verifier)
	if err != nil {
		return nil, rejectFrame(rejectProtocolError, err.Error(), 0)
	}
	serverFirst, err := auth.scram.Challenge(hello.GetScramClientFirst())
	if err != nil {
		return nil, rejectFrame(rejectProtocolError, err.Error()+"; upgrade the reconnection plugin", 0)
	}

	challenge, err := protocol.Encode(&pb.Frame{Body: &pb.Frame_Challenge{Challenge: &pb.Challenge{
		ScramServerFirst: serverFirst,
	}}})
	if err != nil {
		return nil, rejectFrame(rejectProtocolError, err.Error(), 0)
	}
	auth.transcript.Add(challenge)
	_ = ws.SetWriteDeadline(time.Now().Add(s.cfg.Workers.HandshakeTimeout))
	if err := ws.WriteMessage(websocket.BinaryMessage, challenge); err != nil {
		return nil, rejectFrame(rejectProtocolError, "write challenge: "+err.Error(), 0)
	}

	// The read deadline of the hello still runs, so the whole handshake
	// ends within handshake_timeout.
	proofFrame, proofBytes, err := readMessage(ws, s.handshakeCodec())
	if err != nil {
		return nil, rejectFrame(rejectProtocolError, s.proofError(err), 0)
	}
	proof := proofFrame.GetProof()
	if proof == nil {
		return nil, rejectFrame(rejectProtocolError, fmt.Sprintf(
			"expected a proof frame after the challenge, got %s", protocol.TypeOf(proofFrame)), 0)
	}
	auth.transcript.Add(proofBytes)
	auth.serverFinal, err = auth.scram.Finish(proof.GetScramClientFinal())
	if err != nil {
		s.authFailures.Add(1)
		return nil, rejectFrame(rejectUnauthenticated, fmt.Sprintf(
			"invalid proof for credential %s of worker_id %q: the worker's secret is wrong; copy it again "+
				"or rotate it with `dtf credentials rotate -config coordinator.hcl -worker %s`",
			verifier.CredentialID, hello.GetWorkerId(), hello.GetWorkerId()), 0)
	}
	log.Debug("worker authenticated", "credential_id", verifier.CredentialID)
	return auth, nil
}

// proofError returns the message of the Reject for a connection that sent
// no proof after the challenge.
func (s *Server) proofError(err error) string {
	var netErr interface{ Timeout() bool }
	if errors.As(err, &netErr) && netErr.Timeout() {
		return fmt.Sprintf("no proof within workers.handshake_timeout %s, which bounds the whole handshake "+
			"from the hello on; send the proof frame right after the challenge, or raise "+
			"workers.handshake_timeout for a slow link", s.cfg.Workers.HandshakeTimeout)
	}
	return "send a proof frame after the challenge: " + err.Error()
}

// lookupCredential returns the verifier of the credential that hello names,
// or a Reject when the worker has no such credential or it is no longer
// active.
func (s *Server) lookupCredential(ctx context.Context, hello *pb.Hello, log hclog.Logger) (protocol.Verifier, *pb.Frame) {
	workerID, credentialID := hello.GetWorkerId(), hello.GetCredentialId()
	cred, err := s.store.GetCredential(ctx, workerID, credentialID)
	if errors.Is(err, store.ErrCredentialNotFound) {
		s.authFailures.Add(1)
		return protocol.Verifier{}, s.unknownCredentialReject(ctx, workerID, credentialID, log)
	}
	if err != nil {
		log.Error("reading the worker's credential failed", "credential_id", credentialID, "error", err)
		return protocol.Verifier{}, rejectFrame(rejectOverloaded, "the coordinator cannot read its store; retry", time.Second)
	}
	now := time.Now()
	if !cred.ActiveAt(now) {
		s.authFailures.Add(1)
		state := "expired at " + cred.Expires.Format(time.RFC3339)
		if !cred.Revoked.IsZero() && !cred.Revoked.After(now) {
			state = "was revoked at " + cred.Revoked.Format(time.RFC3339)
		}
		return protocol.Verifier{}, rejectFrame(rejectUnauthenticated, fmt.Sprintf(
			"credential %s of worker_id %q %s; %s", credentialID, workerID, state,
			s.endedCredentialFix(ctx, workerID)), 0)
	}
	return protocol.Verifier{
		CredentialID: cred.CredentialID,
		Salt:         cred.Salt,
		Iterations:   cred.Iterations,
		StoredKey:    cred.StoredKey,
		ServerKey:    cred.ServerKey,
	}, nil
}

// unknownCredentialReject returns the Reject for a credential id that
// workerID does not have. When the worker has credentials of its own, the
// secret is usually another worker's, so the message states that the
// credential is not this worker's. It never names the worker that owns the
// credential: whoever holds a stolen secret would learn the worker_id to
// use it with.
func (s *Server) unknownCredentialReject(
	ctx context.Context,
	workerID, credentialID string,
	log hclog.Logger,
) *pb.Frame {
	has, err := s.store.HasCredentials(ctx, workerID)
	if err != nil {
		log.Error("reading the worker's credentials failed", "error", err)
	}
	if !has {
		return rejectFrame(rejectUnauthenticated, fmt.Sprintf(
			"worker_id %q has no credential %s; "+createCredentialHint, workerID, credentialID, workerID), 0)
	}
	return rejectFrame(rejectUnauthenticated, fmt.Sprintf(
		"credential %s does not belong to worker_id %q: the secret is another worker's or comes from "+
			"another coordinator's store; give the worker the secret created for %s "+
			"(`dtf credentials list -config coordinator.hcl -worker %s` lists its credentials), or "+
			createCredentialHint, credentialID, workerID, workerID, workerID, workerID), 0)
}

// checkToken admits a worker in the token mode, or returns a Reject. A
// worker_id with any credential, revoked ones included, must use SCRAM, so
// that revoking its credentials cannot be undone by the shared token.
func (s *Server) checkToken(ctx context.Context, hello *pb.Hello, log hclog.Logger) *pb.Frame {
	workerID := hello.GetWorkerId()
	has, err := s.store.HasCredentials(ctx, workerID)
	if err != nil {
		log.Error("reading the worker's credentials failed", "error", err)
		return rejectFrame(rejectOverloaded, "the coordinator cannot read its store; retry", time.Second)
	}
	if has {
		s.authFailures.Add(1)
		return rejectFrame(rejectUnauthenticated, fmt.Sprintf(
			"worker_id %q has credentials, so it must authenticate with one; set secret or secret_file in "+
				"the coordinator block of worker.hcl, or create one with `dtf credentials create "+
				"-config coordinator.hcl -worker %s`", workerID, workerID), 0)
	}
	token := s.cfg.Workers.Token
	if token == "" {
		if s.cfg.OpenToAnyWorker() {
			return nil
		}
		s.authFailures.Add(1)
		return rejectFrame(rejectUnauthenticated, fmt.Sprintf("worker_id %q has no credential and this "+
			"coordinator has no workers.token; "+createCredentialHint, workerID, workerID), 0)
	}
	if subtle.ConstantTimeCompare([]byte(hello.GetToken()), []byte(token)) != 1 {
		s.authFailures.Add(1)
		return rejectFrame(rejectUnauthenticated, "wrong worker token; fix token in worker.hcl", 0)
	}
	return nil
}

// handshakeCodec decodes the untagged messages of the handshake.
func (s *Server) handshakeCodec() protocol.Codec {
	return protocol.Codec{MaxFrameBytes: s.cfg.Workers.MaxFrameBytes, MaxDecodedBytes: s.cfg.Workers.MaxFrameBytes}
}

// rejectedFrames counts the messages that failed their tag, by reason.
type rejectedFrames struct {
	untagged atomic.Uint64
	badTag   atomic.Uint64
}

func (r *rejectedFrames) add(reason string) {
	if reason == protocol.RejectUntagged {
		r.untagged.Add(1)
	} else {
		r.badTag.Add(1)
	}
}

func (r *rejectedFrames) snapshot() map[string]uint64 {
	return map[string]uint64{
		protocol.RejectUntagged: r.untagged.Load(),
		protocol.RejectBadTag:   r.badTag.Load(),
	}
}

// watchCredentials closes, every credentialCheckInterval, the connections
// whose credential was revoked or expired since the previous check. The
// window reaches back by the handshake timeout, so a connection that was
// still in its handshake when its credential ended is found as well.
func (s *Server) watchCredentials(ctx context.Context) {
	ticker := time.NewTicker(credentialCheckInterval)
	defer ticker.Stop()
	log := s.log.Named("auth")
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-ticker.C:
			if s.closeEndedCredentials(log, last.Add(-s.cfg.Workers.HandshakeTimeout), now) {
				last = now
			}
		}
	}
}

// closeEndedCredentials closes the connections whose credential ended in
// (since, now] and reports whether the store could be read.
func (s *Server) closeEndedCredentials(log hclog.Logger, since, now time.Time) bool {
	ctx, cancel := storeContext()
	defer cancel()
	ended, err := s.store.EndedCredentials(ctx, since, now)
	if err != nil {
		log.Error("reading revoked credentials failed; will retry", "error", err)
		return false
	}
	if len(ended) == 0 {
		return true
	}
	for _, ss := range s.credentialSessions(ended) {
		c := ss.attached()
		if c == nil {
			continue
		}
		how := ended[c.credentialID]
		ss.log.Warn("closing the connection: its credential "+how, "credential_id", c.credentialID)
		c.close(rejectFrame(rejectUnauthenticated, fmt.Sprintf(
			"credential %s: credential %s of worker_id %q; %s",
			how, c.credentialID, ss.workerID, s.endedCredentialFix(ctx, ss.workerID)), 0), "credential "+how)
	}
	return true
}

// endedCredentialFix returns the fix for a worker whose credential was
// revoked or expired. After a rotation the worker has a newer credential,
// and only its secret is missing from the worker's config.
func (s *Server) endedCredentialFix(ctx context.Context, workerID string) string {
	active, err := s.store.ActiveCredentials(ctx, workerID, time.Now())
	if err != nil || len(active) == 0 {
		return fmt.Sprintf(createCredentialHint, workerID)
	}
	return fmt.Sprintf("worker_id %q has an active credential, %s: put its secret in secret or secret_file "+
		"of worker.hcl (the worker reads a secret_file again every 2 seconds)",
		workerID, active[len(active)-1].CredentialID)
}

// credentialSessions returns the sessions whose attached connection
// authenticated with one of the credentials in ids.
func (s *Server) credentialSessions(ids map[string]string) []*session {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*session
	for _, ss := range s.sessions {
		if c := ss.attached(); c != nil && ids[c.credentialID] != "" {
			out = append(out, ss)
		}
	}
	return out
}
