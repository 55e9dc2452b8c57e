package coordinator

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/coordinator/store"
	"github.com/dtf-io/dtf/protocol"
	"github.com/dtf-io/dtf/protocol/pb"
)

// addCredential stores a new credential of workerID and returns its secret
// and verifier.
func addCredential(t *testing.T, ts *testServer, workerID string) (string, protocol.Verifier) {
	t.Helper()
	secret, verifier, err := protocol.NewCredential()
	require.NoError(t, err)
	require.NoError(t, ts.store.CreateCredential(context.Background(), store.Credential{
		WorkerID: workerID, CredentialID: verifier.CredentialID, Salt: verifier.Salt,
		Iterations: verifier.Iterations, StoredKey: verifier.StoredKey, ServerKey: verifier.ServerKey,
		Created: time.Now(),
	}))
	return secret, verifier
}

// scramWorker is a worker that authenticates with SCRAM over a raw
// WebSocket and tags its messages itself, so tests can alter and replay
// them.
type scramWorker struct {
	t         *testing.T
	conn      *websocket.Conn
	sessionID string
	sealer    *protocol.Sealer
	opener    *protocol.Opener
	// sent holds every tagged message written, as written.
	sent [][]byte
}

// readRaw reads one message within waitFor.
func readRaw(t *testing.T, conn *websocket.Conn) ([]byte, error) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(waitFor))
	_, data, err := conn.ReadMessage()
	return data, err
}

// connectScram runs the handshake for workerID with secret, naming
// sessionID to resume when it is not empty. It returns the worker after a
// verified Welcome, or nil and the Reject the coordinator sent.
func connectScram(t *testing.T, ts *testServer, workerID, secret, sessionID string) (*scramWorker, *pb.Reject) {
	t.Helper()
	conn := dialRaw(t, ts)
	t.Cleanup(func() { _ = conn.Close() })
	handshake, err := protocol.NewClientHandshake(workerID, secret)
	require.NoError(t, err)
	clientFirst, err := handshake.ClientFirst()
	require.NoError(t, err)
	var transcript protocol.Transcript

	hello, err := protocol.Encode(&pb.Frame{Body: &pb.Frame_Hello{Hello: &pb.Hello{
		WorkerId: workerID, SessionId: sessionID, TaskTypes: []string{"command"}, Slots: 1,
		CredentialId: handshake.CredentialID(), ScramClientFirst: clientFirst,
	}}})
	require.NoError(t, err)
	transcript.Add(hello)
	require.NoError(t, conn.WriteMessage(websocket.BinaryMessage, hello))

	data, err := readRaw(t, conn)
	require.NoError(t, err)
	frame, err := protocol.Decode(data, 0)
	require.NoError(t, err)
	if frame.GetReject() != nil {
		return nil, frame.GetReject()
	}
	require.NotNil(t, frame.GetChallenge(), "first frame: %v", frame)
	transcript.Add(data)
	clientFinal, err := handshake.Respond(frame.GetChallenge().GetScramServerFirst())
	require.NoError(t, err)
	proof, err := protocol.Encode(&pb.Frame{Body: &pb.Frame_Proof{Proof: &pb.Proof{ScramClientFinal: clientFinal}}})
	require.NoError(t, err)
	transcript.Add(proof)
	require.NoError(t, conn.WriteMessage(websocket.BinaryMessage, proof))

	data, err = readRaw(t, conn)
	require.NoError(t, err)
	if !protocol.Tagged(data) {
		frame, err := protocol.Decode(data, 0)
		require.NoError(t, err)
		require.NotNil(t, frame.GetReject(), "untagged answer to the proof: %v", frame)
		return nil, frame.GetReject()
	}
	frame, err = protocol.Decode(protocol.StripTag(data), 0)
	require.NoError(t, err)
	welcome := frame.GetWelcome()
	require.NotNil(t, welcome, "tagged answer to the proof: %v", frame)
	require.NoError(t, handshake.Verify(welcome.GetScramServerFinal()))
	keys, err := handshake.SessionKeys(welcome.GetSessionId(), transcript.Sum())
	require.NoError(t, err)
	w := &scramWorker{
		t: t, conn: conn, sessionID: welcome.GetSessionId(),
		sealer: protocol.NewSealer(keys.ToCoordinator), opener: protocol.NewOpener(keys.ToWorker),
	}
	_, err = w.opener.Open(data)
	require.NoError(t, err, "welcome tag")
	return w, nil
}

// seal encodes and tags a frame without sending it.
func (w *scramWorker) seal(frame *pb.Frame) []byte {
	data, err := protocol.Encode(frame)
	require.NoError(w.t, err)
	sealed := w.sealer.Seal(data)
	w.sent = append(w.sent, bytes.Clone(sealed))
	return sealed
}

func (w *scramWorker) write(data []byte) {
	_ = w.conn.SetWriteDeadline(time.Now().Add(waitFor))
	_ = w.conn.WriteMessage(websocket.BinaryMessage, data)
}

// next returns the next frame other than a heartbeat, checking its tag.
func (w *scramWorker) next() *pb.Frame {
	w.t.Helper()
	for {
		data, err := readRaw(w.t, w.conn)
		require.NoError(w.t, err)
		body, err := w.opener.Open(data)
		require.NoError(w.t, err, "tag of a coordinator message")
		frame, err := protocol.Decode(body, 0)
		require.NoError(w.t, err)
		if frame.GetHeartbeat() == nil {
			return frame
		}
	}
}

// sync sends the state sync and waits for its result.
func (w *scramWorker) sync() {
	w.t.Helper()
	w.write(w.seal(&pb.Frame{Seq: 1, Body: &pb.Frame_StateSync{StateSync: &pb.StateSync{}}}))
	require.NotNil(w.t, w.next().GetStateSyncResult())
}

// expectClosed reads until the coordinator ends the connection and returns
// the Reject it sent last, if any.
func (w *scramWorker) expectClosed() *pb.Reject {
	w.t.Helper()
	var reject *pb.Reject
	for range 1000 {
		data, err := readRaw(w.t, w.conn)
		if err != nil {
			var netErr net.Error
			require.False(w.t, errors.As(err, &netErr) && netErr.Timeout(),
				"connection still open after %s", waitFor)
			return reject
		}
		if body, err := w.opener.Open(data); err == nil {
			if frame, err := protocol.Decode(body, 0); err == nil && frame.GetReject() != nil {
				reject = frame.GetReject()
			}
		}
	}
	w.t.Fatal("connection not closed after 1000 messages")
	return nil
}

func rejectedCount(ts *testServer, reason string) uint64 {
	return ts.Stats().RejectedFrames[reason]
}

func TestScramWorkerConnectsAndSyncs(t *testing.T) {
	ts := startServer(t, testConfig(t, ""))
	secret, _ := addCredential(t, ts, "w1")
	w, reject := connectScram(t, ts, "w1", secret, "")
	require.Nil(t, reject)
	w.sync()
}

func TestScramWrongSecretRejected(t *testing.T) {
	ts := startServer(t, testConfig(t, ""))
	_, verifier := addCredential(t, ts, "w1")
	otherSecret, _, err := protocol.NewCredential()
	require.NoError(t, err)
	// The right credential id with another credential's random part.
	wrong := verifier.CredentialID + otherSecret[len(verifier.CredentialID):]

	w, reject := connectScram(t, ts, "w1", wrong, "")
	require.Nil(t, w)
	require.NotNil(t, reject)
	assert.Equal(t, pb.Reject_CODE_UNAUTHENTICATED, reject.GetCode())
	assert.Contains(t, reject.GetMessage(), "invalid proof")
	assert.Contains(t, reject.GetMessage(), verifier.CredentialID)
	assert.Equal(t, uint64(1), ts.Stats().AuthFailures)
}

func TestScramUnknownCredentialRejected(t *testing.T) {
	ts := startServer(t, testConfig(t, ""))
	addCredential(t, ts, "w1")
	secret, _, err := protocol.NewCredential()
	require.NoError(t, err)
	_, reject := connectScram(t, ts, "w1", secret, "")
	require.NotNil(t, reject)
	assert.Equal(t, pb.Reject_CODE_UNAUTHENTICATED, reject.GetCode())
	assert.Contains(t, reject.GetMessage(), "dtf credentials create")
}

// A worker that logs in with another worker's secret learns that the
// credential is not its own, but not whose it is.
func TestScramOtherWorkersSecretRejected(t *testing.T) {
	ts := startServer(t, testConfig(t, ""))
	w2Secret, w2 := addCredential(t, ts, "w2")
	addCredential(t, ts, "w3")

	_, reject := connectScram(t, ts, "w3", w2Secret, "")
	require.NotNil(t, reject)
	assert.Equal(t, pb.Reject_CODE_UNAUTHENTICATED, reject.GetCode())
	assert.Contains(t, reject.GetMessage(), "credential "+w2.CredentialID+` does not belong to worker_id "w3"`)
	assert.Contains(t, reject.GetMessage(), "dtf credentials list -config coordinator.hcl -worker w3")
	assert.NotContains(t, reject.GetMessage(), "w2", "the reject names the credential's owner")

	// A worker without credentials gets the message for that case.
	_, reject = connectScram(t, ts, "w4", w2Secret, "")
	require.NotNil(t, reject)
	assert.Contains(t, reject.GetMessage(), `worker_id "w4" has no credential `+w2.CredentialID)
	assert.NotContains(t, reject.GetMessage(), "w2")
	assert.Equal(t, uint64(2), ts.Stats().AuthFailures)
}

// A copy of the store has each credential's salt, iteration count,
// stored_key and server_key. Neither key works as the secret.
func TestScramDatabaseCopyCannotLogIn(t *testing.T) {
	ts := startServer(t, testConfig(t, ""))
	_, verifier := addCredential(t, ts, "w1")
	creds, err := ts.store.ListCredentials(context.Background(), "w1")
	require.NoError(t, err)
	require.Len(t, creds, 1)

	for name, value := range map[string][]byte{"stored_key": creds[0].StoredKey, "server_key": creds[0].ServerKey} {
		t.Run(name, func(t *testing.T) {
			guess := verifier.CredentialID + "." + encodeSecretPart(value)
			w, reject := connectScram(t, ts, "w1", guess, "")
			assert.Nil(t, w)
			require.NotNil(t, reject)
			assert.Equal(t, pb.Reject_CODE_UNAUTHENTICATED, reject.GetCode())
		})
	}
}

func encodeSecretPart(value []byte) string {
	padded := make([]byte, protocol.SecretBytes)
	copy(padded, value)
	return base64.RawURLEncoding.EncodeToString(padded)
}

func TestTokenModeRefusedForWorkerWithCredential(t *testing.T) {
	cfg := testConfig(t, "")
	cfg.Workers.Token = "shared"
	ts := startServer(t, cfg)
	_, verifier := addCredential(t, ts, "w1")
	require.NoError(t, func() error {
		_, err := ts.store.RevokeCredentials(context.Background(), "w1", verifier.CredentialID, time.Now())
		return err
	}())

	_, first := connectWorker(t, ts, &pb.Hello{WorkerId: "w1", Token: "shared"})
	require.NotNil(t, first.GetReject(), "first frame: %v", first)
	assert.Equal(t, pb.Reject_CODE_UNAUTHENTICATED, first.GetReject().GetCode())
	assert.Contains(t, first.GetReject().GetMessage(), "must authenticate with one")
}

func TestTaggedFrameWithFlippedBitClosesConnection(t *testing.T) {
	ts := startServer(t, testConfig(t, ""))
	secret, _ := addCredential(t, ts, "w1")
	w, _ := connectScram(t, ts, "w1", secret, "")
	w.sync()

	message := w.seal(&pb.Frame{Body: &pb.Frame_Heartbeat{Heartbeat: &pb.Heartbeat{SentUnixNano: 1}}})
	message[len(message)/2] ^= 0x04
	w.write(message)
	reject := w.expectClosed()
	require.NotNil(t, reject, "no reject before the close")
	assert.Equal(t, pb.Reject_CODE_PROTOCOL_ERROR, reject.GetCode())
	assert.Contains(t, reject.GetMessage(), "failed authentication")
	assert.Equal(t, uint64(1), rejectedCount(ts, protocol.RejectBadTag))
}

func TestUntaggedFrameAfterScramClosesConnection(t *testing.T) {
	ts := startServer(t, testConfig(t, ""))
	secret, _ := addCredential(t, ts, "w1")
	w, _ := connectScram(t, ts, "w1", secret, "")
	plain, err := protocol.Encode(&pb.Frame{Seq: 1, Body: &pb.Frame_StateSync{StateSync: &pb.StateSync{}}})
	require.NoError(t, err)
	w.write(plain)
	w.expectClosed()
	assert.Equal(t, uint64(1), rejectedCount(ts, protocol.RejectUntagged))
}

func TestReplayedFrameWithinSessionClosesConnection(t *testing.T) {
	ts := startServer(t, testConfig(t, ""))
	secret, _ := addCredential(t, ts, "w1")
	w, _ := connectScram(t, ts, "w1", secret, "")
	w.sync()

	w.write(w.sent[0])
	w.expectClosed()
	assert.Equal(t, uint64(1), rejectedCount(ts, protocol.RejectBadTag))
}

// A message recorded on one connection fails on the next connection of the
// same session, because every handshake derives new keys.
func TestReplayIntoResumedSessionClosesConnection(t *testing.T) {
	ts := startServer(t, testConfig(t, ""))
	secret, _ := addCredential(t, ts, "w1")
	first, _ := connectScram(t, ts, "w1", secret, "")
	first.sync()
	recorded := first.sent[0]
	_ = first.conn.Close()

	second, reject := connectScram(t, ts, "w1", secret, first.sessionID)
	require.Nil(t, reject)
	assert.Equal(t, first.sessionID, second.sessionID, "session not resumed")
	second.write(recorded)
	second.expectClosed()
	assert.Equal(t, uint64(1), rejectedCount(ts, protocol.RejectBadTag))
}

func TestFrameFromAnotherSessionClosesConnection(t *testing.T) {
	ts := startServer(t, testConfig(t, ""))
	secretA, _ := addCredential(t, ts, "a")
	secretB, _ := addCredential(t, ts, "b")
	a, _ := connectScram(t, ts, "a", secretA, "")
	b, _ := connectScram(t, ts, "b", secretB, "")
	a.sync()

	// a's state sync was message 0 of its session, as b's next one would be.
	b.write(a.sent[0])
	b.expectClosed()
	assert.Equal(t, uint64(1), rejectedCount(ts, protocol.RejectBadTag))
	// a is unaffected.
	a.write(a.seal(&pb.Frame{Body: &pb.Frame_Heartbeat{Heartbeat: &pb.Heartbeat{SentUnixNano: 1}}}))
	// The coordinator may count b's session until it has handled the close.
	assert.Eventually(t, func() bool { return ts.Stats().Sessions == 1 }, waitFor, 10*time.Millisecond,
		"sessions: %d", ts.Stats().Sessions)
}

func TestRevokedCredentialClosesSession(t *testing.T) {
	ts := startServer(t, testConfig(t, ""))
	secret, verifier := addCredential(t, ts, "w1")
	w, _ := connectScram(t, ts, "w1", secret, "")
	w.sync()

	_, err := ts.store.RevokeCredentials(context.Background(), "w1", "", time.Now())
	require.NoError(t, err)
	reject := w.expectClosed()
	require.NotNil(t, reject)
	assert.Equal(t, pb.Reject_CODE_UNAUTHENTICATED, reject.GetCode())
	assert.Contains(t, reject.GetMessage(), "credential revoked: credential ")

	_, reject = connectScram(t, ts, "w1", secret, w.sessionID)
	require.NotNil(t, reject)
	assert.Contains(t, reject.GetMessage(), verifier.CredentialID+` of worker_id "w1" was revoked`)
}

func TestRotatedCredentialOldWorksUntilExpiry(t *testing.T) {
	ts := startServer(t, testConfig(t, ""))
	oldSecret, _ := addCredential(t, ts, "w1")
	newSecret, newVerifier := addCredential(t, ts, "w1")
	expires := time.Now().Add(1500 * time.Millisecond)
	_, err := ts.store.ExpireCredentials(context.Background(), "w1", newVerifier.CredentialID, expires)
	require.NoError(t, err)

	old, reject := connectScram(t, ts, "w1", oldSecret, "")
	require.Nil(t, reject, "old secret rejected before its expiry")
	old.sync()
	// The expiry ends the old secret's connection.
	reject = old.expectClosed()
	require.NotNil(t, reject)
	assert.Contains(t, reject.GetMessage(), "credential expired: credential ")
	assert.False(t, time.Now().Before(expires), "closed before the expiry")

	_, reject = connectScram(t, ts, "w1", oldSecret, old.sessionID)
	require.NotNil(t, reject, "old secret accepted after its expiry")
	assert.Contains(t, reject.GetMessage(), "expired at")
	assert.Contains(t, reject.GetMessage(), `worker_id "w1" has an active credential, `+newVerifier.CredentialID,
		"the fix names the credential that replaced it")
	fresh, reject := connectScram(t, ts, "w1", newSecret, old.sessionID)
	require.Nil(t, reject, "new secret rejected")
	assert.Equal(t, old.sessionID, fresh.sessionID, "the new secret resumes the session")
}
