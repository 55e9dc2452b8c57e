package protocol

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/protocol/pb"
)

func progressFrame() *pb.Frame {
	return &pb.Frame{Body: &pb.Frame_TaskProgress{TaskProgress: &pb.TaskProgress{Message: "step"}}}
}

func TestWindowNumbersAndReplays(t *testing.T) {
	w := NewWindow(0, 0)
	for range 5 {
		require.NoError(t, w.Add(progressFrame()))
	}
	require.NoError(t, w.Acknowledge(3))

	replay := w.Unacknowledged()
	require.Len(t, replay, 2)
	assert.Equal(t, uint64(4), replay[0].GetSeq())
	assert.Equal(t, uint64(5), replay[1].GetSeq())
}

func TestWindowSkipsSessionFrames(t *testing.T) {
	w := NewWindow(0, 0)
	hb := &pb.Frame{Body: &pb.Frame_Heartbeat{Heartbeat: &pb.Heartbeat{}}}
	require.NoError(t, w.Add(hb))
	assert.Zero(t, hb.GetSeq())
	frames, _ := w.Pending()
	assert.Zero(t, frames)
}

func TestWindowReceiveDropsDuplicates(t *testing.T) {
	w := NewWindow(0, 0)
	cases := []struct {
		seq  uint64
		news bool
		gap  bool
	}{
		{1, true, false}, {2, true, false}, {2, false, false}, {1, false, false},
		{0, true, false}, {3, true, false}, {5, false, true},
	}
	for _, c := range cases {
		fresh, err := w.Receive(&pb.Frame{Seq: c.seq})
		assert.Equal(t, c.news, fresh, "seq %d", c.seq)
		if c.gap {
			assert.ErrorIs(t, err, ErrSequenceGap, "seq %d", c.seq)
		} else {
			assert.NoError(t, err, "seq %d", c.seq)
		}
	}
	assert.Equal(t, uint64(3), w.Received())
}

func TestWindowFullAppliesBackpressure(t *testing.T) {
	w := NewWindow(2, 0)
	require.NoError(t, w.Add(progressFrame()))
	require.NoError(t, w.Add(progressFrame()))
	assert.ErrorIs(t, w.Add(progressFrame()), ErrReplayFull)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	assert.ErrorIs(t, w.WaitRoom(ctx), context.DeadlineExceeded)

	done := make(chan error, 1)
	go func() { done <- w.WaitRoom(context.Background()) }()
	require.NoError(t, w.Acknowledge(1))
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("WaitRoom did not return after an acknowledgement")
	}
	require.NoError(t, w.Add(progressFrame()))
}

func TestWindowTakesOneOversizedFrame(t *testing.T) {
	w := NewWindow(0, 10)
	big := &pb.Frame{Body: &pb.Frame_TaskOutcome{TaskOutcome: &pb.TaskOutcome{Output: make([]byte, 100)}}}
	require.NoError(t, w.Add(big), "an empty buffer accepts any frame, or it could never be sent")
	assert.ErrorIs(t, w.Add(progressFrame()), ErrReplayFull)
}

func TestWindowStateRoundTrip(t *testing.T) {
	w := NewWindow(0, 0)
	for range 5 {
		require.NoError(t, w.Add(progressFrame()))
	}
	require.NoError(t, w.Acknowledge(2))
	_, err := w.Receive(&pb.Frame{Seq: 1, Body: progressFrame().GetBody()})
	require.NoError(t, err)

	restored, err := RestoreWindow(0, 0, w.State())
	require.NoError(t, err)
	assert.Equal(t, uint64(1), restored.Received())
	frames, bytes := restored.Pending()
	wantFrames, wantBytes := w.Pending()
	assert.Equal(t, wantFrames, frames)
	assert.Equal(t, wantBytes, bytes)

	next := progressFrame()
	require.NoError(t, restored.Add(next))
	assert.Equal(t, uint64(6), next.GetSeq(), "numbering continues after the restored frames")
	require.NoError(t, restored.Acknowledge(6))
	frames, _ = restored.Pending()
	assert.Zero(t, frames)
}

func TestRestoreWindowRejectsBrokenState(t *testing.T) {
	kept := progressFrame()
	kept.Seq = 3
	_, err := RestoreWindow(0, 0, WindowState{NextSeq: 5, Unacked: []*pb.Frame{kept}})
	assert.ErrorContains(t, err, "sequence number 3, expected 4")

	_, err = RestoreWindow(0, 0, WindowState{})
	assert.ErrorContains(t, err, "next sequence number 0")

	heartbeat := &pb.Frame{Seq: 4, Body: &pb.Frame_Heartbeat{Heartbeat: &pb.Heartbeat{}}}
	_, err = RestoreWindow(0, 0, WindowState{NextSeq: 5, Unacked: []*pb.Frame{heartbeat}})
	assert.ErrorContains(t, err, "never replayed")
}

func TestWindowByteCountReturnsToZero(t *testing.T) {
	w := NewWindow(0, 0)
	for range 300 {
		frame := progressFrame()
		require.NoError(t, w.Add(frame))
		frame.Ack = 1 << 40 // a writer stamping the shared frame
	}
	require.NoError(t, w.Acknowledge(300))
	frames, bytes := w.Pending()
	assert.Zero(t, frames)
	assert.Zero(t, bytes, "the byte count drifted")
}

func TestAcknowledgePastSentDropsNothing(t *testing.T) {
	w := NewWindow(0, 0)
	for range 3 {
		require.NoError(t, w.Add(progressFrame()))
	}
	err := w.Acknowledge(4)
	require.ErrorIs(t, err, ErrAckPastSent)
	assert.Contains(t, err.Error(), "acknowledgement 4, last frame sent 3")
	frames, _ := w.Pending()
	assert.Equal(t, 3, frames)
	require.NoError(t, w.Acknowledge(3))
}

func TestWindowCheckThenCommit(t *testing.T) {
	w := NewWindow(0, 0)
	frame := func(seq uint64) *pb.Frame { return &pb.Frame{Seq: seq} }

	isNew, err := w.Check(frame(1))
	require.NoError(t, err)
	assert.True(t, isNew)
	assert.Zero(t, w.Received(), "Check must not record the frame")

	isNew, err = w.Check(frame(1))
	require.NoError(t, err)
	assert.True(t, isNew, "an uncommitted frame is still new when it comes again")

	w.Commit(1)
	assert.EqualValues(t, 1, w.Received())
	isNew, err = w.Check(frame(1))
	require.NoError(t, err)
	assert.False(t, isNew, "a committed frame is a duplicate")

	_, err = w.Check(frame(3))
	assert.ErrorIs(t, err, ErrSequenceGap)
	w.Commit(3)
	assert.EqualValues(t, 1, w.Received(), "Commit skips a frame out of order")
}
