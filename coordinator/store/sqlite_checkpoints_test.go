package store

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/coordinator/api"
	"github.com/dtf-io/dtf/protocol"
)

func checkpointOf(taskID string, attempt int, worker string, sequence uint64) Checkpoint {
	return Checkpoint{
		TaskID:   taskID,
		Attempt:  attempt,
		WorkerID: worker,
		Sequence: sequence,
		Data:     []byte(fmt.Sprintf("state-%d-%d", attempt, sequence)),
		Fraction: float64(sequence) / 100,
		Message:  fmt.Sprintf("step %d", sequence),
		Saved:    testNow,
	}
}

// startRunning creates task id and starts attempts on worker until the task
// runs its attempt-th attempt, losing each earlier one.
func startRunning(t *testing.T, st *SQLite, id string, attempt int, worker string) {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, st.CreateTasks(ctx, []NewTask{newTask(id, 10)}, testNow))
	for n := 1; n <= attempt; n++ {
		_, err := st.StartAttempt(ctx, id, worker, testNow)
		require.NoError(t, err)
		if n < attempt {
			_, err = st.EndAttempt(ctx, AttemptEnd{TaskID: id, Attempt: n, State: AttemptLost, Reason: "test"}, testNow)
			require.NoError(t, err)
		}
	}
}

func TestCheckpointMonotonic(t *testing.T) {
	ctx := context.Background()
	st := openTestStore(t, filepath.Join(t.TempDir(), "dtf.db"))
	startRunning(t, st, "t1", 1, "w1")

	none, err := st.GetCheckpoint(ctx, "t1")
	require.NoError(t, err)
	assert.Nil(t, none)

	for _, seq := range []uint64{1, 2, 5} {
		res, err := st.SaveCheckpoint(ctx, checkpointOf("t1", 1, "w1", seq), testNow)
		require.NoError(t, err)
		assert.True(t, res.Applied, "sequence %d: %s", seq, res.Reason)
	}

	// A reordered older checkpoint and a replayed copy change nothing.
	older, err := st.SaveCheckpoint(ctx, checkpointOf("t1", 1, "w1", 4), testNow)
	require.NoError(t, err)
	assert.False(t, older.Applied)
	assert.True(t, older.Stale)
	assert.Equal(t, "stale checkpoint 4 of attempt 1, stored is checkpoint 5 of attempt 1", older.Reason)

	replay, err := st.SaveCheckpoint(ctx, checkpointOf("t1", 1, "w1", 5), testNow)
	require.NoError(t, err)
	assert.False(t, replay.Applied)
	assert.True(t, replay.Duplicate)
	assert.False(t, replay.Stale)

	stored, err := st.GetCheckpoint(ctx, "t1")
	require.NoError(t, err)
	require.NotNil(t, stored)
	assert.Equal(t, 1, stored.Attempt)
	assert.EqualValues(t, 5, stored.Sequence)
	assert.Equal(t, "state-1-5", string(stored.Data))
	assert.InDelta(t, 0.05, stored.Fraction, 1e-9)
	assert.Equal(t, "step 5", stored.Message)
	assert.Equal(t, testNow, stored.Saved)

	history, err := st.CheckpointHistory(ctx, "t1")
	require.NoError(t, err)
	require.Len(t, history, 3, "rejected checkpoints are not in the history")
	for i, want := range []uint64{1, 2, 5} {
		assert.Equal(t, i+1, history[i].Position)
		assert.Equal(t, 1, history[i].Attempt)
		assert.Equal(t, want, history[i].Sequence)
		assert.Equal(t, len("state-1-x"), history[i].SizeBytes)
	}
}

func TestCheckpointStaleAttempt(t *testing.T) {
	ctx := context.Background()
	st := openTestStore(t, filepath.Join(t.TempDir(), "dtf.db"))
	startRunning(t, st, "t1", 1, "w1")
	res, err := st.SaveCheckpoint(ctx, checkpointOf("t1", 1, "w1", 9), testNow)
	require.NoError(t, err)
	require.True(t, res.Applied)

	// Attempt 1 is lost and attempt 2 runs on w2.
	_, err = st.EndAttempt(ctx, AttemptEnd{TaskID: "t1", Attempt: 1, State: AttemptLost, Reason: "gone"}, testNow)
	require.NoError(t, err)
	task, err := st.StartAttempt(ctx, "t1", "w2", testNow)
	require.NoError(t, err)
	require.Equal(t, 2, task.Attempt)

	cases := []struct {
		name   string
		cp     Checkpoint
		reason string
		stale  bool
	}{
		{"superseded attempt", checkpointOf("t1", 1, "w1", 10), "stale attempt 1, current attempt is 2", true},
		{"wrong worker", checkpointOf("t1", 2, "w1", 1), "attempt 2 runs on worker w2, not w1", true},
		{"future attempt", checkpointOf("t1", 3, "w2", 1), "unknown attempt 3, current attempt is 2", false},
		{"sequence zero", checkpointOf("t1", 2, "w2", 0),
			"invalid checkpoint 0 of attempt 2: attempts and sequences start at 1", false},
		{"unknown task", checkpointOf("absent", 1, "w1", 1), "unknown task absent", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, err := st.SaveCheckpoint(ctx, tc.cp, testNow)
			require.NoError(t, err)
			assert.False(t, res.Applied)
			assert.Equal(t, tc.reason, res.Reason)
			assert.Equal(t, tc.stale, res.Stale)
		})
	}

	// The new attempt's first checkpoint is newer than any of attempt 1.
	res, err = st.SaveCheckpoint(ctx, checkpointOf("t1", 2, "w2", 1), testNow)
	require.NoError(t, err)
	assert.True(t, res.Applied, res.Reason)
	history, err := st.CheckpointHistory(ctx, "t1")
	require.NoError(t, err)
	require.Len(t, history, 2)
	assert.Equal(t, 2, history[1].Attempt)
	assert.EqualValues(t, 1, history[1].Sequence)
}

func TestCheckpointSizeLimit(t *testing.T) {
	ctx := context.Background()
	st := openTestStore(t, filepath.Join(t.TempDir(), "dtf.db"))
	startRunning(t, st, "t1", 1, "w1")

	big := checkpointOf("t1", 1, "w1", 1)
	big.Data = make([]byte, protocol.MaxCheckpointBytes+1)
	res, err := st.SaveCheckpoint(ctx, big, testNow)
	require.NoError(t, err)
	assert.False(t, res.Applied)
	assert.Equal(t, "checkpoint data of 1048577 bytes exceeds the limit of 1048576 bytes", res.Reason)

	atLimit := checkpointOf("t1", 1, "w1", 2)
	atLimit.Data = make([]byte, protocol.MaxCheckpointBytes)
	res, err = st.SaveCheckpoint(ctx, atLimit, testNow)
	require.NoError(t, err)
	assert.True(t, res.Applied, res.Reason)

	empty := checkpointOf("t1", 1, "w1", 3)
	empty.Data = nil
	res, err = st.SaveCheckpoint(ctx, empty, testNow)
	require.NoError(t, err)
	assert.True(t, res.Applied, "empty data is a valid checkpoint: %s", res.Reason)
	stored, err := st.GetCheckpoint(ctx, "t1")
	require.NoError(t, err)
	assert.Empty(t, stored.Data)
}

func TestOutcomeCheckpointAppliedFirst(t *testing.T) {
	ctx := context.Background()
	st := openTestStore(t, filepath.Join(t.TempDir(), "dtf.db"))
	startRunning(t, st, "t1", 1, "w1")
	res, err := st.SaveCheckpoint(ctx, checkpointOf("t1", 1, "w1", 36), testNow)
	require.NoError(t, err)
	require.True(t, res.Applied)

	// The outcome overtook checkpoint 37, so it carries it.
	carried := checkpointOf("t1", 1, "w1", 37)
	outcome := Outcome{TaskID: "t1", Attempt: 1, WorkerID: "w1", Status: api.StateFailed,
		Message: "executor crashed", Checkpoint: &carried}
	applied, err := st.ApplyOutcome(ctx, outcome, testNow.Add(time.Second))
	require.NoError(t, err)
	require.True(t, applied.Applied, applied.Reason)
	require.NotNil(t, applied.Checkpoint)
	assert.True(t, applied.Checkpoint.Applied, applied.Checkpoint.Reason)

	stored, err := st.GetCheckpoint(ctx, "t1")
	require.NoError(t, err)
	assert.EqualValues(t, 37, stored.Sequence)

	// A checkpoint frame of 37 that arrives after the outcome is a late
	// copy of the stored one, so it is not counted as stale.
	late, err := st.SaveCheckpoint(ctx, checkpointOf("t1", 1, "w1", 37), testNow)
	require.NoError(t, err)
	assert.False(t, late.Applied)
	assert.True(t, late.Duplicate)
	assert.False(t, late.Stale)
	assert.Equal(t, "late: attempt 1 ended, and its stored checkpoint 37 is as new", late.Reason)

	// One newer than the stored checkpoint cannot be a copy: it is stale.
	newer, err := st.SaveCheckpoint(ctx, checkpointOf("t1", 1, "w1", 38), testNow)
	require.NoError(t, err)
	assert.False(t, newer.Applied)
	assert.True(t, newer.Stale)
	assert.Equal(t, "attempt 1 no longer runs: task is failed", newer.Reason)

	task, err := st.GetTask(ctx, "t1")
	require.NoError(t, err)
	require.NotNil(t, task.Checkpoint)
	assert.Equal(t, 1, task.Checkpoint.Attempt)
	assert.EqualValues(t, 37, task.Checkpoint.Sequence)
	assert.Equal(t, len("state-1-37"), task.Checkpoint.SizeBytes)
	assert.InDelta(t, 0.37, task.Checkpoint.Fraction, 1e-9)
	assert.Equal(t, testNow.Add(time.Second), task.Checkpoint.Stored)
}

func TestStaleOutcomeCheckpointRejected(t *testing.T) {
	ctx := context.Background()
	st := openTestStore(t, filepath.Join(t.TempDir(), "dtf.db"))
	startRunning(t, st, "t1", 2, "w1")

	// A late outcome of attempt 1 carries a checkpoint; both are stale.
	carried := checkpointOf("t1", 1, "w1", 99)
	res, err := st.ApplyOutcome(ctx, Outcome{TaskID: "t1", Attempt: 1, WorkerID: "w1",
		Status: api.StateSucceeded, Checkpoint: &carried}, testNow)
	require.NoError(t, err)
	assert.False(t, res.Applied)
	require.NotNil(t, res.Checkpoint)
	assert.False(t, res.Checkpoint.Applied)
	assert.True(t, res.Checkpoint.Stale)

	stored, err := st.GetCheckpoint(ctx, "t1")
	require.NoError(t, err)
	assert.Nil(t, stored)
}

// TestLateOutcomeCheckpointStored checks that the late outcome of a lost
// attempt, applied because no newer attempt started, stores the checkpoint
// it carries when that is newer than the stored one, and only then.
func TestLateOutcomeCheckpointStored(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		carried uint64
		stored  uint64
	}{
		{"newer carried checkpoint", 30, 30},
		{"older carried checkpoint", 10, 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := openTestStore(t, filepath.Join(t.TempDir(), "dtf.db"))
			startRunning(t, st, "t1", 1, "w1")
			res, err := st.SaveCheckpoint(ctx, checkpointOf("t1", 1, "w1", 20), testNow)
			require.NoError(t, err)
			require.True(t, res.Applied)
			_, err = st.EndAttempt(ctx, AttemptEnd{TaskID: "t1", Attempt: 1, State: AttemptLost,
				Reason: "worker w1 did not come back"}, testNow)
			require.NoError(t, err)

			carried := checkpointOf("t1", 1, "w1", tc.carried)
			applied, err := st.ApplyOutcome(ctx, Outcome{TaskID: "t1", Attempt: 1, WorkerID: "w1",
				Status: api.StateSucceeded, Checkpoint: &carried}, testNow.Add(time.Second))
			require.NoError(t, err)
			require.True(t, applied.Applied, applied.Reason)
			assert.True(t, applied.Late)
			require.NotNil(t, applied.Checkpoint)
			assert.Equal(t, tc.carried == tc.stored, applied.Checkpoint.Applied, applied.Checkpoint.Reason)

			task, err := st.GetTask(ctx, "t1")
			require.NoError(t, err)
			assert.Equal(t, api.StateSucceeded, task.State)
			assert.Equal(t, "w1", task.WorkerID, "the task names the worker whose late outcome finished it")
			require.NotNil(t, task.Checkpoint)
			assert.EqualValues(t, tc.stored, task.Checkpoint.Sequence)
		})
	}
}

// TestLostAttemptCheckpointStored checks that a checkpoint frame of a lost
// attempt from the worker that ran it is stored while the task waits for
// its next attempt. The same frame is stale from any other worker, and
// once the next attempt has started.
func TestLostAttemptCheckpointStored(t *testing.T) {
	ctx := context.Background()
	st := openTestStore(t, filepath.Join(t.TempDir(), "dtf.db"))
	startRunning(t, st, "t1", 1, "w1")
	res, err := st.SaveCheckpoint(ctx, checkpointOf("t1", 1, "w1", 5), testNow)
	require.NoError(t, err)
	require.True(t, res.Applied)
	_, err = st.EndAttempt(ctx, AttemptEnd{TaskID: "t1", Attempt: 1, State: AttemptLost,
		Reason: "worker w1 did not come back"}, testNow)
	require.NoError(t, err)

	res, err = st.SaveCheckpoint(ctx, checkpointOf("t1", 1, "w2", 6), testNow)
	require.NoError(t, err)
	assert.False(t, res.Applied, "a checkpoint from a worker that did not run the attempt")
	assert.True(t, res.Stale)

	res, err = st.SaveCheckpoint(ctx, checkpointOf("t1", 1, "w1", 7), testNow)
	require.NoError(t, err)
	assert.True(t, res.Applied, res.Reason)
	res, err = st.SaveCheckpoint(ctx, checkpointOf("t1", 1, "w1", 6), testNow)
	require.NoError(t, err)
	assert.False(t, res.Applied, "an older checkpoint of the lost attempt")

	_, err = st.StartAttempt(ctx, "t1", "w2", testNow)
	require.NoError(t, err)
	task, err := st.GetTask(ctx, "t1")
	require.NoError(t, err)
	require.NotNil(t, task.Checkpoint, "the next attempt resumes from the lost attempt's newest checkpoint")
	assert.EqualValues(t, 7, task.Checkpoint.Sequence)
	res, err = st.SaveCheckpoint(ctx, checkpointOf("t1", 1, "w1", 8), testNow)
	require.NoError(t, err)
	assert.False(t, res.Applied)
	assert.Equal(t, "stale attempt 1, current attempt is 2", res.Reason)
}

func TestAttemptRecordsResumePoint(t *testing.T) {
	ctx := context.Background()
	st := openTestStore(t, filepath.Join(t.TempDir(), "dtf.db"))
	startRunning(t, st, "t1", 1, "w1")
	for seq := uint64(1); seq <= 3; seq++ {
		_, err := st.SaveCheckpoint(ctx, checkpointOf("t1", 1, "w1", seq), testNow)
		require.NoError(t, err)
	}
	_, err := st.EndAttempt(ctx, AttemptEnd{TaskID: "t1", Attempt: 1, State: AttemptLost, Reason: "gone"}, testNow)
	require.NoError(t, err)
	_, err = st.StartAttempt(ctx, "t1", "w2", testNow)
	require.NoError(t, err)

	task, err := st.GetTask(ctx, "t1")
	require.NoError(t, err)
	require.Len(t, task.Attempts, 2)
	assert.Nil(t, task.Attempts[0].ResumedFrom, "the first attempt started fresh")
	require.NotNil(t, task.Attempts[1].ResumedFrom)
	assert.Equal(t, api.CheckpointRef{Attempt: 1, Sequence: 3}, *task.Attempts[1].ResumedFrom)

	listed, err := st.ListTasks(ctx, TaskFilter{})
	require.NoError(t, err)
	require.Len(t, listed, 1)
	require.NotNil(t, listed[0].Checkpoint, "the task list shows the checkpoint too")
	assert.EqualValues(t, 3, listed[0].Checkpoint.Sequence)
}
