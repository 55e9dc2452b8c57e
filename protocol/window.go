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

// ErrAckPastSent is returned by Window.Acknowledge for an acknowledgement
// of a frame that was never numbered.
var ErrAckPastSent = errors.New("acknowledgement past the last frame sent")

// ErrSequenceGap is returned by Window.Receive for a frame whose sequence
// number skips ahead. WebSocket over TCP never reorders frames within a
// connection, so a gap means the peer broke the protocol.
var ErrSequenceGap = errors.New("sequence gap")

// Sequenced reports whether frames of the body type carry a sequence number
// and are replayed after a resume. Session frames are not: they belong to
// one connection. A frame whose body this build does not know, such as a
// relayed frame that keeps its body as bytes, is sequenced.
func Sequenced(frame *pb.Frame) bool {
	return !SessionTypes[TypeOf(frame)]
}

// Window is the sequence state of one side of a session: numbering and
// replay buffer of the frames it sends, and the highest in-order sequence
// number it received. It survives reconnects of the same session. It is safe
// for concurrent use.
type Window struct {
	mu      sync.Mutex
	nextSeq uint64
	unacked []*pb.Frame
	// sizes are the sizes of the kept frames as counted when they were
	// added, so that a caller changing a kept frame's ack field cannot make
	// the byte count drift.
	sizes     []int
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
	w.mu.Lock()
	defer w.mu.Unlock()
	frame.Seq = w.nextSeq
	size := proto.Size(frame)
	if len(w.unacked) > 0 && (len(w.unacked)+1 > w.maxFrames || w.bytes+size > w.maxBytes) {
		frame.Seq = 0
		return fmt.Errorf("%w: %d frames, %d bytes unacknowledged", ErrReplayFull, len(w.unacked), w.bytes)
	}
	w.nextSeq++
	w.unacked = append(w.unacked, frame)
	w.sizes = append(w.sizes, size)
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

// Acknowledge drops every kept frame up to and including seq. It returns
// ErrAckPastSent, and drops nothing, when seq names a frame never numbered:
// a peer that believes so has a wrong record of the session.
func (w *Window) Acknowledge(seq uint64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if sent := w.nextSeq - 1; seq > sent {
		return fmt.Errorf("%w: acknowledgement %d, last frame sent %d", ErrAckPastSent, seq, sent)
	}
	dropped := 0
	for dropped < len(w.unacked) && w.unacked[dropped].GetSeq() <= seq {
		w.bytes -= w.sizes[dropped]
		dropped++
	}
	if dropped == 0 {
		return nil
	}
	clear(w.unacked[:dropped])
	w.unacked = w.unacked[dropped:]
	w.sizes = w.sizes[dropped:]
	close(w.room)
	w.room = make(chan struct{})
	return nil
}

// Sent returns the highest sequence number given to a frame, 0 before the
// first. A peer's acknowledgement above it names a frame never sent.
func (w *Window) Sent() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.nextSeq - 1
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

// Check classifies an incoming frame as Receive does, without recording
// it: true for the next frame in sequence or one without a sequence
// number, false for a duplicate, ErrSequenceGap for a gap. A receiver that
// must hand the frame on before it may acknowledge it calls Commit after
// the hand-off, so that a frame lost on the way is never acknowledged and
// a resumed session replays it.
func (w *Window) Check(frame *pb.Frame) (bool, error) {
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
		return true, nil
	default:
		return false, fmt.Errorf("%w: got %d, expected %d", ErrSequenceGap, seq, w.received+1)
	}
}

// Commit records frame seq, which Check accepted, as received. It does
// nothing for seq 0 or for a seq that is not the next in order, as when
// another Commit got there first.
func (w *Window) Commit(seq uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if seq != 0 && seq == w.received+1 {
		w.received = seq
	}
}

// Received returns the highest in-order sequence number received, the value
// to send as ack.
func (w *Window) Received() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.received
}

// WindowState is the sequence state of a Window, as saved by a sender that
// stops and restored by the process that continues the session: a
// coordinator that restarts, or a new reconnection plugin taking over.
type WindowState struct {
	// NextSeq is the sequence number of the next frame to send.
	NextSeq uint64
	// Received is the highest in-order sequence number received.
	Received uint64
	// Unacked are the kept frames in sequence order, with their numbers.
	Unacked []*pb.Frame
}

// State returns a copy of the window's sequence state. The frames are
// shared with the window.
func (w *Window) State() WindowState {
	w.mu.Lock()
	defer w.mu.Unlock()
	return WindowState{
		NextSeq:  w.nextSeq,
		Received: w.received,
		Unacked:  append([]*pb.Frame(nil), w.unacked...),
	}
}

// RestoreWindow returns a window that continues from state, with the given
// bounds. The kept frames must be sequenced, numbered consecutively and end
// just before NextSeq. A restored window may hold more than its bounds when
// they shrank; it then takes no new frame until acknowledgements free room.
func RestoreWindow(maxFrames, maxBytes int, state WindowState) (*Window, error) {
	if state.NextSeq == 0 {
		return nil, errors.New("restore window: next sequence number 0; the first frame is 1")
	}
	w := NewWindow(maxFrames, maxBytes)
	w.nextSeq = state.NextSeq
	w.received = state.Received
	first := state.NextSeq - uint64(len(state.Unacked))
	for i, frame := range state.Unacked {
		if !Sequenced(frame) {
			return nil, fmt.Errorf("restore window: kept frame %d is a %s frame, which is never replayed",
				i, TypeOf(frame))
		}
		if want := first + uint64(i); frame.GetSeq() != want {
			return nil, fmt.Errorf("restore window: kept frame %d has sequence number %d, expected %d",
				i, frame.GetSeq(), want)
		}
		size := proto.Size(frame)
		w.sizes = append(w.sizes, size)
		w.bytes += size
	}
	w.unacked = append([]*pb.Frame(nil), state.Unacked...)
	return w, nil
}
