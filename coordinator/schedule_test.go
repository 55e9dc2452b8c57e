package coordinator

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/coordinator/api"
	"github.com/dtf-io/dtf/protocol/pb"
)

// connectKind connects a synced command worker with the given slots and
// labels.
func connectKind(t *testing.T, ts *testServer, id string, slots uint32, labels map[string]string) *fakeWorker {
	t.Helper()
	w, first := connectWorker(t, ts, &pb.Hello{WorkerId: id, TaskTypes: []string{"command"}, Slots: slots,
		Labels: labels})
	require.NotNil(t, first.GetWelcome(), "first frame: %v", first)
	w.send(&pb.Frame{Body: &pb.Frame_StateSync{StateSync: &pb.StateSync{}}})
	w.expect("state_sync_result")
	return w
}

// taskStates returns the number of tasks in each state.
func taskStates(t *testing.T, ts *testServer) map[string]int {
	t.Helper()
	var list struct {
		Tasks []api.Task `json:"tasks"`
	}
	require.Equal(t, http.StatusOK, doJSON(t, http.MethodGet, ts.url+"/v1/tasks", nil, &list))
	states := map[string]int{}
	for _, task := range list.Tasks {
		states[task.State]++
	}
	return states
}

func TestScheduleFillsSlotsOfEachKind(t *testing.T) {
	ts := startServer(t, testConfig(t, ""))
	// Two kinds of workers, so two reads of the queue per round, and both
	// match every task below.
	cpu := connectKind(t, ts, "w1-cpu", 2, map[string]string{"os": "linux"})
	gpu := connectKind(t, ts, "w2-gpu", 1, map[string]string{"os": "linux", "gpu": "true"})

	specs := make([]api.TaskSpec, 5)
	for i := range specs {
		specs[i] = commandSpec()
	}
	submitted := submit(t, ts, specs...)
	require.Len(t, submitted.Tasks, 5)

	assigned := map[string]string{}
	record := func(w *fakeWorker, workerID string) *pb.TaskRef {
		ref := w.expect("assign").GetAssign().GetRef()
		assert.Equal(t, uint32(1), ref.GetAttempt())
		_, twice := assigned[ref.GetTaskId()]
		assert.False(t, twice, "task %s assigned twice", ref.GetTaskId())
		assigned[ref.GetTaskId()] = workerID
		return ref
	}
	first := record(cpu, "w1-cpu")
	record(cpu, "w1-cpu")
	record(gpu, "w2-gpu")
	states := taskStates(t, ts)
	assert.Equal(t, 3, states[api.StateRunning], "one running task per slot")
	assert.Equal(t, 2, states[api.StateQueued])

	// A freed slot takes the next queued task.
	cpu.send(outcomeFrame(first, pb.Status_STATUS_SUCCEEDED))
	cpu.expect("outcome_ack")
	record(cpu, "w1-cpu")
	states = taskStates(t, ts)
	assert.Equal(t, 1, states[api.StateSucceeded])
	assert.Equal(t, 3, states[api.StateRunning])
	assert.Equal(t, 1, states[api.StateQueued])
	assert.Len(t, assigned, 4)
	assert.Empty(t, gpu.frames, "the worker with one slot got no second task")
}
