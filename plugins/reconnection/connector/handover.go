package connector

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/dtf-io/dtf/plugin/pb"
	"github.com/dtf-io/dtf/protocol"
	wirepb "github.com/dtf-io/dtf/protocol/pb"
)

// errExported ends the connection loop of a plugin whose session was
// handed over to a successor process.
var errExported = errors.New("session handed over to a new plugin process")

// Export implements the live-session handover of connector API version 2.
// It stops the connection loop without a WebSocket close frame, so that the
// coordinator keeps the session, and returns the session's sequence state,
// its unacknowledged frames and the frames still in the send queue. Every
// frame received in order before the stop is on the Events stream, which
// ends after them. Send fails with Unavailable from the start of the call.
func (c *Connector) Export(ctx context.Context, _ *pb.Empty) (*pb.SessionHandover, error) {
	c.mu.Lock()
	loop := c.loop
	c.mu.Unlock()
	if loop == nil {
		return nil, status.Error(codes.FailedPrecondition, "no Events stream open, so no session to export")
	}

	loop.link.startExport()
	loop.cancel(errExported)
	select {
	case <-loop.done:
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}

	handover, err := loop.link.export()
	if err != nil {
		return nil, status.Errorf(codes.Internal, "export session: %v", err)
	}
	c.log.Info("session exported for a new plugin process", "session_id", handover.GetSessionId(),
		"next_seq", handover.GetNextSeq(), "received", handover.GetReceived(),
		"unacknowledged", len(handover.GetUnacknowledged()), "queued", len(handover.GetQueued()))
	return handover, nil
}

// startExport makes Send fail from now on and makes the reader deliver the
// frame that it holds even after its connection ended, because the
// exported state counts that frame as received.
func (l *link) startExport() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open = false
	l.exporting = true
}

// isExporting reports whether Export stopped the loop.
func (l *link) isExporting() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.exporting
}

// export returns the link's session state after the loop ended. The queue
// is emptied in the order in which the writer would have sent its frames.
func (l *link) export() (*pb.SessionHandover, error) {
	l.mu.Lock()
	state, sessionID := l.window.State(), l.sessionID
	l.mu.Unlock()

	handover := &pb.SessionHandover{
		SessionId: sessionID,
		NextSeq:   state.NextSeq,
		Received:  state.Received,
	}
	for _, frame := range state.Unacked {
		data, err := proto.Marshal(frame)
		if err != nil {
			return nil, fmt.Errorf("marshal unacknowledged frame %d: %w", frame.GetSeq(), err)
		}
		handover.Unacknowledged = append(handover.Unacknowledged, data)
	}
	for {
		frame, _ := l.queue.Pop()
		if frame == nil {
			break
		}
		// A queued frame is a relayed frame (see relayedFrame) without a
		// sequence number, so this encoding is the host's bytes again.
		data, err := protocol.Codec{}.EncodeStamped(0, 0, frame.ProtoReflect().GetUnknown(), "task")
		if err != nil {
			return nil, fmt.Errorf("encode queued frame: %w", err)
		}
		handover.Queued = append(handover.Queued, data)
	}
	return handover, nil
}

// restoredLink returns the link of an Events stream that continues the
// exported session in handover. The window continues its numbering and the
// send queue holds the queued frames. Send queues frames from the start, as
// it would have in the exporting plugin. A handover without a session id
// yields a new link.
func restoredLink(cfg *Config, handover *pb.SessionHandover) (*link, error) {
	l := newLink(cfg)
	if handover == nil || handover.GetSessionId() == "" {
		return l, nil
	}
	state := protocol.WindowState{NextSeq: handover.GetNextSeq(), Received: handover.GetReceived()}
	for i, data := range handover.GetUnacknowledged() {
		frame := &wirepb.Frame{}
		if err := proto.Unmarshal(data, frame); err != nil {
			return nil, fmt.Errorf("unacknowledged frame %d of the handover: %w", i, err)
		}
		state.Unacked = append(state.Unacked, frame)
	}
	window, err := protocol.RestoreWindow(cfg.ReplayFrames, cfg.ReplayBytes, state)
	if err != nil {
		return nil, fmt.Errorf("handover of session %s: %w", handover.GetSessionId(), err)
	}
	for i, data := range handover.GetQueued() {
		frame, frameType, err := parseTaskFrame(cfg, data)
		if err != nil {
			return nil, fmt.Errorf("queued frame %d of the handover: %w", i, err)
		}
		// The queue's capacity may be smaller than the predecessor's, and
		// these frames were accepted already, so they go in regardless.
		l.queue.pushAccepted(priorityOf(frameType), frame)
	}
	l.window = window
	l.sessionID = handover.GetSessionId()
	l.open = true
	return l, nil
}

// pushAccepted appends a frame that an earlier process accepted, beyond the
// level's capacity if need be.
func (q *sendQueue) pushAccepted(level Priority, frame *wirepb.Frame) {
	q.mu.Lock()
	q.levels[level] = append(q.levels[level], frame)
	q.mu.Unlock()
	q.signal()
}

// checkHandover validates the resume state of a Configure call, so that a
// bad handover fails Configure rather than the Events stream.
func checkHandover(cfg *Config, handover *pb.SessionHandover) error {
	_, err := restoredLink(cfg, handover)
	return err
}
