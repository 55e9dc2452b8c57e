package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/coordinator/api"
)

var testNow = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func openTestStore(t *testing.T, path string) *SQLite {
	t.Helper()
	st, err := OpenSQLite(context.Background(), path)
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	return st
}

func newTask(id string, maxAttempts int) NewTask {
	return NewTask{
		ID:          id,
		Batch:       "b1",
		Name:        "name-" + id,
		Type:        "command",
		Payload:     json.RawMessage(`{"argv":["true"]}`),
		TimeoutMS:   1000,
		MaxAttempts: maxAttempts,
	}
}

func TestCreateGetList(t *testing.T) {
	ctx := context.Background()
	st := openTestStore(t, filepath.Join(t.TempDir(), "dtf.db"))

	require.NoError(t, st.CreateTasks(ctx, []NewTask{newTask("t1", 3), newTask("t2", 3)}, testNow))
	other := newTask("t3", 3)
	other.Batch = "b2"
	other.Type = "gotest"
	require.NoError(t, st.CreateTasks(ctx, []NewTask{other}, testNow))

	task, err := st.GetTask(ctx, "t1")
	require.NoError(t, err)
	assert.Equal(t, api.StateQueued, task.State)
	assert.Equal(t, 0, task.Attempt)
	assert.Equal(t, "name-t1", task.Name)
	assert.JSONEq(t, `{"argv":["true"]}`, string(task.Payload))
	assert.Equal(t, int64(1000), task.TimeoutMS)
	assert.Equal(t, testNow, task.Created)
	assert.Empty(t, task.Attempts)
	assert.Nil(t, task.Outcome)

	_, err = st.GetTask(ctx, "absent")
	require.ErrorIs(t, err, ErrNotFound)

	all, err := st.ListTasks(ctx, TaskFilter{})
	require.NoError(t, err)
	require.Len(t, all, 3)
	assert.Equal(t, []string{"t1", "t2", "t3"}, []string{all[0].ID, all[1].ID, all[2].ID})

	batch, err := st.ListTasks(ctx, TaskFilter{Batch: "b2"})
	require.NoError(t, err)
	require.Len(t, batch, 1)
	assert.Equal(t, "t3", batch[0].ID)

	queued, err := st.QueuedTasks(ctx, QueuedQuery{Types: []string{"gotest"}, Now: testNow, Limit: 10})
	require.NoError(t, err)
	require.Len(t, queued, 1)
	assert.Equal(t, "t3", queued[0].ID)

	limited, err := st.QueuedTasks(ctx, QueuedQuery{Types: []string{"command", "gotest"}, Now: testNow, Limit: 2})
	require.NoError(t, err)
	assert.Len(t, limited, 2)

	err = st.CreateTasks(ctx, []NewTask{newTask("t4", 3), newTask("t1", 3)}, testNow)
	require.Error(t, err, "a duplicate ID fails the whole submission")
	_, err = st.GetTask(ctx, "t4")
	require.ErrorIs(t, err, ErrNotFound)
}

func TestStartAttemptAndOutcome(t *testing.T) {
	ctx := context.Background()
	st := openTestStore(t, filepath.Join(t.TempDir(), "dtf.db"))
	require.NoError(t, st.CreateTasks(ctx, []NewTask{newTask("t1", 3)}, testNow))

	task, err := st.StartAttempt(ctx, "t1", "w1", testNow)
	require.NoError(t, err)
	assert.Equal(t, api.StateRunning, task.State)
	assert.Equal(t, 1, task.Attempt)
	assert.Equal(t, "w1", task.WorkerID)

	_, err = st.StartAttempt(ctx, "t1", "w2", testNow)
	require.ErrorIs(t, err, ErrConflict, "a running task cannot start twice")

	running, err := st.RunningAttempts(ctx, "w1")
	require.NoError(t, err)
	require.Len(t, running, 1)
	assert.Equal(t, RunningAttempt{TaskID: "t1", Attempt: 1, WorkerID: "w1", Started: testNow,
		TimeoutMS: 1000}, running[0])

	outcome := Outcome{
		TaskID: "t1", Attempt: 1, WorkerID: "w1", Status: api.StateSucceeded,
		ExitCode: 0, Output: "hi\n", Result: json.RawMessage(`{"ok":true}`),
		Started: testNow, Finished: testNow.Add(time.Second),
	}
	res, err := st.ApplyOutcome(ctx, outcome, testNow)
	require.NoError(t, err)
	assert.True(t, res.Applied)
	assert.Equal(t, api.StateSucceeded, res.Task.State)

	task, err = st.GetTask(ctx, "t1")
	require.NoError(t, err)
	assert.Equal(t, api.StateSucceeded, task.State)
	require.Len(t, task.Attempts, 1)
	assert.Equal(t, api.StateSucceeded, task.Attempts[0].State)
	require.NotNil(t, task.Outcome)
	assert.Equal(t, "hi\n", task.Outcome.Output)
	assert.JSONEq(t, `{"ok":true}`, string(task.Outcome.Result))

	running, err = st.RunningAttempts(ctx, "")
	require.NoError(t, err)
	assert.Empty(t, running)
}

func TestOutcomeFencing(t *testing.T) {
	ctx := context.Background()
	st := openTestStore(t, filepath.Join(t.TempDir(), "dtf.db"))
	require.NoError(t, st.CreateTasks(ctx, []NewTask{newTask("t1", 3)}, testNow))

	_, err := st.StartAttempt(ctx, "t1", "w1", testNow)
	require.NoError(t, err)
	_, err = st.EndAttempt(ctx, AttemptEnd{TaskID: "t1", Attempt: 1, State: AttemptLost, Reason: "worker w1 did not come back"}, testNow)
	require.NoError(t, err)
	_, err = st.StartAttempt(ctx, "t1", "w2", testNow)
	require.NoError(t, err)

	cases := []struct {
		name    string
		outcome Outcome
		applied bool
		reason  string
	}{
		{"stale attempt", Outcome{TaskID: "t1", Attempt: 1, WorkerID: "w1", Status: api.StateSucceeded},
			false, "stale attempt 1, current attempt is 2"},
		{"future attempt", Outcome{TaskID: "t1", Attempt: 3, WorkerID: "w2", Status: api.StateSucceeded},
			false, "unknown attempt 3, current attempt is 2"},
		{"wrong worker", Outcome{TaskID: "t1", Attempt: 2, WorkerID: "w1", Status: api.StateSucceeded},
			false, "attempt 2 runs on worker w2, not w1"},
		{"unknown task", Outcome{TaskID: "nope", Attempt: 1, WorkerID: "w2", Status: api.StateFailed},
			false, "unknown task nope"},
		{"current attempt", Outcome{TaskID: "t1", Attempt: 2, WorkerID: "w2", Status: api.StateFailed, ExitCode: 3},
			true, ""},
		{"duplicate", Outcome{TaskID: "t1", Attempt: 2, WorkerID: "w2", Status: api.StateSucceeded},
			false, "duplicate: outcome of attempt 2 already applied"},
		{"stale after end", Outcome{TaskID: "t1", Attempt: 1, WorkerID: "w1", Status: api.StateSucceeded},
			false, "stale attempt 1, current attempt is 2"},
		{"other worker after end", Outcome{TaskID: "t1", Attempt: 2, WorkerID: "w9", Status: api.StateSucceeded},
			false, "task is failed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, err := st.ApplyOutcome(ctx, tc.outcome, testNow)
			require.NoError(t, err)
			assert.Equal(t, tc.applied, res.Applied)
			assert.Equal(t, tc.reason, res.Reason)
		})
	}

	task, err := st.GetTask(ctx, "t1")
	require.NoError(t, err)
	assert.Equal(t, api.StateFailed, task.State, "only the current attempt's outcome applies")
	require.NotNil(t, task.Outcome)
	assert.Equal(t, 2, task.Outcome.Attempt)
	assert.Equal(t, 3, task.Outcome.ExitCode)
	require.Len(t, task.Attempts, 2)
	assert.Equal(t, AttemptLost, task.Attempts[0].State)
	assert.Equal(t, "lost: worker w1 did not come back", task.Attempts[0].Reason)
	assert.Equal(t, api.StateFailed, task.Attempts[1].State, "the attempt takes the outcome's status")
	assert.Equal(t, testNow, task.Attempts[1].Ended)

	_, err = st.ApplyOutcome(ctx, Outcome{TaskID: "t1", Attempt: 2, WorkerID: "w2", Status: "running"}, testNow)
	require.Error(t, err, "a non-terminal status is invalid")
}

func TestEndAttemptMaxAttempts(t *testing.T) {
	ctx := context.Background()
	st := openTestStore(t, filepath.Join(t.TempDir(), "dtf.db"))
	require.NoError(t, st.CreateTasks(ctx, []NewTask{newTask("t1", 2)}, testNow))

	_, err := st.StartAttempt(ctx, "t1", "w1", testNow)
	require.NoError(t, err)
	task, err := st.EndAttempt(ctx, AttemptEnd{TaskID: "t1", Attempt: 1, State: AttemptLost, Reason: "lost"}, testNow)
	require.NoError(t, err)
	assert.Equal(t, api.StateQueued, task.State)
	assert.Empty(t, task.WorkerID)

	_, err = st.EndAttempt(ctx, AttemptEnd{TaskID: "t1", Attempt: 1, State: AttemptLost, Reason: "lost again"}, testNow)
	require.ErrorIs(t, err, ErrConflict, "a queued task has no attempt to lose")

	_, err = st.StartAttempt(ctx, "t1", "w1", testNow)
	require.NoError(t, err)
	task, err = st.EndAttempt(ctx, AttemptEnd{TaskID: "t1", Attempt: 2, State: AttemptLost, Reason: "lost"}, testNow)
	require.NoError(t, err)
	assert.Equal(t, api.StateFailed, task.State, "the second lost attempt uses up max_attempts 2")
	assert.Equal(t, 2, task.Attempt)

	task, err = st.GetTask(ctx, "t1")
	require.NoError(t, err)
	require.Len(t, task.Attempts, 2)
	assert.Equal(t, AttemptLost, task.Attempts[1].State)
	assert.Equal(t, "lost: lost; task failed after 2 of 2 attempts", task.Attempts[1].Reason)
	assert.Nil(t, task.Outcome, "a task that ran out of attempts has no outcome")

	_, err = st.StartAttempt(ctx, "t1", "w1", testNow)
	require.ErrorIs(t, err, ErrConflict)
}

func TestCancelTask(t *testing.T) {
	ctx := context.Background()
	st := openTestStore(t, filepath.Join(t.TempDir(), "dtf.db"))
	require.NoError(t, st.CreateTasks(ctx, []NewTask{newTask("q", 3), newTask("r", 3)}, testNow))
	_, err := st.StartAttempt(ctx, "r", "w1", testNow)
	require.NoError(t, err)

	before, err := st.CancelTask(ctx, "q", "by user", testNow)
	require.NoError(t, err)
	assert.Equal(t, api.StateQueued, before.State)

	before, err = st.CancelTask(ctx, "r", "by user", testNow)
	require.NoError(t, err)
	assert.Equal(t, api.StateRunning, before.State)
	assert.Equal(t, "w1", before.WorkerID)
	assert.Equal(t, 1, before.Attempt)

	task, err := st.GetTask(ctx, "r")
	require.NoError(t, err)
	assert.Equal(t, api.StateCancelled, task.State)
	require.Len(t, task.Attempts, 1)
	assert.Equal(t, api.StateCancelled, task.Attempts[0].State)

	_, err = st.CancelTask(ctx, "r", "again", testNow)
	require.ErrorIs(t, err, ErrTerminal)
	require.ErrorIs(t, err, ErrConflict)
	assert.Contains(t, err.Error(), "already ended as cancelled")
	_, err = st.CancelTask(ctx, "absent", "", testNow)
	require.ErrorIs(t, err, ErrNotFound)

	res, err := st.ApplyOutcome(ctx, Outcome{TaskID: "r", Attempt: 1, WorkerID: "w1",
		Status: api.StateSucceeded}, testNow)
	require.NoError(t, err)
	assert.False(t, res.Applied)
	assert.Equal(t, "task is cancelled", res.Reason)
}

func TestReopenKeepsState(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "dtf.db")
	st, err := OpenSQLite(ctx, path)
	require.NoError(t, err)
	require.NoError(t, st.CreateTasks(ctx, []NewTask{newTask("t1", 3), newTask("t2", 3)}, testNow))
	_, err = st.StartAttempt(ctx, "t1", "w1", testNow)
	require.NoError(t, err)
	require.NoError(t, st.UpsertWorker(ctx, WorkerRecord{ID: "w1", TaskTypes: []string{"command"},
		Slots: 2, Labels: map[string]string{"os": "linux"}, HostVersion: "1.0", LastSeen: testNow}))
	require.NoError(t, st.Close())

	st = openTestStore(t, path)
	tasks, err := st.ListTasks(ctx, TaskFilter{})
	require.NoError(t, err)
	require.Len(t, tasks, 2)
	assert.Equal(t, api.StateRunning, tasks[0].State)
	assert.Equal(t, api.StateQueued, tasks[1].State)

	running, err := st.RunningAttempts(ctx, "")
	require.NoError(t, err)
	require.Len(t, running, 1)
	assert.Equal(t, "w1", running[0].WorkerID)

	workers, err := st.ListWorkers(ctx)
	require.NoError(t, err)
	require.Len(t, workers, 1)
	assert.Equal(t, []string{"command"}, workers[0].TaskTypes)
	assert.Equal(t, 2, workers[0].Slots)
	assert.Equal(t, map[string]string{"os": "linux"}, workers[0].Labels)

	res, err := st.ApplyOutcome(ctx, Outcome{TaskID: "t1", Attempt: 1, WorkerID: "w1",
		Status: api.StateSucceeded}, testNow)
	require.NoError(t, err)
	assert.True(t, res.Applied, "the attempt started before the restart still accepts its outcome")

	var versions int
	require.NoError(t, st.read.QueryRow(`SELECT COUNT(*) FROM schema_migrations`).Scan(&versions))
	names, err := fs.Glob(migrations, "migrations/*.sql")
	require.NoError(t, err)
	assert.Equal(t, len(names), versions, "reopening applies no migration twice")
}

func TestUpsertWorkerUpdates(t *testing.T) {
	ctx := context.Background()
	st := openTestStore(t, filepath.Join(t.TempDir(), "dtf.db"))
	require.NoError(t, st.UpsertWorker(ctx, WorkerRecord{ID: "w1", TaskTypes: []string{"a"}, Slots: 1,
		LastSeen: testNow}))
	require.NoError(t, st.UpsertWorker(ctx, WorkerRecord{ID: "w1", TaskTypes: []string{"a", "b"}, Slots: 4,
		LastSeen: testNow.Add(time.Minute)}))

	workers, err := st.ListWorkers(ctx)
	require.NoError(t, err)
	require.Len(t, workers, 1)
	assert.Equal(t, []string{"a", "b"}, workers[0].TaskTypes)
	assert.Equal(t, 4, workers[0].Slots)
	assert.Equal(t, testNow.Add(time.Minute), workers[0].LastSeen)

	// TouchWorker only moves the time forward, and ignores unknown workers.
	require.NoError(t, st.TouchWorker(ctx, "w1", testNow.Add(2*time.Minute)))
	require.NoError(t, st.TouchWorker(ctx, "w1", testNow))
	require.NoError(t, st.TouchWorker(ctx, "absent", testNow))
	workers, err = st.ListWorkers(ctx)
	require.NoError(t, err)
	require.Len(t, workers, 1)
	assert.Equal(t, testNow.Add(2*time.Minute), workers[0].LastSeen)
}

// TestHoldForLateOutcomes checks that only a queued task whose current
// attempt was lost on the given worker is held.
func TestHoldForLateOutcomes(t *testing.T) {
	ctx := context.Background()
	st := openTestStore(t, filepath.Join(t.TempDir(), "dtf.db"))
	require.NoError(t, st.CreateTasks(ctx, []NewTask{newTask("lost", 3), newTask("running", 3)}, testNow))
	for _, id := range []string{"lost", "running"} {
		_, err := st.StartAttempt(ctx, id, "w1", testNow)
		require.NoError(t, err)
	}
	_, err := st.EndAttempt(ctx, AttemptEnd{TaskID: "lost", Attempt: 1, State: AttemptLost, Reason: "cut"}, testNow)
	require.NoError(t, err)
	until := testNow.Add(10 * time.Second)
	refs := []AttemptRef{{TaskID: "lost", Attempt: 1}, {TaskID: "running", Attempt: 1}, {TaskID: "nope", Attempt: 1}}

	count, err := st.HoldForLateOutcomes(ctx, "w2", refs, until)
	require.NoError(t, err)
	assert.Zero(t, count, "another worker's lost attempt")

	count, err = st.HoldForLateOutcomes(ctx, "w1", refs, until)
	require.NoError(t, err)
	assert.Equal(t, 1, count)
	task, err := st.GetTask(ctx, "lost")
	require.NoError(t, err)
	assert.Equal(t, until, task.NotBefore)

	// The awaited outcome arrives as a cancel, which is not applied and
	// ends the hold.
	arrived := testNow.Add(time.Second)
	res, err := st.ApplyOutcome(ctx, Outcome{TaskID: "lost", Attempt: 1, WorkerID: "w1",
		Status: api.StateCancelled}, arrived)
	require.NoError(t, err)
	assert.False(t, res.Applied)
	task, err = st.GetTask(ctx, "lost")
	require.NoError(t, err)
	assert.Equal(t, api.StateQueued, task.State)
	assert.False(t, task.NotBefore.After(arrived), "the hold ends when its outcome is rejected")
}

func TestDeleteWorker(t *testing.T) {
	ctx := context.Background()
	st := openTestStore(t, filepath.Join(t.TempDir(), "dtf.db"))
	require.NoError(t, st.UpsertWorker(ctx, WorkerRecord{ID: "w1", TaskTypes: []string{"a"}, Slots: 1,
		LastSeen: testNow}))
	require.NoError(t, st.UpsertWorker(ctx, WorkerRecord{ID: "w2", TaskTypes: []string{"a"}, Slots: 1,
		LastSeen: testNow}))

	require.NoError(t, st.DeleteWorker(ctx, "w1"))
	workers, err := st.ListWorkers(ctx)
	require.NoError(t, err)
	require.Len(t, workers, 1)
	assert.Equal(t, "w2", workers[0].ID)

	err = st.DeleteWorker(ctx, "w1")
	require.ErrorIs(t, err, ErrWorkerNotFound)
	assert.EqualError(t, err, "delete worker w1: worker not found")
}

func TestSplitStatements(t *testing.T) {
	got := splitStatements("-- comment\nCREATE TABLE a (x INT);\n\nCREATE INDEX b\n  ON a (x);\n")
	assert.Equal(t, []string{"CREATE TABLE a (x INT);", "CREATE INDEX b\n  ON a (x);"}, got)
}

func TestSavedSessionsAreTakenOnce(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "dtf.db")
	st, err := OpenSQLite(ctx, path)
	require.NoError(t, err)
	require.NoError(t, st.SaveSessions(ctx, []SavedSession{
		{ID: "s-old", WorkerID: "w1", State: []byte("old"), Saved: testNow},
	}))
	saved := []SavedSession{
		{ID: "s-2", WorkerID: "w2", State: []byte{0, 1, 2}, Saved: testNow},
		{ID: "s-1", WorkerID: "w1", State: []byte("state"), Saved: testNow},
	}
	require.NoError(t, st.SaveSessions(ctx, saved), "a second save replaces the first")
	require.NoError(t, st.Close())

	st = openTestStore(t, path)
	taken, err := st.TakeSessions(ctx)
	require.NoError(t, err)
	assert.Equal(t, []SavedSession{saved[1], saved[0]}, taken)

	again, err := st.TakeSessions(ctx)
	require.NoError(t, err)
	assert.Empty(t, again, "a saved session is restored at most once")

	err = st.SaveSessions(ctx, []SavedSession{{ID: "s-3", WorkerID: ""}})
	assert.ErrorContains(t, err, "worker id")
}

func TestWriteProbeFailsOnReadOnlyStore(t *testing.T) {
	// Tests run as root, who may write any file, so the read-only case
	// opens the store in SQLite's read-only mode: the same state SQLite
	// falls back to for a file its user may not write.
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "coordinator.db")
	st, err := OpenSQLite(ctx, path)
	require.NoError(t, err)
	require.NoError(t, probeWrite(ctx, st.write))
	require.NoError(t, st.Close())

	ro, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	require.NoError(t, err)
	defer ro.Close()
	err = probeWrite(ctx, ro)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "readonly")
}

// The store holds credential verifiers and token hashes, so a new store
// file and its WAL are readable by their owner only, and an existing file
// that others could read loses those permissions.
func TestStoreFileReadableByOwnerOnly(t *testing.T) {
	dir := t.TempDir()
	fresh := filepath.Join(dir, "fresh.db")
	s, err := OpenSQLite(context.Background(), fresh)
	require.NoError(t, err)
	require.NoError(t, s.SaveSessions(context.Background(), nil))
	for _, path := range []string{fresh, fresh + "-wal"} {
		info, err := os.Stat(path)
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o600), info.Mode().Perm(), path)
	}
	require.NoError(t, s.Close())

	open := filepath.Join(dir, "open.db")
	require.NoError(t, os.WriteFile(open, nil, 0o644))
	s, err = OpenSQLite(context.Background(), open)
	require.NoError(t, err)
	require.NoError(t, s.Close())
	info, err := os.Stat(open)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), info.Mode().Perm())
}
