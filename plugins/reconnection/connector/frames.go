package connector

import (
	"errors"
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
	"challenge": (*session).onChallenge,
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

// dispatch routes one decoded inbound frame; data is its encoding. After
// Welcome every frame first passes the session window: a duplicate from a
// replay is counted and dropped, a gap in the sequence ends the connection,
// and the frame's ack drops acknowledged frames from the replay buffer.
//
// A task frame counts as received, and so may be acknowledged, only once
// the host's event stream took it. A frame that the stream did not take
// before the connection ended stays unacknowledged, and the resumed
// session replays it.
func (s *session) dispatch(frame *pb.Frame, data []byte) error {
	frameType := protocol.TypeOf(frame)
	welcomed := s.isWelcomed.Load()
	if welcomed {
		isNew, err := s.window.Check(frame)
		if err != nil {
			return fmt.Errorf("coordinator sent a %s frame out of sequence: %w", frameType, err)
		}
		if err := s.acknowledge(frame.GetAck()); err != nil {
			return err
		}
		if !isNew {
			s.hooks.stats.duplicateFrames.Add(1)
			return nil
		}
	}
	if err := s.handle(frameType, frame, data); err != nil {
		return err
	}
	if welcomed {
		s.window.Commit(frame.GetSeq())
		if frame.GetSeq() > 0 && s.unacked.Add(1) > ackEvery {
			select {
			case s.ackNudge <- struct{}{}:
			default:
			}
		}
	}
	return nil
}

// errNotForwarded ends a connection whose task frame the host's event
// stream did not take before the connection or the stream ended.
var errNotForwarded = errors.New("connection ended before the host took a received frame; " +
	"the resumed session replays it")

// handle runs the session's own handler of a frame, or forwards a task
// frame to the host.
func (s *session) handle(frameType string, frame *pb.Frame, data []byte) error {
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
	if !s.hooks.forward(s, data) {
		return errNotForwarded
	}
	return nil
}

// acknowledge drops the frames up to ack from the replay buffer and wakes
// a writer that waits for room. An ack of a frame never sent ends the
// connection and the session, as in link.welcome.
func (s *session) acknowledge(ack uint64) error {
	if ack == 0 {
		return nil
	}
	before, _ := s.window.Pending()
	if err := s.window.Acknowledge(ack); err != nil {
		s.hooks.link.forget()
		return fmt.Errorf("session %s: %w; starting a new session", s.id, err)
	}
	if after, _ := s.window.Pending(); after < before {
		select {
		case s.acked <- struct{}{}:
		default:
		}
	}
	return nil
}

func (s *session) onWelcome(frame *pb.Frame) error {
	if s.isWelcomed.Load() {
		s.log.Warn("ignoring a second welcome on the same connection", "session_id", s.id)
		return nil
	}
	welcome := frame.GetWelcome()
	compression := welcome.GetCompression()
	if compression != "" && (compression != protocol.CompressionDeflate || !s.cfg.Compression) {
		return fmt.Errorf("coordinator chose compression %q, which the worker did not offer; "+
			"set compression = true in the reconnection plugin config or upgrade the plugin", compression)
	}
	s.id = welcome.GetSessionId()
	// Only the reader goroutine logs through s.log, so it may be replaced
	// here.
	s.log = s.log.With("session_id", s.id)

	// A resume needs both sides to name the same session.
	s.resumed = welcome.GetResumed() && s.resumeID != ""
	window, dropped, err := s.hooks.link.welcome(s.id, s.resumed, frame.GetAck())
	if err != nil {
		return err
	}
	s.window = window
	if dropped > 0 {
		s.log.Warn("new session, dropping frames queued for the previous one; "+
			"the worker host's state sync resends what matters", "frames", dropped)
	}
	s.codec = protocol.Codec{
		Compression:     compression,
		MaxFrameBytes:   s.cfg.MaxFrameBytes,
		MaxDecodedBytes: s.cfg.MaxFrameBytes,
	}
	s.bounds = heartbeatBounds(s.cfg,
		time.Duration(welcome.GetHeartbeatIntervalMs())*time.Millisecond,
		time.Duration(welcome.GetHeartbeatTimeoutMs())*time.Millisecond)
	s.interval.Store(int64(s.bounds.Interval))
	// The handshake is the first round-trip sample, so the read deadline
	// set right after Welcome already fits a slow link.
	s.rtt.Add(time.Duration(time.Now().UnixNano() - s.helloSentAt.Load()))
	s.adaptHeartbeat()

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
		// enters the sample. A sample beyond the largest heartbeat timeout
		// comes from a clock step and is dropped.
		sample := time.Duration(now.UnixNano() - heartbeat.GetEchoUnixNano())
		if sample > 0 && sample <= s.cfg.MaxHeartbeatTimeout {
			s.rtt.Add(sample)
			s.hooks.stats.rttSamples.add(sample)
			s.adaptHeartbeat()
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
