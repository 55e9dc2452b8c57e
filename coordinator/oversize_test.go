package coordinator

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/coordinator/api"
	"github.com/dtf-io/dtf/protocol/pb"
	"github.com/dtf-io/dtf/test/cluster"
)

// A task whose Assign is larger than the worker reads fails with a message
// that names the limit, instead of being sent: a worker that received it
// would drop the connection, and every resume would replay the frame.
func TestAssignOverWorkerFrameLimitFailsTask(t *testing.T) {
	ts := startServer(t, testConfig(t, t.TempDir()))
	const limit = 64 << 10
	w, first := connectWorker(t, ts, &pb.Hello{WorkerId: "small", TaskTypes: []string{"command"}, Slots: 1,
		MaxFrameBytes: limit})
	require.NotNil(t, first.GetWelcome(), "first frame: %v", first)
	w.send(&pb.Frame{Body: &pb.Frame_StateSync{StateSync: &pb.StateSync{}}})
	w.expect("state_sync_result")

	big := api.TaskSpec{Type: "command",
		Payload: json.RawMessage(`{"argv":["true"],"pad":"` + strings.Repeat("x", limit) + `"}`)}
	id := submit(t, ts, big).Tasks[0].ID
	err := cluster.Poll(context.Background(), waitFor, 10*time.Millisecond, func() (bool, error) {
		return getTask(t, ts, id).State == api.StateFailed, nil
	})
	require.NoError(t, err, "the oversized task did not fail")
	task := getTask(t, ts, id)
	require.NotNil(t, task.Outcome)
	assert.Contains(t, task.Outcome.Message, "max_frame_bytes of 65536")

	// The worker never got the big frame and still gets a small task.
	small := submit(t, ts, commandSpec()).Tasks[0].ID
	assign := w.expect("assign").GetAssign()
	assert.Equal(t, small, assign.GetRef().GetTaskId())
}
