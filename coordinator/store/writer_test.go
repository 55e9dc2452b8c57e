package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/coordinator/api"
)

// holdWriter makes the writer run a request that blocks until the
// returned function is called, so that the requests sent meanwhile queue
// up and form the next batch.
func holdWriter(t *testing.T, st *SQLite) (release func()) {
	t.Helper()
	started := make(chan struct{})
	unblock := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- st.inTx(context.Background(), func(context.Context, *txn) error {
			close(started)
			<-unblock
			return nil
		})
	}()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the writer did not run the blocking request within 10s")
	}
	return func() {
		close(unblock)
		require.NoError(t, <-done)
	}
}

// waitQueued waits until n requests wait for the writer.
func waitQueued(t *testing.T, st *SQLite, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return len(st.writer.queue) == n }, 10*time.Second, time.Millisecond,
		"requests waiting for the writer")
}

// startTasks creates n queued tasks t0..t(n-1) and starts attempt 1 of
// each on worker w1.
func startTasks(t testing.TB, st *SQLite, n int) {
	t.Helper()
	ctx := context.Background()
	tasks := make([]NewTask, n)
	starts := make([]AttemptStart, n)
	for i := range tasks {
		tasks[i] = newTask(fmt.Sprintf("t%d", i), 3)
		starts[i] = AttemptStart{TaskID: tasks[i].ID, WorkerID: "w1"}
	}
	require.NoError(t, st.CreateTasks(ctx, tasks, testNow))
	results, err := st.StartAttempts(ctx, starts, testNow)
	require.NoError(t, err)
	for _, res := range results {
		require.NoError(t, res.Err)
	}
}

func TestGroupCommitDecidesEachRequest(t *testing.T) {
	ctx := context.Background()
	st := openTestStore(t, filepath.Join(t.TempDir(), "dtf.db"))
	const tasks = 40
	startTasks(t, st, tasks)

	// Task i gets an outcome from the running attempt when i%4 is 0, from
	// another worker when it is 1, from an attempt never started when it
	// is 2, and none when it is 3. One more request fails after a write,
	// which must be rolled back alone.
	outcome := func(i int) Outcome {
		o := Outcome{TaskID: fmt.Sprintf("t%d", i), Attempt: 1, WorkerID: "w1", Status: api.StateSucceeded}
		switch i % 4 {
		case 1:
			o.WorkerID = "w2"
		case 2:
			o.Attempt = 2
		}
		return o
	}
	sent := 0
	batchesBefore := st.writer.batches.Load()
	release := holdWriter(t, st)
	results := make([]OutcomeResult, tasks)
	errs := make([]error, tasks)
	var wg sync.WaitGroup
	for i := range tasks {
		if i%4 == 3 {
			continue
		}
		sent++
		wg.Go(func() { results[i], errs[i] = st.ApplyOutcome(ctx, outcome(i), testNow) })
	}
	failed := errors.New("request failed after its write")
	var failedErr error
	wg.Go(func() {
		failedErr = st.inTx(ctx, func(ctx context.Context, tx *txn) error {
			if _, err := tx.ExecContext(ctx, `UPDATE tasks SET name = 'changed' WHERE id = 't3'`); err != nil {
				return err
			}
			return failed
		})
	})
	waitQueued(t, st, sent+1)
	release()
	wg.Wait()

	assert.Equal(t, int64(2), st.writer.batches.Load()-batchesBefore,
		"the held request and all queued requests commit in two batches")
	assert.ErrorIs(t, failedErr, failed)
	task, err := st.GetTask(ctx, "t3")
	require.NoError(t, err)
	assert.Equal(t, "name-t3", task.Name, "the failed request's write is rolled back")
	for i := range tasks {
		id := fmt.Sprintf("t%d", i)
		task, err := st.GetTask(ctx, id)
		require.NoError(t, err)
		switch i % 4 {
		case 0:
			require.NoError(t, errs[i], id)
			assert.True(t, results[i].Applied, id)
			assert.Equal(t, api.StateSucceeded, task.State, id)
		case 1:
			require.NoError(t, errs[i], id)
			assert.False(t, results[i].Applied, id)
			assert.Contains(t, results[i].Reason, "runs on worker w1, not w2", id)
			assert.Equal(t, api.StateRunning, task.State, id)
		case 2:
			require.NoError(t, errs[i], id)
			assert.False(t, results[i].Applied, id)
			assert.Contains(t, results[i].Reason, "unknown attempt 2", id)
			assert.Equal(t, api.StateRunning, task.State, id)
		case 3:
			assert.Equal(t, api.StateRunning, task.State, id)
		}
	}
}

func TestGroupCommitFailureFailsBatch(t *testing.T) {
	ctx := context.Background()
	st := openTestStore(t, filepath.Join(t.TempDir(), "dtf.db"))
	const tasks = 10
	startTasks(t, st, tasks)

	release := holdWriter(t, st)
	results := make([]OutcomeResult, tasks)
	errs := make([]error, tasks)
	var wg sync.WaitGroup
	for i := range tasks {
		wg.Go(func() {
			results[i], errs[i] = st.ApplyOutcome(ctx, Outcome{TaskID: fmt.Sprintf("t%d", i), Attempt: 1,
				WorkerID: "w1", Status: api.StateSucceeded}, testNow)
		})
	}
	waitQueued(t, st, tasks)
	// The last request of the batch breaks a foreign key whose check it
	// defers to the commit, so the commit fails after every request
	// succeeded.
	var breakerErr error
	wg.Go(func() {
		breakerErr = st.inTx(ctx, func(ctx context.Context, tx *txn) error {
			if _, err := tx.ExecContext(ctx, `PRAGMA defer_foreign_keys = ON`); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO task_labels (task_id, name, value)
				VALUES ('no-such-task', 'gpu', 'true')`)
			return err
		})
	})
	waitQueued(t, st, tasks+1)
	release()
	wg.Wait()

	require.Error(t, breakerErr)
	assert.Contains(t, breakerErr.Error(), "commit")
	for i := range tasks {
		require.Error(t, errs[i], "outcome %d", i)
		assert.Contains(t, errs[i].Error(), "FOREIGN KEY", "outcome %d", i)
		assert.Equal(t, OutcomeResult{}, results[i], "outcome %d returns no decision", i)
		task, err := st.GetTask(ctx, fmt.Sprintf("t%d", i))
		require.NoError(t, err)
		assert.Equal(t, api.StateRunning, task.State, "outcome %d is not applied", i)
	}

	// The writer recovers: the same outcomes apply in the next batch.
	res, err := st.ApplyOutcome(ctx, Outcome{TaskID: "t0", Attempt: 1, WorkerID: "w1",
		Status: api.StateSucceeded}, testNow)
	require.NoError(t, err)
	assert.True(t, res.Applied)
}

func TestWriteAfterClose(t *testing.T) {
	st, err := OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "dtf.db"))
	require.NoError(t, err)
	require.NoError(t, st.Close())
	err = st.CreateTasks(context.Background(), []NewTask{newTask("t1", 1)}, testNow)
	assert.ErrorIs(t, err, ErrClosed)
}

func TestWriteContextEndsWhileQueued(t *testing.T) {
	st := openTestStore(t, filepath.Join(t.TempDir(), "dtf.db"))
	release := holdWriter(t, st)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- st.CreateTasks(ctx, []NewTask{newTask("t1", 1)}, testNow) }()
	waitQueued(t, st, 1)
	cancel()
	release()
	err := <-done
	assert.ErrorIs(t, err, context.Canceled)
	_, err = st.GetTask(context.Background(), "t1")
	assert.ErrorIs(t, err, ErrNotFound, "a request whose context ended before it ran changes nothing")
}

func TestStartAttemptsBatch(t *testing.T) {
	ctx := context.Background()
	st := openTestStore(t, filepath.Join(t.TempDir(), "dtf.db"))
	require.NoError(t, st.CreateTasks(ctx, []NewTask{newTask("t1", 3), newTask("t2", 3), newTask("t3", 3)},
		testNow))
	_, err := st.CancelTask(ctx, "t3", "test", testNow)
	require.NoError(t, err)

	// t1 resumes from a checkpoint of an earlier attempt.
	_, err = st.StartAttempt(ctx, "t1", "w0", testNow)
	require.NoError(t, err)
	cp, err := st.SaveCheckpoint(ctx, Checkpoint{TaskID: "t1", Attempt: 1, WorkerID: "w0", Sequence: 4,
		Data: []byte("state")}, testNow)
	require.NoError(t, err)
	require.True(t, cp.Applied)
	_, err = st.EndAttempt(ctx, AttemptEnd{TaskID: "t1", Attempt: 1, State: AttemptLost}, testNow)
	require.NoError(t, err)

	results, err := st.StartAttempts(ctx, []AttemptStart{
		{TaskID: "t1", WorkerID: "w1"},
		{TaskID: "t2", WorkerID: "w2"},
		{TaskID: "t2", WorkerID: "w1"},
		{TaskID: "t3", WorkerID: "w1"},
	}, testNow)
	require.NoError(t, err)
	require.Len(t, results, 4)

	require.NoError(t, results[0].Err)
	assert.Equal(t, 2, results[0].Task.Attempt)
	assert.Equal(t, "w1", results[0].Task.WorkerID)
	require.NotNil(t, results[0].Checkpoint)
	assert.Equal(t, uint64(4), results[0].Checkpoint.Sequence)
	assert.Equal(t, []byte("state"), results[0].Checkpoint.Data)

	require.NoError(t, results[1].Err)
	assert.Equal(t, 1, results[1].Task.Attempt)
	assert.Nil(t, results[1].Checkpoint)
	assert.ErrorIs(t, results[2].Err, ErrConflict, "a task named twice starts once")
	assert.Nil(t, results[2].Task)
	assert.ErrorIs(t, results[3].Err, ErrConflict, "a cancelled task does not start")

	task, err := st.GetTask(ctx, "t1")
	require.NoError(t, err)
	require.Len(t, task.Attempts, 2)
	require.NotNil(t, task.Attempts[1].ResumedFrom)
	assert.Equal(t, 1, task.Attempts[1].ResumedFrom.Attempt)
	assert.Equal(t, uint64(4), task.Attempts[1].ResumedFrom.Sequence)

	counts, err := st.RunningCounts(ctx)
	require.NoError(t, err)
	assert.Equal(t, map[string]int{"w1": 1, "w2": 1}, counts)
}

func TestGetTasksKeepsOrder(t *testing.T) {
	ctx := context.Background()
	st := openTestStore(t, filepath.Join(t.TempDir(), "dtf.db"))
	require.NoError(t, st.CreateTasks(ctx, []NewTask{newTask("t1", 3), newTask("t2", 3)}, testNow))

	tasks, err := st.GetTasks(ctx, []string{"t2", "t1"})
	require.NoError(t, err)
	require.Len(t, tasks, 2)
	assert.Equal(t, "t2", tasks[0].ID)
	assert.Equal(t, "t1", tasks[1].ID)
	assert.Equal(t, api.StateQueued, tasks[1].State)

	_, err = st.GetTasks(ctx, []string{"t1", "missing"})
	assert.ErrorIs(t, err, ErrNotFound)
}
