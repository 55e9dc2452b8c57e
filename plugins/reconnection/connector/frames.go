package connector

import (
	"fmt"
	"maps"
	"time"

	"github.com/dtf-io/dtf/protocol"
	"github.com/dtf-io/dtf/protocol/pb"
)

// frameHandler handles one inbound session frame. A returned error ends the
// connection.
type frameHandler func(s *session, frame *pb.Frame) error

// sessionHandlers are the inbound session frames that the plugin handles
// itself, by type name. Every other known type is a task frame and goes to
// the worker host.
var sessionHandlers = map[string]frameHandler{
	"welcome":   (*session).onWelcome,
	"reject":    (*session).onReject,
	"heartbeat": (*session).onHeartbeat,
	"hello":     (*session).onHello,
}

// HandledTypes returns the frame types that the plugin handles itself when
// the coordinator sends them. A test checks that it covers every session
// type that the coordinator sends.
func HandledTypes() map[string]bool {
	types := make(map[string]bool, len(sessionHandlers))
	for name := range maps.Keys(sessionHandlers) {
		types[name] = true
	}
	return types
}

// dispatch routes one decoded inbound frame; data is its encoding.
func (s *session) dispatch(frame *pb.Frame, data []byte) error {
	frameType := protocol.TypeOf(frame)
	if handle, ok := sessionHandlers[frameType]; ok {
		return handle(s, frame)
	}
	if frameType == protocol.TypeUnknown {
		s.hooks.unknown(s)
		return nil
	}
	if !s.isWelcomed.Load() {
		return fmt.Errorf("coordinator sent a %s frame before welcome; check that it speaks %s",
			frameType, protocol.Subprotocol)
	}
	s.hooks.forward(s, data)
	return nil
}

func (s *session) onWelcome(frame *pb.Frame) error {
	if s.isWelcomed.Load() {
		s.log.Warn("ignoring a second welcome on the same connection", "session_id", s.id)
		return nil
	}
	welcome := frame.GetWelcome()
	s.id = welcome.GetSessionId()
	// Only the reader goroutine logs through s.log, so it may be replaced
	// here.
	s.log = s.log.With("session_id", s.id)

	// The coordinator expects a frame at least every interval it announces,
	// so a shorter announced interval wins over the configured one.
	if announced := time.Duration(welcome.GetHeartbeatIntervalMs()) * time.Millisecond; announced > 0 &&
		announced < s.interval {
		s.interval = announced
	}
	s.isWelcomed.Store(true)
	close(s.welcomed)
	return nil
}

func (s *session) onReject(frame *pb.Frame) error {
	reject := frame.GetReject()
	return &RejectError{
		Code:       reject.GetCode(),
		Message:    reject.GetMessage(),
		RetryAfter: time.Duration(reject.GetRetryAfterMs()) * time.Millisecond,
	}
}

// onHeartbeat measures the round-trip time from a reply to the worker's own
// heartbeat, and replies to a heartbeat of the coordinator.
func (s *session) onHeartbeat(frame *pb.Frame) error {
	heartbeat := frame.GetHeartbeat()
	now := time.Now()
	if heartbeat.GetReply() {
		// The echo is this process's own wall clock, so no clock offset
		// enters the sample. A sample beyond the heartbeat timeout comes
		// from a clock step and is dropped.
		sample := time.Duration(now.UnixNano() - heartbeat.GetEchoUnixNano())
		if sample > 0 && sample <= s.cfg.HeartbeatTimeout {
			s.rtt.observe(sample)
		}
		return nil
	}
	s.queueFrame(&pb.Frame{Body: &pb.Frame_Heartbeat{Heartbeat: &pb.Heartbeat{
		SentUnixNano: now.UnixNano(),
		Reply:        true,
		EchoUnixNano: heartbeat.GetSentUnixNano(),
	}}})
	return nil
}

// onHello ignores a Hello, which only workers send, so that a confused peer
// is visible in the log without ending the connection.
func (s *session) onHello(*pb.Frame) error {
	s.log.Warn("ignoring a hello frame from the coordinator; only workers send hello")
	return nil
}
