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
// goroutine handles frames for as long as the connection lives. A writer
// goroutine runs only while there is something to send: the Welcome, the
// unsequenced frames, the session's unacknowledged task frames in sequence
// order, a due heartbeat, or the frames of a close. At most one writer runs
// at any time, so an idle connection holds one goroutine and no ticker.
type connection struct {
	ws     *websocket.Conn
	remote string
	// codec is negotiated in the handshake and fixed before the reader and
	// writer start.
	codec protocol.Codec
	// credentialID names the credential the worker authenticated with on
	// this connection; empty in the token mode.
	credentialID string
	// sealer tags the messages the writer sends and opener checks the tags
	// of the messages the reader receives; both are nil in the token mode.
	// Each is used by one goroutine at a time: the running writer and the
	// reader.
	sealer *protocol.Sealer
	opener *protocol.Opener
	// server and session are set by start, before any writer runs.
	server  *Server
	session *session

	// mu guards the fields from control to reason.
	mu sync.Mutex
	// control holds the frames that are not sequenced, such as heartbeat
	// replies, in the order they were queued. It is bounded by queueLimit:
	// a worker that stops reading is disconnected instead of growing the
	// coordinator's memory.
	control    []*pb.Frame
	queueLimit int
	// welcome is the first frame to send, taken by the first writer.
	welcome *pb.Frame
	// windowDue is set when the replay buffer may hold frames that this
	// connection has not sent yet.
	windowDue bool
	// heartbeatDue is set when the heartbeat timer fired and the writer has
	// not sent that heartbeat yet.
	heartbeatDue bool
	// started is set by start, and no writer runs before it.
	started bool
	// writing is set while a writer goroutine runs.
	writing bool
	// closing is set by close. finished is set once the writer has sent the
	// close frames and closed the WebSocket, and no writer starts after it.
	closing  bool
	finished bool
	final    *pb.Frame
	// reason is the cause given by the first close. It may be read without
	// mu once writerDone is closed.
	reason string

	// peerStopped is set when the worker ended the connection with a
	// normal WebSocket close whose reason is protocol.CloseWorkerStopping.
	peerStopped atomic.Bool

	// heartbeat fires one heartbeat interval after the coordinator's last
	// heartbeat on this connection, and a writer sends the next one.
	heartbeat *time.Timer
	// nextSeq is the lowest sequence number not yet sent on this
	// connection. Only the running writer uses it.
	nextSeq uint64
	// unacked counts the task frames received since the last frame written,
	// whose acknowledgement the worker has not been sent yet.
	unacked    atomic.Int64
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
	return &connection{
		ws:         ws,
		remote:     remote,
		queueLimit: queue,
		// The first writer sends what the replay buffer already holds,
		// which after a resume is what the worker has not acknowledged.
		windowDue:  true,
		readerDone: make(chan struct{}),
		writerDone: make(chan struct{}),
	}
}

// start lets writers run, beginning with one that sends the Welcome, and
// arms the heartbeat timer.
func (c *connection) start(s *Server, ss *session, welcome *pb.Frame) {
	c.mu.Lock()
	c.server = s
	c.session = ss
	c.welcome = welcome
	c.started = true
	c.heartbeat = time.AfterFunc(c.interval(), c.heartbeatFired)
	run := c.claimWriterLocked()
	c.mu.Unlock()
	if run {
		go c.runWriter()
	}
}

// claimWriterLocked reports whether the caller must run a writer, and
// marks one as running if so. The caller holds c.mu.
func (c *connection) claimWriterLocked() bool {
	if !c.started || c.writing || c.finished {
		return false
	}
	c.writing = true
	return true
}

// wakeWriter marks the replay buffer as due and starts a writer unless one
// is running.
func (c *connection) wakeWriter() {
	c.mu.Lock()
	c.windowDue = true
	run := c.claimWriterLocked()
	c.mu.Unlock()
	if run {
		go c.runWriter()
	}
}

// ackEvery is the number of task frames received without a frame written
// after which the writer sends a heartbeat only to carry the
// acknowledgement. Without it, a worker that streams output while the
// coordinator has nothing to send would fill its replay buffer and wait
// for the next heartbeat.
const ackEvery = 64

// received counts a task frame handled by the reader and asks for a
// heartbeat once ackEvery frames wait for their acknowledgement.
func (c *connection) received() {
	if c.unacked.Add(1) == ackEvery && c.heartbeatNow() {
		go c.runWriter()
	}
}

// heartbeatFired runs on the timer's own goroutine, which becomes the
// writer unless one is running.
func (c *connection) heartbeatFired() {
	if c.heartbeatNow() {
		c.runWriter()
	}
}

// heartbeatNow marks a heartbeat as due and reports whether the caller
// must run the writer that sends it.
func (c *connection) heartbeatNow() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.heartbeatDue = true
	return c.claimWriterLocked()
}

// enqueue queues an unsequenced frame for the writer and reports whether it
// was queued. A full queue closes the connection.
func (c *connection) enqueue(frame *pb.Frame) bool {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return false
	}
	if len(c.control) >= c.queueLimit {
		c.mu.Unlock()
		c.close(nil, "send queue full")
		return false
	}
	c.control = append(c.control, frame)
	run := c.claimWriterLocked()
	c.mu.Unlock()
	if run {
		go c.runWriter()
	}
	return true
}

// close ends the connection once. A non-nil final frame is sent after the
// frames already queued.
func (c *connection) close(final *pb.Frame, reason string) {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	c.closing = true
	c.final = final
	c.reason = reason
	run := c.claimWriterLocked()
	c.mu.Unlock()
	if run {
		go c.runWriter()
	}
}

// abort closes the connection at once and waits for its reader and its
// writer, so that a resumed session never has two readers or writers.
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

// serveConnection starts the writer with the Welcome and a reader goroutine
// that handles frames until the connection ends, then detaches it from its
// session. It returns at once, so that the HTTP handler's goroutine, with
// the stack it grew during the handshake and the request it served, ends
// while the connection lives on.
func (s *Server) serveConnection(ss *session, c *connection, welcome *pb.Frame) {
	c.start(s, ss, welcome)
	// handleConnect holds its own entry in s.conns until this function
	// returns, so this Add cannot race with Run's Wait on a zero count.
	s.conns.Add(1)
	go func() {
		defer s.conns.Done()
		reason := s.readLoop(ss, c)
		close(c.readerDone)
		c.close(nil, reason)
		// No writer starts after writerDone is closed, so past this wait
		// every writer of the connection has done its work and the
		// reader's entry in s.conns covered it.
		<-c.writerDone
		s.detach(ss, c)
		s.kickScheduler()
	}()
}

// readLoop handles frames until the connection fails, and returns why.
func (s *Server) readLoop(ss *session, c *connection) string {
	for {
		timeout := c.timeout()
		_ = c.ws.SetReadDeadline(time.Now().Add(timeout))
		frame, err := readFrame(c.ws, c.codec, c.opener)
		if err != nil {
			var netErr interface{ Timeout() bool }
			if errors.As(err, &netErr) && netErr.Timeout() {
				return fmt.Sprintf("no frame received for heartbeat timeout %s", timeout)
			}
			var tagErr *protocol.TagError
			if errors.As(err, &tagErr) {
				return s.rejectMessage(ss, c, tagErr)
			}
			if errors.Is(err, websocket.ErrReadLimit) {
				// The WebSocket library has already sent close code 1009
				// (message too big), so no Reject can follow.
				limit := s.cfg.Workers.MaxFrameBytes
				s.countFrameReject(frameOversize)
				s.connLog.Warn(ss.log, "oversize/"+ss.workerID, "frame over the size limit; closing the connection",
					"max_frame_bytes", limit, "remote_addr", c.remote)
				return fmt.Sprintf("frame over workers.max_frame_bytes %d", limit)
			}
			if errors.Is(err, errMalformedFrame) {
				s.countFrameReject(frameMalformed)
				s.connLog.Warn(ss.log, "malformed/"+ss.workerID, "malformed frame; closing the connection",
					"remote_addr", c.remote, "error", err)
				c.close(rejectFrame(rejectProtocolError, err.Error(), 0), "malformed frame")
			}
			// A close that echoes the coordinator's own close is not the
			// worker's decision.
			c.mu.Lock()
			closing := c.closing
			c.mu.Unlock()
			var closeErr *websocket.CloseError
			if !closing && errors.As(err, &closeErr) && closeErr.Code == websocket.CloseNormalClosure &&
				closeErr.Text == protocol.CloseWorkerStopping {
				c.peerStopped.Store(true)
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
		if frame.GetSeq() != 0 {
			c.received()
		}
	}
}

// sequence applies a frame's acknowledgement and checks its sequence
// number. It returns ok false with a reason when the session must end, and
// a non-empty reason with ok true for a duplicate that must be skipped.
func (s *Server) sequence(ss *session, c *connection, frame *pb.Frame) (string, bool) {
	if err := ss.acknowledge(frame.GetAck()); err != nil {
		s.countFrameReject(frameInvalidAck)
		s.connLog.Warn(ss.log, "invalid ack/"+ss.workerID, "invalid acknowledgement; ending the session",
			"error", err)
		ss.end(rejectFrame(rejectRegisterAgain, err.Error()+"; start a new session", 0), "invalid acknowledgement")
		return "invalid acknowledgement", false
	}
	fresh, err := ss.window.Receive(frame)
	if err != nil {
		// Frames were lost between the worker's buffer and this one, so the
		// session cannot continue without a state sync.
		s.countFrameReject(frameSequenceGap)
		s.connLog.Warn(ss.log, "sequence gap/"+ss.workerID, "sequence gap; ending the session", "error", err)
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

// rejectMessage handles a message that failed its tag: it logs it, counts
// it and closes the connection. The worker reconnects and resumes, and the
// replay resends what the rejected message may have carried.
func (s *Server) rejectMessage(ss *session, c *connection, tagErr *protocol.TagError) string {
	s.rejected.add(tagErr.Reason)
	s.connLog.Warn(ss.log, "bad tag/"+ss.workerID, "message failed authentication; closing the connection",
		"reason", tagErr.Reason, "credential_id", c.credentialID, "remote_addr", c.remote, "error", tagErr)
	c.close(rejectFrame(rejectProtocolError, "a message failed authentication ("+tagErr.Reason+
		"); reconnect", 0), "message failed authentication")
	return "message failed authentication: " + tagErr.Reason
}

var errMalformedFrame = errors.New("malformed frame")

// readFrame reads one binary message, checks its tag with opener unless
// opener is nil, and decodes it with the connection's codec. A compressed
// message on a connection without compression is malformed. A tag failure
// is a *protocol.TagError, returned before anything is decoded.
func readFrame(ws *websocket.Conn, codec protocol.Codec, opener *protocol.Opener) (*pb.Frame, error) {
	kind, data, err := ws.ReadMessage()
	if err != nil {
		return nil, err
	}
	if kind != websocket.BinaryMessage {
		return nil, fmt.Errorf("%w: message type %d is not binary", errMalformedFrame, kind)
	}
	if opener != nil {
		if data, err = opener.Open(data); err != nil {
			return nil, err
		}
	}
	return decodeMessage(data, codec)
}

// readMessage reads and decodes one untagged binary message of the
// handshake and returns its bytes as received as well.
func readMessage(ws *websocket.Conn, codec protocol.Codec) (*pb.Frame, []byte, error) {
	kind, data, err := ws.ReadMessage()
	if err != nil {
		return nil, nil, err
	}
	if kind != websocket.BinaryMessage {
		return nil, nil, fmt.Errorf("%w: message type %d is not binary", errMalformedFrame, kind)
	}
	raw := append([]byte(nil), data...)
	frame, err := decodeMessage(data, codec)
	return frame, raw, err
}

// decodeMessage decodes a message without a tag.
func decodeMessage(data []byte, codec protocol.Codec) (*pb.Frame, error) {
	if codec.Compression == "" && len(data) > 0 && data[0] != 0 {
		return nil, fmt.Errorf("%w: encoding byte %d but no compression was negotiated", errMalformedFrame, data[0])
	}
	frame, err := codec.Decode(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errMalformedFrame, err)
	}
	return frame, nil
}

// writerJob is the work of one writer round.
type writerJob struct {
	welcome   *pb.Frame
	closing   bool
	control   *pb.Frame
	window    bool
	heartbeat bool
}

// nextJobLocked takes the work of one round, or reports false and ends the
// writer when there is none. A round sends at most one unsequenced frame,
// so a stream of them does not hold back task frames and heartbeats. The
// caller holds c.mu.
func (c *connection) nextJobLocked() (writerJob, bool) {
	job := writerJob{welcome: c.welcome, closing: c.closing}
	c.welcome = nil
	if job.welcome != nil || job.closing {
		return job, true
	}
	if len(c.control) > 0 {
		job.control = c.control[0]
		c.control[0] = nil
		c.control = c.control[1:]
		if len(c.control) == 0 {
			// Drop the backing array, so an idle connection holds none.
			c.control = nil
		}
	}
	job.window, job.heartbeat = c.windowDue, c.heartbeatDue
	c.windowDue, c.heartbeatDue = false, false
	if job.control == nil && !job.window && !job.heartbeat {
		c.writing = false
		return job, false
	}
	return job, true
}

// runWriter sends what is due until nothing is left. Once the connection
// is closing it sends the final frame and a close message, closes the
// WebSocket and marks the connection finished.
func (c *connection) runWriter() {
	s, ss := c.server, c.session
	for {
		c.mu.Lock()
		job, ok := c.nextJobLocked()
		c.mu.Unlock()
		if !ok {
			return
		}
		if job.welcome != nil {
			// The Welcome is never compressed: the worker learns from it
			// whether compression is on.
			if err := s.writeFrame(ss, c, protocol.Codec{}, job.welcome); err != nil {
				c.close(nil, "write: "+err.Error())
			}
			continue
		}
		if job.closing {
			c.finish()
			return
		}
		if err := c.writeJob(job); err != nil {
			c.close(nil, "write: "+err.Error())
		}
	}
}

// writeJob sends the unsequenced frame, the replay buffer and the heartbeat
// of one round, and rearms the heartbeat timer with the interval in force.
func (c *connection) writeJob(job writerJob) error {
	s, ss := c.server, c.session
	if job.control != nil {
		if err := s.writeFrame(ss, c, c.codec, job.control); err != nil {
			return err
		}
	}
	if job.window {
		if err := s.flushWindow(ss, c); err != nil {
			return err
		}
	}
	if job.heartbeat {
		c.heartbeat.Reset(c.interval())
		return s.writeFrame(ss, c, c.codec, &pb.Frame{Body: &pb.Frame_Heartbeat{Heartbeat: &pb.Heartbeat{
			SentUnixNano: time.Now().UnixNano(),
		}}})
	}
	return nil
}

// finish runs in the last writer: it sends the close frames, closes the
// WebSocket and marks the connection finished, so no writer starts again.
func (c *connection) finish() {
	c.heartbeat.Stop()
	c.server.finishWrites(c.session, c)
	_ = c.ws.Close()
	c.mu.Lock()
	c.finished = true
	c.writing = false
	c.control = nil
	c.mu.Unlock()
	close(c.writerDone)
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
		// enqueue takes no frame once closing is set, so the queue only
		// shrinks here.
		c.mu.Lock()
		queued := c.control
		c.control = nil
		c.mu.Unlock()
		for _, frame := range queued {
			if s.writeFrame(ss, c, c.codec, frame) != nil {
				return
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
	c.unacked.Store(0)
	data, err := codec.Encode(frame)
	if err != nil {
		return err
	}
	if c.sealer != nil {
		data = c.sealer.Seal(data)
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
