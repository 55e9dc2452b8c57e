package protocol

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/dtf-io/dtf/protocol/pb"
)

// Default bounds of a replay buffer. They hold the frames a peer has not
// acknowledged yet; with acknowledgements at least once per heartbeat they
// only fill while the link is down.
const (
	DefaultReplayFrames = 4096
	DefaultReplayBytes  = 16 << 20
)

// ErrReplayFull is returned by Window.Add when the replay buffer has no room;
// the sender must wait (Window.WaitRoom) instead of dropping the frame.
var ErrReplayFull = errors.New("replay buffer full")

// ErrSequenceGap is returned by Window.Receive for a frame whose sequence
// number skips ahead. WebSocket over TCP never reorders frames within a
// connection, so a gap means the peer broke the protocol.
var ErrSequenceGap = errors.New("sequence gap")

// Sequenced reports whether frames of the body type carry a sequence number
// and are replayed after a resume. Session frames are not: they belong to
// one connection.
func Sequenced(frame *pb.Frame) bool {
	return !SessionTypes[TypeOf(frame)]
}

// Window is the sequence state of one side of a session: numbering and
// replay buffer of the frames it sends, and the highest in-order sequence
// number it received. It survives reconnects of the same session. It is safe
// for concurrent use.
type Window struct {
	mu        sync.Mutex
	nextSeq   uint64
	unacked   []*pb.Frame
	bytes     int
	received  uint64
	maxFrames int
	maxBytes  int
	// room is closed and replaced whenever acknowledgements free space.
	room chan struct{}
}

// NewWindow returns an empty window; zero bounds take the defaults.
func NewWindow(maxFrames, maxBytes int) *Window {
	return &Window{
		nextSeq:   1,
		maxFrames: orDefault(maxFrames, DefaultReplayFrames),
		maxBytes:  orDefault(maxBytes, DefaultReplayBytes),
		room:      make(chan struct{}),
	}
}

// Add numbers a sequenced frame and keeps it for replay until the peer
// acknowledges it. A frame that is not sequenced is left alone. When the
// buffer has no room it returns ErrReplayFull and changes nothing.
func (w *Window) Add(frame *pb.Frame) error {
	if !Sequenced(frame) {
		return nil
	}
	size := proto.Size(frame)
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.unacked) > 0 && (len(w.unacked)+1 > w.maxFrames || w.bytes+size > w.maxBytes) {
		return fmt.Errorf("%w: %d frames, %d bytes unacknowledged", ErrReplayFull, len(w.unacked), w.bytes)
	}
	frame.Seq = w.nextSeq
	w.nextSeq++
	w.unacked = append(w.unacked, frame)
	w.bytes += size
	return nil
}

// WaitRoom blocks until an acknowledgement frees space or ctx ends.
func (w *Window) WaitRoom(ctx context.Context) error {
	w.mu.Lock()
	room := w.room
	full := len(w.unacked) >= w.maxFrames || w.bytes >= w.maxBytes
	w.mu.Unlock()
	if !full {
		return nil
	}
	select {
	case <-room:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Acknowledge drops every kept frame up to and including seq.
func (w *Window) Acknowledge(seq uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	dropped := 0
	for dropped < len(w.unacked) && w.unacked[dropped].GetSeq() <= seq {
		w.bytes -= proto.Size(w.unacked[dropped])
		dropped++
	}
	if dropped == 0 {
		return
	}
	clear(w.unacked[:dropped])
	w.unacked = w.unacked[dropped:]
	close(w.room)
	w.room = make(chan struct{})
}

// Unacknowledged returns the kept frames in sequence order, for replay after
// a resume. The frames are shared; callers set only their ack field.
func (w *Window) Unacknowledged() []*pb.Frame {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]*pb.Frame(nil), w.unacked...)
}

// Pending returns the number and total size of unacknowledged frames.
func (w *Window) Pending() (frames, bytes int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.unacked), w.bytes
}

// Receive checks an incoming frame's sequence number. It returns true when
// the frame is new and must be handled, false for a duplicate of a frame
// already received, and ErrSequenceGap when frames are missing before it.
// Frames that are not sequenced are always new.
func (w *Window) Receive(frame *pb.Frame) (bool, error) {
	seq := frame.GetSeq()
	if seq == 0 {
		return true, nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case seq <= w.received:
		return false, nil
	case seq == w.received+1:
		w.received = seq
		return true, nil
	default:
		return false, fmt.Errorf("%w: got %d, expected %d", ErrSequenceGap, seq, w.received+1)
	}
}

// Received returns the highest in-order sequence number received, the value
// to send as ack.
func (w *Window) Received() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.received
}
