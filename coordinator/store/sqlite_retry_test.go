package store

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/coordinator/api"
)

func fixedBackoff(d time.Duration) Backoff {
	return func(int) time.Duration { return d }
}

func queuedIDs(t *testing.T, st *SQLite, q QueuedQuery) []string {
	t.Helper()
	tasks, err := st.QueuedTasks(context.Background(), q)
	require.NoError(t, err)
	ids := []string{}
	for _, task := range tasks {
		ids = append(ids, task.ID)
	}
	return ids
}

func TestQueuedTasksMatchLabels(t *testing.T) {
	ctx := context.Background()
	st := openTestStore(t, filepath.Join(t.TempDir(), "dtf.db"))
	gpu := newTask("gpu", 3)
	gpu.Labels = map[string]string{"gpu": "true"}
	both := newTask("both", 3)
	both.Labels = map[string]string{"gpu": "true", "os": "linux"}
	require.NoError(t, st.CreateTasks(ctx, []NewTask{gpu, both, newTask("plain", 3)}, testNow))

	cases := []struct {
		name   string
		labels map[string]string
		want   []string
	}{
		{"no labels", nil, []string{"plain"}},
		{"gpu only", map[string]string{"gpu": "true"}, []string{"gpu", "plain"}},
		{"gpu and os", map[string]string{"gpu": "true", "os": "linux", "arch": "arm64"},
			[]string{"gpu", "both", "plain"}},
		{"other value", map[string]string{"gpu": "false", "os": "linux"}, []string{"plain"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := queuedIDs(t, st, QueuedQuery{Types: []string{"command"}, Labels: tc.labels,
				Now: testNow, Limit: 10})
			assert.Equal(t, tc.want, got)
		})
	}

	task, err := st.GetTask(ctx, "both")
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"gpu": "true", "os": "linux"}, task.Labels)
}

func TestEndAttemptBackoffAndTimeout(t *testing.T) {
	ctx := context.Background()
	st := openTestStore(t, filepath.Join(t.TempDir(), "dtf.db"))
	require.NoError(t, st.CreateTasks(ctx, []NewTask{newTask("t1", 2)}, testNow))
	query := QueuedQuery{Types: []string{"command"}, Now: testNow, Limit: 10}

	_, err := st.StartAttempt(ctx, "t1", "w1", testNow)
	require.NoError(t, err)
	task, err := st.EndAttempt(ctx, AttemptEnd{TaskID: "t1", Attempt: 1, State: AttemptTimedOut,
		Reason: "ran past its timeout", Backoff: fixedBackoff(time.Minute)}, testNow)
	require.NoError(t, err)
	assert.Equal(t, api.StateQueued, task.State)
	assert.Equal(t, testNow.Add(time.Minute), task.NotBefore)

	assert.Empty(t, queuedIDs(t, st, query), "a task in backoff is not handed out")
	query.Now = testNow.Add(time.Minute)
	assert.Equal(t, []string{"t1"}, queuedIDs(t, st, query), "the task returns when its backoff ends")

	_, err = st.StartAttempt(ctx, "t1", "w1", testNow)
	require.ErrorIs(t, err, ErrConflict, "a task in backoff does not start")
	_, err = st.StartAttempt(ctx, "t1", "w1", testNow.Add(time.Minute))
	require.NoError(t, err)
	task, err = st.EndAttempt(ctx, AttemptEnd{TaskID: "t1", Attempt: 2, State: AttemptTimedOut,
		Reason: "ran past its timeout"}, testNow)
	require.NoError(t, err)
	assert.Equal(t, api.StateTimedOut, task.State, "the last timed out attempt ends the task as timed_out")

	task, err = st.GetTask(ctx, "t1")
	require.NoError(t, err)
	require.Len(t, task.Attempts, 2)
	assert.Equal(t, AttemptTimedOut, task.Attempts[1].State)
	assert.Equal(t, "ran past its timeout; task timed_out after 2 of 2 attempts", task.Attempts[1].Reason)

	_, err = st.EndAttempt(ctx, AttemptEnd{TaskID: "t1", Attempt: 2, State: "finished"}, testNow)
	require.ErrorContains(t, err, `state "finished" is invalid`)
}

func TestReleasedAndRetryableOutcomes(t *testing.T) {
	ctx := context.Background()
	st := openTestStore(t, filepath.Join(t.TempDir(), "dtf.db"))
	require.NoError(t, st.CreateTasks(ctx, []NewTask{newTask("t1", 2)}, testNow))

	// Two released attempts leave both counted attempts to the task.
	for attempt := 1; attempt <= 2; attempt++ {
		_, err := st.StartAttempt(ctx, "t1", "w1", testNow)
		require.NoError(t, err)
		res, err := st.ApplyOutcome(ctx, Outcome{TaskID: "t1", Attempt: attempt, WorkerID: "w1",
			Status: api.StateCancelled, Released: true}, testNow)
		require.NoError(t, err)
		require.True(t, res.Applied)
		assert.True(t, res.Requeued)
		assert.Equal(t, api.StateQueued, res.Task.State)
		assert.Equal(t, attempt, res.Task.Released)
	}

	_, err := st.StartAttempt(ctx, "t1", "w2", testNow)
	require.NoError(t, err)
	res, err := st.ApplyOutcome(ctx, Outcome{TaskID: "t1", Attempt: 3, WorkerID: "w2",
		Status: api.StateFailed, Retryable: true, RetryBackoff: fixedBackoff(time.Second)}, testNow)
	require.NoError(t, err)
	assert.True(t, res.Requeued, "the first counted failure leaves one attempt")
	assert.Equal(t, testNow.Add(time.Second), res.Task.NotBefore)

	// The same outcome again after the task moved on is a duplicate.
	again, err := st.ApplyOutcome(ctx, Outcome{TaskID: "t1", Attempt: 3, WorkerID: "w2",
		Status: api.StateFailed, Retryable: true}, testNow)
	require.NoError(t, err)
	assert.False(t, again.Applied)
	assert.True(t, again.Duplicate)

	_, err = st.StartAttempt(ctx, "t1", "w2", testNow.Add(time.Second))
	require.NoError(t, err)
	res, err = st.ApplyOutcome(ctx, Outcome{TaskID: "t1", Attempt: 4, WorkerID: "w2",
		Status: api.StateFailed, Retryable: true, Message: "executor crashed"}, testNow)
	require.NoError(t, err)
	assert.False(t, res.Requeued, "the second counted failure uses up max_attempts 2")
	assert.Equal(t, api.StateFailed, res.Task.State)

	task, err := st.GetTask(ctx, "t1")
	require.NoError(t, err)
	require.Len(t, task.Attempts, 4)
	assert.Equal(t, AttemptReleased, task.Attempts[0].State)
	assert.Equal(t, AttemptReleased, task.Attempts[1].State)
	assert.Equal(t, "retryable failure of the last attempt, 2 of 2", task.Attempts[3].Reason)
	require.NotNil(t, task.Outcome)
	assert.Equal(t, 4, task.Outcome.Attempt)

	stale, err := st.ApplyOutcome(ctx, Outcome{TaskID: "t1", Attempt: 1, WorkerID: "w9",
		Status: api.StateSucceeded}, testNow)
	require.NoError(t, err)
	assert.False(t, stale.Duplicate, "another worker's outcome is stale, not a duplicate")
	assert.Equal(t, "stale attempt 1, current attempt is 4", stale.Reason)
}
