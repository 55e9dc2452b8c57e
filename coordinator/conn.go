package coordinator

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/dtf-io/dtf/protocol"
	"github.com/dtf-io/dtf/protocol/pb"
)

// closeGrace is how long a closing side waits for the peer's close frame
// before it drops the TCP connection. Closing with unread input makes the
// kernel send a reset, which can discard a Reject the peer has not read.
const closeGrace = time.Second

// connection is one WebSocket connection attached to a session. Its reader
// goroutine handles frames; one writer goroutine sends the Welcome, then the
// session's unacknowledged task frames in sequence order, the unsequenced
// frames and the heartbeats.
type connection struct {
	ws     *websocket.Conn
	remote string
	// codec is negotiated in the handshake and fixed before the reader and
	// writer start.
	codec protocol.Codec

	// control feeds the writer the frames that are not sequenced, such as
	// heartbeat replies. It is bounded: a worker that stops reading is
	// disconnected instead of growing the coordinator's memory.
	control chan *pb.Frame
	// wake tells the writer that the replay buffer has frames to send.
	wake chan struct{}
	// nextSeq is the lowest sequence number the writer has not sent on this
	// connection; only the writer uses it.
	nextSeq uint64

	closing    chan struct{}
	closeOnce  sync.Once
	final      *pb.Frame
	reason     string
	readerDone chan struct{}
	writerDone chan struct{}

	// heartbeatInterval and heartbeatTimeout are the values in force, in
	// nanoseconds, adapted to the measured round-trip time.
	heartbeatInterval atomic.Int64
	heartbeatTimeout  atomic.Int64

	// unknownLogged keeps an unknown frame type from being logged more than
	// once per connection; only the reader goroutine uses it.
	unknownLogged bool
}

func newConnection(ws *websocket.Conn, remote string, queue int) *connection {
	c := &connection{
		ws:         ws,
		remote:     remote,
		control:    make(chan *pb.Frame, queue),
		wake:       make(chan struct{}, 1),
		closing:    make(chan struct{}),
		readerDone: make(chan struct{}),
		writerDone: make(chan struct{}),
	}
	// The first wake sends what the replay buffer already holds.
	c.wake <- struct{}{}
	return c
}

func (c *connection) wakeWriter() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// enqueue queues an unsequenced frame for the writer and reports whether it
// was queued. A full queue closes the connection.
func (c *connection) enqueue(frame *pb.Frame) bool {
	select {
	case <-c.closing:
		return false
	default:
	}
	select {
	case c.control <- frame:
		return true
	default:
		c.close(nil, "send queue full")
		return false
	}
}

// close ends the connection once. A non-nil final frame is sent after the
// frames already queued.
func (c *connection) close(final *pb.Frame, reason string) {
	c.closeOnce.Do(func() {
		c.final = final
		c.reason = reason
		close(c.closing)
	})
}

// abort closes the connection at once and waits for its goroutines, so
// that a resumed session never has two readers or writers.
func (c *connection) abort(reason string) {
	c.close(nil, reason)
	_ = c.ws.Close()
	<-c.readerDone
	<-c.writerDone
}

func (c *connection) setHeartbeat(interval, timeout time.Duration) {
	c.heartbeatInterval.Store(int64(interval))
	c.heartbeatTimeout.Store(int64(timeout))
}

func (c *connection) timeout() time.Duration {
	return time.Duration(c.heartbeatTimeout.Load())
}

func (c *connection) interval() time.Duration {
	return time.Duration(c.heartbeatInterval.Load())
}

// serveConnection starts the writer with the Welcome and reads frames until
// the connection ends, then detaches it from its session.
func (s *Server) serveConnection(ss *session, c *connection, welcome *pb.Frame) {
	s.conns.Add(1)
	go func() {
		defer s.conns.Done()
		s.writeLoop(ss, c, welcome)
	}()

	reason := s.readLoop(ss, c)
	close(c.readerDone)
	c.close(nil, reason)
	<-c.writerDone
	s.detach(ss, c)
	s.kickScheduler()
}

// readLoop handles frames until the connection fails, and returns why.
func (s *Server) readLoop(ss *session, c *connection) string {
	for {
		timeout := c.timeout()
		_ = c.ws.SetReadDeadline(time.Now().Add(timeout))
		frame, err := readFrame(c.ws, c.codec)
		if err != nil {
			var netErr interface{ Timeout() bool }
			if errors.As(err, &netErr) && netErr.Timeout() {
				return fmt.Sprintf("no frame received for heartbeat timeout %s", timeout)
			}
			if errors.Is(err, errMalformedFrame) {
				ss.log.Warn("malformed frame; closing the connection", "error", err)
				c.close(rejectFrame(rejectProtocolError, err.Error(), 0), "malformed frame")
			}
			return "read: " + err.Error()
		}
		ss.lastFrame.Store(time.Now().UnixNano())
		if reason, ok := s.sequence(ss, c, frame); !ok {
			return reason
		} else if reason != "" {
			continue
		}
		s.dispatch(ss, c, frame)
	}
}

// sequence applies a frame's acknowledgement and checks its sequence
// number. It returns ok false with a reason when the session must end, and
// a non-empty reason with ok true for a duplicate that must be skipped.
func (s *Server) sequence(ss *session, c *connection, frame *pb.Frame) (string, bool) {
	if err := ss.acknowledge(frame.GetAck()); err != nil {
		ss.log.Warn("invalid acknowledgement; ending the session", "error", err)
		ss.end(rejectFrame(rejectRegisterAgain, err.Error()+"; start a new session", 0), "invalid acknowledgement")
		return "invalid acknowledgement", false
	}
	fresh, err := ss.window.Receive(frame)
	if err != nil {
		// Frames were lost between the worker's buffer and this one, so the
		// session cannot continue without a state sync.
		ss.log.Warn("sequence gap; ending the session", "error", err)
		ss.end(rejectFrame(rejectRegisterAgain, err.Error()+"; start a new session", 0), "sequence gap")
		return "sequence gap", false
	}
	if !fresh {
		s.duplicateFrames.Add(1)
		ss.log.Trace("duplicate frame ignored", "type", protocol.TypeOf(frame), "seq", frame.GetSeq())
		return "duplicate", true
	}
	return "", true
}

var errMalformedFrame = errors.New("malformed frame")

// readFrame reads and decodes one binary message with the connection's
// codec. A compressed message on a connection without compression is
// malformed.
func readFrame(ws *websocket.Conn, codec protocol.Codec) (*pb.Frame, error) {
	kind, data, err := ws.ReadMessage()
	if err != nil {
		return nil, err
	}
	if kind != websocket.BinaryMessage {
		return nil, fmt.Errorf("%w: message type %d is not binary", errMalformedFrame, kind)
	}
	if codec.Compression == "" && len(data) > 0 && data[0] != 0 {
		return nil, fmt.Errorf("%w: encoding byte %d but no compression was negotiated", errMalformedFrame, data[0])
	}
	frame, err := codec.Decode(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errMalformedFrame, err)
	}
	return frame, nil
}

// writeLoop sends the Welcome, then queued frames, the replay buffer and
// the coordinator's heartbeats until the connection closes, then sends the
// final frame and a close message.
func (s *Server) writeLoop(ss *session, c *connection, welcome *pb.Frame) {
	defer close(c.writerDone)
	defer c.ws.Close()
	// The Welcome is never compressed: the worker learns from it whether
	// compression is on.
	if err := s.writeFrame(ss, c, protocol.Codec{}, welcome); err != nil {
		c.close(nil, "write: "+err.Error())
	}
	interval := c.interval()
	ticker := time.NewTicker(interval)
	defer ticker.Stop()

	for {
		select {
		case <-c.closing:
			s.finishWrites(ss, c)
			return
		default:
		}
		var err error
		select {
		case frame := <-c.control:
			err = s.writeFrame(ss, c, c.codec, frame)
		case <-c.wake:
			err = s.flushWindow(ss, c)
		case <-ticker.C:
			err = s.writeFrame(ss, c, c.codec, &pb.Frame{Body: &pb.Frame_Heartbeat{Heartbeat: &pb.Heartbeat{
				SentUnixNano: time.Now().UnixNano(),
			}}})
			if next := c.interval(); next != interval {
				interval = next
				ticker.Reset(interval)
			}
		case <-c.closing:
			s.finishWrites(ss, c)
			return
		}
		if err != nil {
			c.close(nil, "write: "+err.Error())
		}
	}
}

// flushWindow sends the frames of the replay buffer this connection has not
// sent yet, in sequence order. After a resume these are all the frames the
// worker had not acknowledged.
func (s *Server) flushWindow(ss *session, c *connection) error {
	for _, kept := range ss.window.Unacknowledged() {
		if kept.GetSeq() < c.nextSeq {
			continue
		}
		// The kept frame is shared with the replay buffer, so each send
		// gets its own envelope with the current acknowledgement.
		out := &pb.Frame{Seq: kept.GetSeq(), Body: kept.GetBody()}
		if err := s.writeFrame(ss, c, c.codec, out); err != nil {
			return err
		}
		c.nextSeq = kept.GetSeq() + 1
	}
	return nil
}

// finishWrites flushes the queue and the final frame of a graceful close,
// sends a close message and waits briefly for the reader to receive the
// peer's close frame.
func (s *Server) finishWrites(ss *session, c *connection) {
	if c.final != nil {
		for flushed := false; !flushed; {
			select {
			case frame := <-c.control:
				if s.writeFrame(ss, c, c.codec, frame) != nil {
					return
				}
			default:
				flushed = true
			}
		}
		if s.flushWindow(ss, c) != nil || s.writeFrame(ss, c, c.codec, c.final) != nil {
			return
		}
	}
	msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, truncate(c.reason, 120))
	if c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(closeGrace)) != nil {
		return
	}
	timer := time.NewTimer(closeGrace)
	defer timer.Stop()
	select {
	case <-c.readerDone:
	case <-timer.C:
	}
}

// writeFrame stamps the acknowledgement of the worker's frames on a frame
// and sends it.
func (s *Server) writeFrame(ss *session, c *connection, codec protocol.Codec, frame *pb.Frame) error {
	frame.Ack = ss.window.Received()
	data, err := codec.Encode(frame)
	if err != nil {
		return err
	}
	_ = c.ws.SetWriteDeadline(time.Now().Add(c.timeout()))
	if err := c.ws.WriteMessage(websocket.BinaryMessage, data); err != nil {
		return err
	}
	s.framesSent.Add(1)
	s.bytesSent.Add(uint64(len(data)))
	ss.log.Trace("frame sent", "type", protocol.TypeOf(frame), "seq", frame.GetSeq(), "bytes", len(data))
	return nil
}

// rejectConn sends a Reject on a connection without a session, closes it
// and waits briefly for the peer's close frame.
func rejectConn(ws *websocket.Conn, reject *pb.Frame) {
	defer ws.Close()
	deadline := time.Now().Add(closeGrace)
	_ = ws.SetWriteDeadline(deadline)
	if data, err := protocol.Encode(reject); err == nil {
		if ws.WriteMessage(websocket.BinaryMessage, data) != nil {
			return
		}
	}
	msg := websocket.FormatCloseMessage(websocket.ClosePolicyViolation, truncate(reject.GetReject().GetMessage(), 120))
	if ws.WriteControl(websocket.CloseMessage, msg, deadline) != nil {
		return
	}
	// Read until the peer replies to the close frame, the read fails or the
	// deadline passes. The read limit bounds each message.
	_ = ws.SetReadDeadline(deadline)
	for {
		if _, _, err := ws.NextReader(); err != nil {
			return
		}
	}
}

func rejectFrame(code pb.Reject_Code, message string, retryAfter time.Duration) *pb.Frame {
	return &pb.Frame{Body: &pb.Frame_Reject{Reject: &pb.Reject{
		Code:         code,
		Message:      message,
		RetryAfterMs: retryAfter.Milliseconds(),
	}}}
}

// truncate shortens s to at most n bytes, because a WebSocket close reason
// must fit in a control frame of 125 bytes.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// newID returns prefix followed by n random bytes in hex.
func newID(prefix string, n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}
