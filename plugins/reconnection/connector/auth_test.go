package connector

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/coordinator"
	"github.com/dtf-io/dtf/coordinator/config"
	"github.com/dtf-io/dtf/coordinator/store"
	"github.com/dtf-io/dtf/plugin/pb"
	"github.com/dtf-io/dtf/protocol"
	wirepb "github.com/dtf-io/dtf/protocol/pb"
)

// authConfig retries quickly and gives up after two identical
// authentication failures.
const authConfig = `{
	"heartbeat_interval": "100ms",
	"heartbeat_timeout": "1s",
	"backoff_base": "10ms",
	"backoff_cap": "100ms",
	"dial_timeout": "1s",
	"handshake_timeout": "1s",
	"fatal_after": 2
}`

// credentialCoordinator is a real coordinator with the path of its store,
// which tests open beside it, as `dtf credentials` does.
type credentialCoordinator struct {
	*realCoordinator
	store *store.SQLite
}

func startCredentialCoordinator(t *testing.T) *credentialCoordinator {
	t.Helper()
	dataDir := t.TempDir()
	coord := startRealCoordinator(t, hclog.Info, func(cfg *config.Config) {
		cfg.DataDir = dataDir
		cfg.Workers.Token = ""
	})
	st, err := store.OpenSQLite(context.Background(), filepath.Join(dataDir, coordinator.StoreFile))
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	return &credentialCoordinator{realCoordinator: coord, store: st}
}

// createCredential stores a new credential of worker-1 and returns its
// secret.
func (c *credentialCoordinator) createCredential(t *testing.T) (string, protocol.Verifier) {
	t.Helper()
	secret, v, err := protocol.NewCredential()
	require.NoError(t, err)
	require.NoError(t, c.store.CreateCredential(context.Background(), store.Credential{
		WorkerID: "worker-1", CredentialID: v.CredentialID, Salt: v.Salt, Iterations: v.Iterations,
		StoredKey: v.StoredKey, ServerKey: v.ServerKey, Created: time.Now(),
	}))
	return secret, v
}

// startSecretConnector starts a connector whose secret_file contains
// secret, and returns the harness and the file's path.
func startSecretConnector(t *testing.T, coord *credentialCoordinator, secret string) (*harness, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "worker.secret")
	require.NoError(t, os.WriteFile(path, []byte(secret+"\n"), 0o600))
	in := connectorConfig("ws://"+coord.addr(), authConfig)
	in.Token = ""
	in.SecretFile = path

	c := New(Options{Logger: testLogger(), Version: "test", Rand: rand.New(rand.NewPCG(1, 2))})
	_, err := c.Configure(context.Background(), in)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{
		t: t, connector: c, cancel: cancel, done: make(chan error, 1),
		stream: &eventStream{ctx: ctx, states: make(chan *pb.StateChange, 1024), frames: make(chan []byte, 1024)},
	}
	go func() { h.done <- c.Events(&pb.Empty{}, h.stream) }()
	t.Cleanup(h.stop)
	return h, path
}

func TestScramConnectorTagsBothDirections(t *testing.T) {
	coord := startCredentialCoordinator(t)
	secret, _ := coord.createCredential(t)
	h, _ := startSecretConnector(t, coord, secret)
	h.nextState(StateConnected)

	// The state sync and its result cross the connection tagged.
	sync, err := protocol.Encode(&wirepb.Frame{Body: &wirepb.Frame_StateSync{StateSync: &wirepb.StateSync{}}})
	require.NoError(t, err)
	_, err = h.connector.Send(context.Background(), &pb.SendRequest{Frame: sync})
	require.NoError(t, err)
	assert.NotNil(t, h.nextFrame().GetStateSyncResult())
	assert.Zero(t, coord.server.Stats().RejectedFrames[protocol.RejectBadTag])
	assert.Zero(t, h.connector.Stats().RejectedFrames)
}

func TestScramWrongSecretStopsConnector(t *testing.T) {
	coord := startCredentialCoordinator(t)
	_, verifier := coord.createCredential(t)
	other, _, err := protocol.NewCredential()
	require.NoError(t, err)
	wrong := verifier.CredentialID + other[len(verifier.CredentialID):]

	h, _ := startSecretConnector(t, coord, wrong)
	closed := h.nextState(StateClosed)
	assert.Contains(t, closed.GetReason(), "fatal")
	assert.Contains(t, closed.GetReason(), `worker_id "worker-1"`)
	assert.Contains(t, closed.GetReason(), "dtf credentials")
	assert.NotContains(t, closed.GetReason(), wrong[len(verifier.CredentialID)+1:], "the reason shows the secret")
}

func TestScramRevokedCredentialStopsConnector(t *testing.T) {
	coord := startCredentialCoordinator(t)
	secret, _ := coord.createCredential(t)
	h, _ := startSecretConnector(t, coord, secret)
	h.nextState(StateConnected)

	revokedAt := time.Now()
	_, err := coord.store.RevokeCredentials(context.Background(), "worker-1", "", revokedAt)
	require.NoError(t, err)
	backingOff := h.nextState(StateBackingOff)
	assert.Contains(t, backingOff.GetReason(), "credential revoked")
	assert.Less(t, time.Since(revokedAt), 5*time.Second, "revocation took effect too late")

	closed := h.nextState(StateClosed)
	assert.Contains(t, closed.GetReason(), "fatal")
	assert.Contains(t, closed.GetReason(), "was revoked")
	require.NoError(t, h.waitEventsReturn())
}

// A rotation writes the new secret into secret_file. When the old
// credential expires, the coordinator closes the connection and the
// connector resumes its session with the secret it reads again.
func TestScramRotatedSecretFileResumes(t *testing.T) {
	coord := startCredentialCoordinator(t)
	oldSecret, oldVerifier := coord.createCredential(t)
	h, path := startSecretConnector(t, coord, oldSecret)
	first := h.nextState(StateConnected)

	// As dtf credentials rotate does: a new credential, the old one valid
	// for a grace period that outlasts the test, the new secret in the
	// worker's secret_file.
	newSecret, newVerifier := coord.createCredential(t)
	_, err := coord.store.ExpireCredentials(context.Background(), "worker-1", newVerifier.CredentialID,
		time.Now().Add(time.Hour))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, []byte(newSecret+"\n"), 0o600))

	// The worker notices the new secret and resumes its session with it,
	// long before the old credential would be rejected.
	left := h.nextState(StateBackingOff)
	assert.Contains(t, left.GetReason(), "secret_file contains a new credential")
	again := h.nextState(StateConnected)
	assert.True(t, again.GetResumed(), "session not resumed after the rotation")
	assert.Equal(t, first.GetSessionId(), again.GetSessionId())

	// The old credential can now be revoked without ending the session.
	// The coordinator closes the connections of a revoked credential
	// within a second, so three seconds without a state change show that
	// the session no longer uses it.
	_, err = coord.store.RevokeCredentials(context.Background(), "worker-1", oldVerifier.CredentialID, time.Now())
	require.NoError(t, err)
	select {
	case change := <-h.stream.states:
		t.Fatalf("state changed to %s (%s) after the old credential was revoked", change.GetState(),
			change.GetReason())
	case <-time.After(3 * time.Second):
	}
}

// A secret_file that receives a secret the coordinator rejects, here
// another worker's, does not cost the worker its session: it logs in again
// with the secret that worked and resumes.
func TestScramRejectedNewSecretFallsBack(t *testing.T) {
	coord := startCredentialCoordinator(t)
	secret, _ := coord.createCredential(t)
	h, path := startSecretConnector(t, coord, secret)
	first := h.nextState(StateConnected)

	otherSecret, other, err := protocol.NewCredential()
	require.NoError(t, err)
	require.NoError(t, coord.store.CreateCredential(context.Background(), store.Credential{
		WorkerID: "worker-2", CredentialID: other.CredentialID, Salt: other.Salt, Iterations: other.Iterations,
		StoredKey: other.StoredKey, ServerKey: other.ServerKey, Created: time.Now(),
	}))
	require.NoError(t, os.WriteFile(path, []byte(otherSecret+"\n"), 0o600))

	again := h.nextState(StateConnected)
	assert.True(t, again.GetResumed(), "session not resumed with the previous secret")
	assert.Equal(t, first.GetSessionId(), again.GetSessionId())

	// The watcher does not switch to the rejected secret again.
	select {
	case change := <-h.stream.states:
		if change.GetState() == StateClosed {
			t.Fatalf("connector stopped: %s", change.GetReason())
		}
	case <-time.After(3 * secretCheckInterval):
	}
}

// A rotation whose old credential ends at once (dtf credentials rotate
// -grace 0s) is followed by a login with the new secret without the
// half-cap wait of an authentication failure.
func TestScramRotationWithoutGraceRetriesAtOnce(t *testing.T) {
	coord := startCredentialCoordinator(t)
	oldSecret, _ := coord.createCredential(t)
	path := filepath.Join(t.TempDir(), "worker.secret")
	require.NoError(t, os.WriteFile(path, []byte(oldSecret+"\n"), 0o600))
	// A 20 s cap makes an authentication failure wait 10 s, longer than
	// the test waits for the reconnect.
	in := connectorConfig("ws://"+coord.addr(), `{
		"heartbeat_interval": "100ms", "heartbeat_timeout": "1s", "backoff_base": "10ms",
		"backoff_cap": "20s", "dial_timeout": "1s", "handshake_timeout": "1s"}`)
	in.Token = ""
	in.SecretFile = path
	c := New(Options{Logger: testLogger(), Version: "test", Rand: rand.New(rand.NewPCG(1, 2))})
	_, err := c.Configure(context.Background(), in)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{
		t: t, connector: c, cancel: cancel, done: make(chan error, 1),
		stream: &eventStream{ctx: ctx, states: make(chan *pb.StateChange, 1024), frames: make(chan []byte, 1024),
			stats: make(chan *pb.ConnectorStats, 1024)},
	}
	go func() { h.done <- c.Events(&pb.Empty{}, h.stream) }()
	t.Cleanup(h.stop)
	first := h.nextState(StateConnected)

	newSecret, newVerifier := coord.createCredential(t)
	require.NoError(t, os.WriteFile(path, []byte(newSecret+"\n"), 0o600))
	_, err = coord.store.ExpireCredentials(context.Background(), "worker-1", newVerifier.CredentialID, time.Now())
	require.NoError(t, err)

	again := h.nextState(StateConnected)
	assert.True(t, again.GetResumed())
	assert.Equal(t, first.GetSessionId(), again.GetSessionId())
}

// lockedBuffer is a bytes.Buffer that the plugin's logger and the test
// use from different goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// A secret_file that becomes unusable while the worker is connected is
// logged once, before the next login would fail, and the session goes on.
func TestScramUnusableSecretFileWarned(t *testing.T) {
	coord := startCredentialCoordinator(t)
	secret, _ := coord.createCredential(t)
	path := filepath.Join(t.TempDir(), "worker.secret")
	require.NoError(t, os.WriteFile(path, []byte(secret+"\n"), 0o600))
	in := connectorConfig("ws://"+coord.addr(), authConfig)
	in.Token = ""
	in.SecretFile = path
	logs := &lockedBuffer{}
	logger := hclog.New(&hclog.LoggerOptions{Name: "reconnection", Level: hclog.Info, Output: logs})
	c := New(Options{Logger: logger, Version: "test", Rand: rand.New(rand.NewPCG(1, 2))})
	_, err := c.Configure(context.Background(), in)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{
		t: t, connector: c, cancel: cancel, done: make(chan error, 1),
		stream: &eventStream{ctx: ctx, states: make(chan *pb.StateChange, 1024), frames: make(chan []byte, 1024),
			stats: make(chan *pb.ConnectorStats, 1024)},
	}
	go func() { h.done <- c.Events(&pb.Empty{}, h.stream) }()
	t.Cleanup(h.stop)
	h.nextState(StateConnected)

	require.NoError(t, os.WriteFile(path, []byte("not a secret\n"), 0o600))
	require.Eventually(t, func() bool {
		return strings.Contains(logs.String(), "secret_file cannot be used")
	}, 4*secretCheckInterval, 50*time.Millisecond)
	assert.Equal(t, 1, strings.Count(logs.String(), "secret_file cannot be used"))
	assert.NotContains(t, logs.String(), "not a secret", "the log shows the file's content")
	assert.True(t, c.connected(), "the session ended")
}
