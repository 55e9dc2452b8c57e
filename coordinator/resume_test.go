package coordinator

import (
	"context"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/coordinator/api"
	"github.com/dtf-io/dtf/coordinator/store"
	"github.com/dtf-io/dtf/protocol/pb"
)

func TestResumeReplaysUnacknowledged(t *testing.T) {
	ts := startServer(t, testConfig(t, ""))
	w := newSeqWorker(t, ts, "w1")
	welcome := w.connect().GetWelcome()
	require.NotNil(t, welcome)
	assert.False(t, welcome.GetResumed())
	w.sync() // coordinator seq 1, worker seq 1

	// From here on the worker acknowledges only up to the first assign, so
	// the coordinator keeps the later frames for replay.
	taskA := submit(t, ts, commandSpec()).Tasks[0]
	refA := w.expect("assign").GetAssign().GetRef() // coordinator seq 2
	w.ackCap.Store(2)
	taskB := submit(t, ts, commandSpec()).Tasks[0]
	refB := w.expect("assign").GetAssign().GetRef()                      // coordinator seq 3
	w.send(outcomeFrame(refA, pb.Status_STATUS_SUCCEEDED))               // worker seq 2
	assert.True(t, w.expect("outcome_ack").GetOutcomeAck().GetApplied()) // coordinator seq 4
	// The started frame for B never reaches the coordinator.
	w.sendLost(&pb.Frame{Body: &pb.Frame_TaskStarted{TaskStarted: &pb.TaskStarted{Ref: refB}}}) // worker seq 3

	w.cut()
	require.Eventually(t, func() bool { return ts.Stats().DetachedSessions == 1 }, waitFor, 10*time.Millisecond)
	assert.Equal(t, 0, ts.Stats().Sessions)

	frame := w.connect()
	resumed := frame.GetWelcome()
	require.NotNil(t, resumed, "first frame: %v", frame)
	assert.True(t, resumed.GetResumed())
	assert.Equal(t, welcome.GetSessionId(), resumed.GetSessionId())
	assert.Equal(t, uint64(2), frame.GetAck(), "the welcome acknowledges the worker's outcome, not the lost frame")

	// The coordinator replays seq 3 and 4, which the worker already has and
	// ignores; a duplicate of the worker's outcome is ignored too.
	require.Eventually(t, func() bool { return w.duplicates.Load() == 2 }, waitFor, 10*time.Millisecond)
	w.write(&pb.Frame{Seq: 2, Body: outcomeFrame(refA, pb.Status_STATUS_FAILED).GetBody()})
	require.Eventually(t, func() bool { return ts.Stats().DuplicateFrames == 1 }, waitFor, 10*time.Millisecond)

	// Assignments continue without a state sync, and B's outcome is the
	// next frame the worker receives: nothing was applied twice.
	w.ackCap.Store(-1)
	w.send(outcomeFrame(refB, pb.Status_STATUS_SUCCEEDED))
	assert.True(t, w.expect("outcome_ack").GetOutcomeAck().GetApplied())
	taskC := submit(t, ts, commandSpec()).Tasks[0]
	assert.Equal(t, taskC.ID, w.expect("assign").GetAssign().GetRef().GetTaskId())

	assert.Equal(t, api.StateSucceeded, getTask(t, ts, taskA.ID).State, "the duplicate failed outcome was ignored")
	assert.Equal(t, api.StateSucceeded, getTask(t, ts, taskB.ID).State)
	assert.Equal(t, 1, getTask(t, ts, taskB.ID).Attempt)
}

func TestSessionResumesAfterGracefulRestart(t *testing.T) {
	dataDir := t.TempDir()
	ts := startServer(t, testConfig(t, dataDir))
	w := newSeqWorker(t, ts, "w1")
	first := w.connect().GetWelcome()
	w.sync() // coordinator seq 1, worker seq 1

	// The worker acknowledges nothing after the state sync result, so the
	// assign and the outcome ack stay in the replay buffer that the
	// coordinator saves.
	w.ackCap.Store(1)
	taskA := submit(t, ts, commandSpec()).Tasks[0]
	refA := w.expect("assign").GetAssign().GetRef()                      // coordinator seq 2
	w.send(outcomeFrame(refA, pb.Status_STATUS_SUCCEEDED))               // worker seq 2
	assert.True(t, w.expect("outcome_ack").GetOutcomeAck().GetApplied()) // coordinator seq 3

	ts.stop()
	assert.Equal(t, pb.Reject_CODE_SHUTTING_DOWN, w.expect("reject").GetReject().GetCode())
	w.cut()

	w.ts = startServer(t, testConfig(t, dataDir))
	assert.Equal(t, 1, w.ts.Stats().DetachedSessions, "the saved session is restored before any worker connects")
	frame := w.connect()
	welcome := frame.GetWelcome()
	require.NotNil(t, welcome, "first frame: %v", frame)
	assert.True(t, welcome.GetResumed(), "the restarted coordinator resumes the saved session")
	assert.Equal(t, first.GetSessionId(), welcome.GetSessionId())
	assert.Equal(t, uint64(2), frame.GetAck(), "the restored session remembers the worker's outcome")

	// The replayed assign and outcome ack arrive once more and are ignored
	// by sequence number. Nothing is applied twice, and the next assignment
	// needs no state sync.
	require.Eventually(t, func() bool { return w.duplicates.Load() == 2 }, waitFor, 10*time.Millisecond)
	w.ackCap.Store(-1)
	taskB := submit(t, w.ts, commandSpec()).Tasks[0]
	assign := w.expect("assign")
	assert.Equal(t, taskB.ID, assign.GetAssign().GetRef().GetTaskId())
	assert.Equal(t, uint64(4), assign.GetSeq(), "sequence numbers continue across the restart")

	got := getTask(t, w.ts, taskA.ID)
	assert.Equal(t, api.StateSucceeded, got.State)
	assert.Equal(t, 1, got.Attempt)
	assert.Zero(t, w.ts.Stats().DuplicateFrames)

	// Each saved session is restored once: a third start finds none.
	w.ts.stop()
	w.cut()
	third := startServer(t, testConfig(t, dataDir))
	assert.Equal(t, 1, third.Stats().DetachedSessions, "the session saved by the second run")
}

func TestUnreadableSavedSessionStartsNewSession(t *testing.T) {
	dataDir := t.TempDir()
	ts := startServer(t, testConfig(t, dataDir))
	w := newSeqWorker(t, ts, "w1")
	first := w.connect().GetWelcome()
	w.sync()
	task := submit(t, ts, commandSpec()).Tasks[0]
	ref := w.expect("assign").GetAssign().GetRef()
	ts.stop()
	assert.Equal(t, pb.Reject_CODE_SHUTTING_DOWN, w.expect("reject").GetReject().GetCode())
	w.cut()

	// Overwrite the saved session, as a coordinator of another version or
	// a damaged file would leave it.
	ctx := context.Background()
	st, err := store.OpenSQLite(ctx, filepath.Join(dataDir, StoreFile))
	require.NoError(t, err)
	saved, err := st.TakeSessions(ctx)
	require.NoError(t, err)
	require.Len(t, saved, 1)
	saved[0].State = []byte(`{"version": 99}`)
	require.NoError(t, st.SaveSessions(ctx, saved))
	require.NoError(t, st.Close())

	w.ts = startServer(t, testConfig(t, dataDir))
	assert.Zero(t, w.ts.Stats().DetachedSessions)
	welcome := w.connect().GetWelcome()
	require.NotNil(t, welcome)
	assert.False(t, welcome.GetResumed(), "a session that cannot be restored is not resumed")
	assert.NotEqual(t, first.GetSessionId(), welcome.GetSessionId())

	// The state sync keeps the running attempt, and its outcome applies.
	result := w.sync(ref)
	require.Len(t, result.GetKeep(), 1)
	w.send(outcomeFrame(ref, pb.Status_STATUS_SUCCEEDED))
	assert.True(t, w.expect("outcome_ack").GetOutcomeAck().GetApplied())
	assert.Equal(t, api.StateSucceeded, getTask(t, w.ts, task.ID).State)
}

func TestSessionExpiresAfterTTL(t *testing.T) {
	cfg := testConfig(t, "")
	cfg.Workers.SessionTTL = time.Second
	ts := startServer(t, cfg)
	w := newSeqWorker(t, ts, "w1")
	first := w.connect().GetWelcome()
	w.sync()
	resumableUntil := func() time.Time {
		workers, err := ts.listWorkers(context.Background())
		require.NoError(t, err)
		require.Len(t, workers, 1)
		return workers[0].ResumableUntil
	}
	assert.Zero(t, resumableUntil(), "a connected worker has no resume deadline")
	cut := time.Now()
	w.cut()

	require.Eventually(t, func() bool { return ts.Stats().DetachedSessions == 1 }, waitFor, 10*time.Millisecond)
	until := resumableUntil()
	assert.WithinRange(t, until, cut, time.Now().Add(cfg.Workers.SessionTTL),
		"a detached session can be resumed until session_ttl after the cut")
	require.Eventually(t, func() bool { return ts.Stats().DetachedSessions == 0 }, waitFor, 10*time.Millisecond,
		"the session is dropped after session_ttl")
	assert.Nil(t, ts.sessionFor("w1"), "the expired session is released")
	assert.Zero(t, resumableUntil(), "an expired session cannot be resumed")

	welcome := w.connect().GetWelcome()
	require.NotNil(t, welcome)
	assert.False(t, welcome.GetResumed())
	assert.NotEqual(t, first.GetSessionId(), welcome.GetSessionId())
}

func TestResumeRefusedStartsNewSession(t *testing.T) {
	ts := startServer(t, testConfig(t, ""))
	owner := newSeqWorker(t, ts, "owner")
	ownerWelcome := owner.connect().GetWelcome()
	owner.sync()

	cases := []struct {
		name      string
		worker    string
		sessionID string
		ack       int64
	}{
		{"unknown session", "w1", "s-unknown", -1},
		{"another worker's session", "w2", ownerWelcome.GetSessionId(), -1},
		{"ack past the frames sent", "owner", ownerWelcome.GetSessionId(), 99},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := newSeqWorker(t, ts, tc.worker)
			w.sessionID = tc.sessionID
			if tc.ack >= 0 {
				// Receive frames numbered up to ack so the hello carries it.
				for seq := uint64(1); seq <= uint64(tc.ack); seq++ {
					_, err := w.window.Load().Receive(&pb.Frame{Seq: seq})
					require.NoError(t, err)
				}
			}
			welcome := w.connect().GetWelcome()
			require.NotNil(t, welcome)
			assert.False(t, welcome.GetResumed())
			assert.NotEqual(t, tc.sessionID, welcome.GetSessionId())
			w.sync()
			if tc.worker != "owner" {
				assert.Equal(t, ownerWelcome.GetSessionId(), ts.sessionFor("owner").id,
					"another worker's hello leaves the owner's session alone")
			}
		})
	}
}

func TestFullReplayBufferStopsAssignments(t *testing.T) {
	cfg := testConfig(t, "")
	cfg.Workers.ReplayFrames = 4 // assignments stop at 3 unacknowledged frames
	ts := startServer(t, cfg)
	w := newSeqWorker(t, ts, "w1")
	w.connect()
	w.ackCap.Store(0)
	w.sync() // coordinator seq 1, unacknowledged

	for range 5 {
		submit(t, ts, commandSpec())
	}
	w.expect("assign")
	w.expect("assign")
	require.Eventually(t, func() bool {
		var list struct{ Tasks []api.Task }
		doJSON(t, http.MethodGet, ts.url+"/v1/tasks?state=queued", nil, &list)
		return len(list.Tasks) == 3
	}, waitFor, 20*time.Millisecond, "three tasks wait while the replay buffer is full")
	frames, _ := ts.sessionFor("w1").window.Pending()
	assert.Equal(t, 3, frames)

	// Acknowledging frees the buffer and assignments resume.
	w.ackCap.Store(-1)
	w.send(&pb.Frame{Body: &pb.Frame_TaskProgress{TaskProgress: &pb.TaskProgress{}}})
	w.expect("assign")
	w.expect("assign")
	w.expect("assign")
}

func TestGracePeriodCancelsOnLateResume(t *testing.T) {
	cfg := testConfig(t, "")
	cfg.Workers.ReassignAfter = 200 * time.Millisecond
	ts := startServer(t, cfg)
	w := newSeqWorker(t, ts, "w1")
	w.connect()
	w.sync()
	task := submit(t, ts, commandSpec()).Tasks[0]
	ref := w.expect("assign").GetAssign().GetRef()
	w.cut()

	require.Eventually(t, func() bool {
		return getTask(t, ts, task.ID).State == api.StateQueued
	}, waitFor, 20*time.Millisecond, "a detached session's attempts are requeued after reassign_after")

	welcome := w.connect().GetWelcome()
	require.True(t, welcome.GetResumed())
	cancel := w.expect("cancel_task").GetCancelTask()
	assert.Equal(t, ref.GetTaskId(), cancel.GetRef().GetTaskId())
	assert.Equal(t, ref.GetAttempt(), cancel.GetRef().GetAttempt())
	assert.Contains(t, cancel.GetReason(), "reassign_after")
	// The worker reports the cancel, which does not end the task and ends
	// the hold that waited for this attempt's outcome. The requeued task
	// then goes to the resumed session as its second attempt.
	cancelled := outcomeFrame(ref, pb.Status_STATUS_CANCELLED)
	cancelled.GetTaskOutcome().Message = cancel.GetReason()
	w.send(cancelled)
	assert.False(t, w.expect("outcome_ack").GetOutcomeAck().GetApplied())
	assert.Equal(t, uint32(2), w.expect("assign").GetAssign().GetRef().GetAttempt())
}
