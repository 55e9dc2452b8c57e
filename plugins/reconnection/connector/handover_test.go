package connector

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/dtf-io/dtf/plugin/pb"
	"github.com/dtf-io/dtf/protocol"
	wirepb "github.com/dtf-io/dtf/protocol/pb"
)

func handoverConfig(t *testing.T) *Config {
	t.Helper()
	cfg, err := ParseConfig(&pb.ConnectorConfig{Url: "ws://127.0.0.1:1", WorkerId: "w1"})
	require.NoError(t, err)
	return cfg
}

// TestLinkExportRestoresSameState numbers two frames into the window,
// queues a third, exports the link and restores it, as a successor
// process does, and checks that numbering, acknowledgement and frames
// carry over.
func TestLinkExportRestoresSameState(t *testing.T) {
	cfg := handoverConfig(t)
	old := newLink(cfg)
	old.sessionID = "s-1"
	for i := range 2 {
		frame, _, err := parseTaskFrame(cfg, progressFrame(t, "t1", i))
		require.NoError(t, err)
		require.NoError(t, old.window.Add(frame))
	}
	_, err := old.window.Receive(&wirepb.Frame{Seq: 1})
	require.NoError(t, err)
	queued, frameType, err := parseTaskFrame(cfg, progressFrame(t, "t1", 2))
	require.NoError(t, err)
	require.NoError(t, old.queue.Push(context.Background(), priorityOf(frameType), queued))

	old.startExport()
	assert.False(t, old.isOpen(), "Send must fail once the export started")
	handover, err := old.export()
	require.NoError(t, err)
	assert.Equal(t, "s-1", handover.GetSessionId())
	assert.EqualValues(t, 3, handover.GetNextSeq())
	assert.EqualValues(t, 1, handover.GetReceived())
	require.Len(t, handover.GetUnacknowledged(), 2)
	require.Len(t, handover.GetQueued(), 1)
	assert.Equal(t, progressFrame(t, "t1", 2), handover.GetQueued()[0])

	// The handover passes through gRPC as bytes.
	data, err := proto.Marshal(handover)
	require.NoError(t, err)
	received := &pb.SessionHandover{}
	require.NoError(t, proto.Unmarshal(data, received))

	restored, err := restoredLink(cfg, received)
	require.NoError(t, err)
	assert.True(t, restored.isOpen(), "a restored link queues Sends before its welcome")
	window, sessionID := restored.resumePoint()
	assert.Equal(t, "s-1", sessionID)
	assert.EqualValues(t, 1, window.Received())
	assert.EqualValues(t, 2, window.Sent())
	unacked := window.Unacknowledged()
	require.Len(t, unacked, 2)
	assert.EqualValues(t, 1, unacked[0].GetSeq())
	assert.Equal(t, "task_progress", protocol.TypeOf(unacked[1]))
	assert.Equal(t, 1, restored.queue.Queued())
}

func TestRestoredLinkRejectsBadHandover(t *testing.T) {
	cfg := handoverConfig(t)
	_, err := restoredLink(cfg, &pb.SessionHandover{SessionId: "s-1", NextSeq: 0})
	assert.ErrorContains(t, err, "next sequence number 0")

	_, err = restoredLink(cfg, &pb.SessionHandover{SessionId: "s-1", NextSeq: 5, Unacknowledged: [][]byte{{0xff}}})
	assert.ErrorContains(t, err, "unacknowledged frame 0 of the handover")

	fresh, err := restoredLink(cfg, &pb.SessionHandover{})
	require.NoError(t, err)
	assert.False(t, fresh.isOpen(), "a handover without a session starts a new one")
}
