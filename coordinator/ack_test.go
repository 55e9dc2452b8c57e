package coordinator

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/protocol/pb"
)

// A worker that streams task frames while the coordinator has nothing to
// send gets its acknowledgements long before the next heartbeat, so its
// replay buffer does not fill.
func TestStreamedFramesAcknowledgedBeforeHeartbeat(t *testing.T) {
	cfg := testConfig(t, "")
	cfg.Workers.HeartbeatInterval = time.Minute
	cfg.Workers.HeartbeatTimeout = 3 * time.Minute
	ts := startServer(t, cfg)
	w := newSeqWorker(t, ts, "w1")
	require.NotNil(t, w.connect().GetWelcome())
	w.sync()
	task := submit(t, ts, commandSpec()).Tasks[0]
	ref := w.expect("assign").GetAssign().GetRef()
	require.Equal(t, task.ID, ref.GetTaskId())

	const frames = 3 * ackEvery
	for i := range frames {
		w.send(&pb.Frame{Body: &pb.Frame_TaskProgress{TaskProgress: &pb.TaskProgress{
			Ref: ref, Message: fmt.Sprintf("line %d", i),
		}}})
	}
	// The progress frames can only be acknowledged by the heartbeats sent
	// every ackEvery frames, because the heartbeat timer fires after a
	// minute and the coordinator has nothing else to send.
	require.Eventually(t, func() bool {
		pending, _ := w.window.Load().Pending()
		return pending < ackEvery
	}, 10*time.Second, 10*time.Millisecond, "the coordinator did not acknowledge streamed frames")
	pending, _ := w.window.Load().Pending()
	assert.Less(t, pending, ackEvery)
}
