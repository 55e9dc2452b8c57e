package coordinator

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/coordinator/api"
)

// TestForgetWorkerWithSession checks that a worker with a session, attached
// or waiting for a resume, is not forgotten.
func TestForgetWorkerWithSession(t *testing.T) {
	ts := startServer(t, testConfig(t, ""))
	url := ts.url + "/v1/workers/w1"
	var apiErr api.Error

	w, _ := connectSynced(t, ts, "w1", []string{"command"})
	require.Equal(t, http.StatusConflict, doJSON(t, http.MethodDelete, url, nil, &apiErr))
	assert.Contains(t, apiErr.Error, `worker "w1" is connected; stop the worker and wait workers.session_ttl`)

	w.close()
	require.Eventually(t, func() bool { return ts.Stats().DetachedSessions == 1 }, waitFor, 10*time.Millisecond)
	apiErr = api.Error{}
	require.Equal(t, http.StatusConflict, doJSON(t, http.MethodDelete, url, nil, &apiErr))
	assert.Contains(t, apiErr.Error, `worker "w1" is away, but its session waits for a resume`)
}

// TestForgetDrainedWorker checks that a worker that left after a drain,
// with the worker-stopping close, keeps no session and is forgotten at
// once.
func TestForgetDrainedWorker(t *testing.T) {
	ts := startServer(t, testConfig(t, ""))
	w := connectDraining(t, ts, "w1")
	w.close()
	require.Eventually(t, func() bool { return workerViewState(t, ts, "w1") == api.WorkerDrained },
		waitFor, 10*time.Millisecond)
	assert.Nil(t, ts.sessionFor("w1"), "the session of a worker that left after its drain ends at once")
	assert.Zero(t, ts.Stats().DetachedSessions)

	require.Equal(t, http.StatusNoContent, doJSON(t, http.MethodDelete, ts.url+"/v1/workers/w1", nil, nil))
}

// TestForgetWorker checks that a worker whose session expired is forgotten
// once it holds no running attempt, and is unknown after that.
func TestForgetWorker(t *testing.T) {
	cfg := testConfig(t, "")
	cfg.Workers.SessionTTL = 200 * time.Millisecond
	ts := startServer(t, cfg)
	url := ts.url + "/v1/workers/w1"
	var apiErr api.Error

	w, _ := connectSynced(t, ts, "w1", []string{"command"})
	task := submit(t, ts, commandSpec()).Tasks[0]
	w.expect("assign")
	w.close()

	require.Eventually(t, func() bool { return ts.sessionFor("w1") == nil }, waitFor, 10*time.Millisecond,
		"the session expires after session_ttl")
	require.Equal(t, http.StatusConflict, doJSON(t, http.MethodDelete, url, nil, &apiErr))
	assert.Contains(t, apiErr.Error, `worker "w1" still has running attempts (1)`)

	require.Equal(t, http.StatusOK, doJSON(t, http.MethodPost, ts.url+"/v1/tasks/"+task.ID+"/cancel", nil, nil))
	require.Equal(t, http.StatusNoContent, doJSON(t, http.MethodDelete, url, nil, nil))

	var list struct{ Workers []api.Worker }
	require.Equal(t, http.StatusOK, doJSON(t, http.MethodGet, ts.url+"/v1/workers", nil, &list))
	assert.Empty(t, list.Workers)
	_, ok := ts.fleet.timeline("w1", time.Now())
	assert.False(t, ok, "the history is dropped")
	ts.mu.Lock()
	assert.NotContains(t, ts.workers, "w1", "the in-memory state is dropped")
	ts.mu.Unlock()
	assert.Equal(t, "w1", getTask(t, ts, task.ID).WorkerID, "the task still names its worker")

	apiErr = api.Error{}
	require.Equal(t, http.StatusNotFound, doJSON(t, http.MethodDelete, url, nil, &apiErr))
	assert.Contains(t, apiErr.Error, `worker "w1" not found`)
}
