package connector

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

	"github.com/dtf-io/dtf/plugin/pb"
	"github.com/dtf-io/dtf/protocol"
	wirepb "github.com/dtf-io/dtf/protocol/pb"
)

func outcomeFrame(t *testing.T, taskID string) []byte {
	t.Helper()
	data, err := protocol.Encode(&wirepb.Frame{Body: &wirepb.Frame_TaskOutcome{TaskOutcome: &wirepb.TaskOutcome{
		Ref:    &wirepb.TaskRef{TaskId: taskID, Attempt: 1},
		Status: wirepb.Status_STATUS_SUCCEEDED,
	}}})
	require.NoError(t, err)
	return data
}

// receiveProgress returns the messages of the next n task_progress frames
// that the fake coordinator receives.
func receiveProgress(t *testing.T, fake *fakeCoordinator, n int) []string {
	t.Helper()
	messages := make([]string, 0, n)
	for len(messages) < n {
		select {
		case frame := <-fake.taskFrame:
			messages = append(messages, frame.GetTaskProgress().GetMessage())
		case <-time.After(waitFor):
			t.Fatalf("the coordinator received %d of %d frames: %v", len(messages), n, messages)
		}
	}
	return messages
}

func sendBatch(t *testing.T, c *Connector, timeoutMs int64, frames ...[]byte) *pb.SendBatchResponse {
	t.Helper()
	resp, err := c.SendBatch(context.Background(), &pb.SendBatchRequest{Frames: frames, TimeoutMs: timeoutMs})
	require.NoError(t, err, "SendBatch reports rejections in its response, never as a call error")
	return resp
}

func TestSendBatchQueuesInOrder(t *testing.T) {
	fake := startFake(t, nil)
	h := startConnector(t, fake.url(), fastConfig)
	h.nextState(StateConnected)

	const count = 40
	frames := make([][]byte, count)
	want := make([]string, count)
	for i := range frames {
		frames[i] = progressFrame(t, "t-1", i)
		want[i] = fmt.Sprintf("step %d", i)
	}
	resp := sendBatch(t, h.connector, 0, frames...)
	assert.Equal(t, uint32(count), resp.GetAccepted())
	assert.Equal(t, uint32(codes.OK), resp.GetErrorCode())
	assert.Empty(t, resp.GetErrorMessage())
	assert.Equal(t, want, receiveProgress(t, fake, count))
}

func TestSendBatchStopsAtInvalidFrame(t *testing.T) {
	fake := startFake(t, nil)
	h := startConnector(t, fake.url(), fastConfig)
	h.nextState(StateConnected)

	for _, tc := range invalidFrames(t) {
		t.Run(tc.name, func(t *testing.T) {
			resp := sendBatch(t, h.connector, 0,
				progressFrame(t, tc.name, 1), progressFrame(t, tc.name, 2), tc.frame, progressFrame(t, tc.name, 3))
			assert.Equal(t, uint32(2), resp.GetAccepted())
			assert.Equal(t, uint32(codes.InvalidArgument), resp.GetErrorCode(), "message %q", resp.GetErrorMessage())

			// The frame after the invalid one was not queued, so the next
			// frame the coordinator receives after the first two is the
			// marker sent now.
			_, err := h.connector.Send(context.Background(), &pb.SendRequest{Frame: progressFrame(t, tc.name, 4)})
			require.NoError(t, err)
			assert.Equal(t, []string{"step 1", "step 2", "step 4"}, receiveProgress(t, fake, 3))
		})
	}
}

func TestSendBatchWithoutSession(t *testing.T) {
	fake := resumableFake(t)
	proxy := startProxy(t, fake.addr())
	proxy.Refuse(true)
	h := startConnector(t, "ws://"+proxy.Addr(), fastConfig)
	h.nextState(StateBackingOff)

	resp := sendBatch(t, h.connector, 0, progressFrame(t, "t-1", 1))
	assert.Equal(t, uint32(0), resp.GetAccepted())
	assert.Equal(t, uint32(codes.Unavailable), resp.GetErrorCode(), "message %q", resp.GetErrorMessage())
}

func TestSendBatchBackpressure(t *testing.T) {
	fake := resumableFake(t)
	proxy := startProxy(t, fake.addr())
	// failure_threshold keeps the circuit breaker closed through the
	// outage, so the session resumes as soon as the proxy lets it.
	config := `{"heartbeat_interval": "50ms", "heartbeat_timeout": "400ms", "backoff_base": "10ms",
		"backoff_cap": "80ms", "send_queue_frames": 4, "send_timeout": "200ms", "failure_threshold": 1000}`
	h := startConnector(t, "ws://"+proxy.Addr(), config)
	h.nextState(StateConnected)

	// While disconnected, accepted frames stay in the send queue.
	proxy.Refuse(true)
	proxy.Cut()
	h.nextState(StateBackingOff)

	progress := func(n int) []byte { return progressFrame(t, "t-1", n) }
	t.Run("send_timeout", func(t *testing.T) {
		start := time.Now()
		resp := sendBatch(t, h.connector, 0, progress(0), progress(1), progress(2), progress(3), progress(4),
			progress(5))
		assert.Equal(t, uint32(4), resp.GetAccepted(), "the progress level holds send_queue_frames")
		assert.Equal(t, uint32(codes.ResourceExhausted), resp.GetErrorCode(), "message %q", resp.GetErrorMessage())
		assert.GreaterOrEqual(t, time.Since(start), 200*time.Millisecond, "SendBatch must wait before it rejects")
		assert.Equal(t, 4, h.connector.Stats().Queued[PriorityProgress])
	})
	t.Run("timeout_ms", func(t *testing.T) {
		start := time.Now()
		resp := sendBatch(t, h.connector, 50, progress(6))
		assert.Equal(t, uint32(0), resp.GetAccepted())
		assert.Equal(t, uint32(codes.DeadlineExceeded), resp.GetErrorCode(), "message %q", resp.GetErrorMessage())
		assert.GreaterOrEqual(t, time.Since(start), 50*time.Millisecond)
	})
	t.Run("order across levels", func(t *testing.T) {
		// An outcome after a rejected progress frame is not queued, although
		// its own level has room.
		resp := sendBatch(t, h.connector, 50, progress(7), outcomeFrame(t, "t-1"))
		assert.Equal(t, uint32(0), resp.GetAccepted())
		assert.Equal(t, 0, h.connector.Stats().Queued[PriorityOutcome])

		resp = sendBatch(t, h.connector, 50, outcomeFrame(t, "t-1"), progress(7))
		assert.Equal(t, uint32(1), resp.GetAccepted())
		assert.Equal(t, uint32(codes.DeadlineExceeded), resp.GetErrorCode(), "message %q", resp.GetErrorMessage())
		assert.Equal(t, 1, h.connector.Stats().Queued[PriorityOutcome])
	})

	// Once the session resumes, the accepted frames arrive in order.
	proxy.Refuse(false)
	resumed := h.nextState(StateConnected)
	require.True(t, resumed.GetResumed())
	var received []string
	for range 5 {
		select {
		case frame := <-fake.taskFrame:
			received = append(received, protocol.TypeOf(frame)+" "+frame.GetTaskProgress().GetMessage())
		case <-time.After(waitFor):
			t.Fatalf("the coordinator received only %v", received)
		}
	}
	assert.Equal(t, []string{"task_outcome ", "task_progress step 0", "task_progress step 1",
		"task_progress step 2", "task_progress step 3"}, received)
}
