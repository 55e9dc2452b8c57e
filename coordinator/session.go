package coordinator

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/hashicorp/go-hclog"

	"github.com/dtf-io/dtf/coordinator/store"
	"github.com/dtf-io/dtf/protocol"
	"github.com/dtf-io/dtf/protocol/pb"
)

const (
	rejectUnauthenticated = pb.Reject_CODE_UNAUTHENTICATED
	rejectProtocolError   = pb.Reject_CODE_PROTOCOL_ERROR
	rejectRegisterAgain   = pb.Reject_CODE_REGISTER_AGAIN
	rejectShuttingDown    = pb.Reject_CODE_SHUTTING_DOWN
)

// closeGrace is how long a closing side waits for the peer's close frame
// before it drops the TCP connection. Closing with unread input makes the
// kernel send a reset, which can discard a Reject the peer has not read.
const closeGrace = time.Second

// maxWorkerIDBytes bounds the worker ID taken from a Hello, because it
// appears in logs, the store and API responses.
const maxWorkerIDBytes = 128

// session is one WebSocket connection of an authenticated worker. The
// handler goroutine reads frames and one writer goroutine sends them.
type session struct {
	id        string
	workerID  string
	taskTypes []string
	slots     int
	hello     *pb.Hello
	started   time.Time
	conn      *websocket.Conn
	log       hclog.Logger

	// send feeds the writer. It is bounded: a worker that stops reading is
	// disconnected instead of growing the coordinator's memory.
	send       chan *pb.Frame
	closing    chan struct{}
	closeOnce  sync.Once
	final      *pb.Frame
	reason     string
	readerDone chan struct{}
	writerDone chan struct{}

	// assigned contains the attempts assigned through this session. A state
	// sync never requeues them, because their Assign may still be in flight.
	assignedMu sync.Mutex
	assigned   map[refKey]bool

	// synced is set once the StateSyncResult was queued; the scheduler
	// assigns nothing to a session before.
	synced atomic.Bool
	// lastFrame is the Unix time in nanoseconds of the last frame received.
	lastFrame atomic.Int64
	// unknownLogged keeps an unknown frame type from being logged more than
	// once per session; only the reader goroutine uses it.
	unknownLogged bool
}

// enqueue queues a frame for the writer and reports whether it was queued.
// A full queue closes the session.
func (ss *session) enqueue(frame *pb.Frame) bool {
	select {
	case <-ss.closing:
		return false
	default:
	}
	select {
	case ss.send <- frame:
		return true
	default:
		ss.log.Warn("send queue full; closing the session", "queue", cap(ss.send))
		ss.close(nil, "send queue full")
		return false
	}
}

// close ends the session once. A non-nil final frame is sent after the
// frames already queued.
func (ss *session) close(final *pb.Frame, reason string) {
	ss.closeOnce.Do(func() {
		ss.final = final
		ss.reason = reason
		close(ss.closing)
	})
}

func (ss *session) markAssigned(taskID string, attempt int) {
	ss.assignedMu.Lock()
	defer ss.assignedMu.Unlock()
	ss.assigned[refKey{taskID, attempt}] = true
}

func (ss *session) wasAssigned(taskID string, attempt int) bool {
	ss.assignedMu.Lock()
	defer ss.assignedMu.Unlock()
	return ss.assigned[refKey{taskID, attempt}]
}

func (ss *session) serves(taskType string) bool {
	return slices.Contains(ss.taskTypes, taskType)
}

// handleConnect upgrades a worker connection, runs the handshake and then
// reads frames until the connection ends.
func (s *Server) handleConnect(w http.ResponseWriter, r *http.Request) {
	// Registered before the upgrade, so Run's wait cannot start before it.
	s.conns.Add(1)
	defer s.conns.Done()

	if !slices.Contains(websocket.Subprotocols(r), protocol.Subprotocol) {
		writeError(w, http.StatusBadRequest, "", fmt.Sprintf(
			"missing WebSocket subprotocol %q; connect with a dtf worker of this version", protocol.Subprotocol))
		return
	}
	conn, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		// The upgrader has already written an HTTP error.
		s.log.Warn("websocket upgrade failed", "remote_addr", r.RemoteAddr, "error", err)
		return
	}
	conn.SetReadLimit(int64(s.cfg.Workers.MaxFrameBytes))

	ss := s.handshake(conn, r.RemoteAddr)
	if ss == nil {
		return
	}
	s.serveSession(ss)
}

// handshake reads the Hello, checks the credentials and registers the
// session. It returns nil after rejecting the connection.
func (s *Server) handshake(conn *websocket.Conn, remote string) *session {
	log := s.log.Named("session").With("remote_addr", remote)
	if s.shuttingDown.Load() {
		rejectConn(conn, rejectFrame(rejectShuttingDown, "coordinator is shutting down", shutdownRetryAfter))
		return nil
	}

	_ = conn.SetReadDeadline(time.Now().Add(s.cfg.Workers.HandshakeTimeout))
	frame, err := readFrame(conn, s.cfg.Workers.MaxFrameBytes)
	if err != nil {
		log.Warn("handshake failed", "error", err)
		rejectConn(conn, rejectFrame(rejectProtocolError, "send a hello frame first: "+err.Error(), 0))
		return nil
	}
	hello := frame.GetHello()
	if hello == nil {
		// Typically a frame delayed past its session's end, such as an
		// outcome from an evicted worker: the worker must register again,
		// and its outcome stays in its outbox until then.
		log.Warn("first frame is not hello", "type", protocol.TypeOf(frame))
		rejectConn(conn, rejectFrame(rejectRegisterAgain,
			fmt.Sprintf("no session is open on this connection; send hello first, got %s", protocol.TypeOf(frame)), 0))
		return nil
	}
	log = log.With("worker_id", hello.GetWorkerId())

	if token := s.cfg.Workers.Token; token != "" &&
		subtle.ConstantTimeCompare([]byte(hello.GetToken()), []byte(token)) != 1 {
		log.Warn("worker rejected: wrong token")
		rejectConn(conn, rejectFrame(rejectUnauthenticated, "wrong worker token; fix token in worker.hcl", 0))
		return nil
	}
	if id := hello.GetWorkerId(); id == "" || len(id) > maxWorkerIDBytes {
		log.Warn("worker rejected: invalid worker_id", "length", len(id))
		rejectConn(conn, rejectFrame(rejectProtocolError,
			fmt.Sprintf("worker_id must have 1 to %d bytes", maxWorkerIDBytes), 0))
		return nil
	}

	ss := s.newSession(conn, hello)
	s.register(ss)
	return ss
}

func (s *Server) newSession(conn *websocket.Conn, hello *pb.Hello) *session {
	id := newID("s-", 8)
	slots := int(hello.GetSlots())
	if slots < 1 {
		slots = 1
	}
	ss := &session{
		id:         id,
		workerID:   hello.GetWorkerId(),
		taskTypes:  hello.GetTaskTypes(),
		slots:      slots,
		hello:      hello,
		started:    time.Now(),
		conn:       conn,
		log:        s.log.Named("session").With("worker_id", hello.GetWorkerId(), "session_id", id),
		send:       make(chan *pb.Frame, s.cfg.Workers.SendQueue),
		closing:    make(chan struct{}),
		readerDone: make(chan struct{}),
		writerDone: make(chan struct{}),
		assigned:   map[refKey]bool{},
	}
	ss.lastFrame.Store(time.Now().UnixNano())
	return ss
}

// register makes ss the worker's session, replacing an older one, and ends
// the worker's grace period.
func (s *Server) register(ss *session) {
	s.mu.Lock()
	old := s.sessions[ss.workerID]
	s.sessions[ss.workerID] = ss
	delete(s.graceDeadlines, ss.workerID)
	state := s.workers[ss.workerID]
	if state == nil {
		state = &workerState{}
		s.workers[ss.workerID] = state
	}
	state.connects++
	s.mu.Unlock()

	if old != nil {
		old.log.Info("session replaced by a new connection of the same worker", "new_session_id", ss.id)
		old.close(nil, "replaced by a new connection")
	}
	ss.log.Info("worker connected", "task_types", ss.taskTypes, "slots", ss.slots,
		"host_version", ss.hello.GetHostVersion(), "plugin_version", ss.hello.GetPluginVersion())

	ctx, cancel := storeContext()
	defer cancel()
	err := s.store.UpsertWorker(ctx, store.WorkerRecord{
		ID:            ss.workerID,
		TaskTypes:     ss.taskTypes,
		Slots:         ss.slots,
		Labels:        ss.hello.GetLabels(),
		HostVersion:   ss.hello.GetHostVersion(),
		PluginVersion: ss.hello.GetPluginVersion(),
		LastSeen:      ss.started,
	})
	if err != nil {
		ss.log.Error("record worker failed", "error", err)
	}
}

// unregister removes ss unless a newer session replaced it, and starts the
// worker's grace period.
func (s *Server) unregister(ss *session) {
	s.mu.Lock()
	current := s.sessions[ss.workerID] == ss
	if current {
		delete(s.sessions, ss.workerID)
		s.graceDeadlines[ss.workerID] = time.Now().Add(s.cfg.Workers.ReassignAfter)
	}
	s.mu.Unlock()
	if current {
		ss.log.Info("worker disconnected", "reason", ss.reason, "reassign_after", s.cfg.Workers.ReassignAfter)
	} else {
		ss.log.Info("replaced session closed", "reason", ss.reason)
	}
}

// serveSession sends the Welcome, starts the writer and reads frames until
// the connection ends.
func (s *Server) serveSession(ss *session) {
	s.conns.Add(1)
	go func() {
		defer s.conns.Done()
		s.writeLoop(ss)
	}()

	ss.enqueue(&pb.Frame{Body: &pb.Frame_Welcome{Welcome: &pb.Welcome{
		SessionId:           ss.id,
		HeartbeatIntervalMs: s.cfg.Workers.HeartbeatInterval.Milliseconds(),
		HeartbeatTimeoutMs:  s.cfg.Workers.HeartbeatTimeout.Milliseconds(),
		ServerTimeUnixMs:    time.Now().UnixMilli(),
	}}})

	reason := s.readLoop(ss)
	close(ss.readerDone)
	ss.close(nil, reason)
	<-ss.writerDone
	s.unregister(ss)
	s.kickScheduler()
}

// readLoop dispatches frames until the connection fails, and returns why.
func (s *Server) readLoop(ss *session) string {
	for {
		_ = ss.conn.SetReadDeadline(time.Now().Add(s.cfg.Workers.HeartbeatTimeout))
		frame, err := readFrame(ss.conn, s.cfg.Workers.MaxFrameBytes)
		if err != nil {
			var netErr interface{ Timeout() bool }
			if errors.As(err, &netErr) && netErr.Timeout() {
				return fmt.Sprintf("no frame received for heartbeat_timeout %s", s.cfg.Workers.HeartbeatTimeout)
			}
			if errors.Is(err, errMalformedFrame) {
				ss.log.Warn("malformed frame; closing the session", "error", err)
				ss.close(rejectFrame(rejectProtocolError, err.Error(), 0), "malformed frame")
			}
			return "read: " + err.Error()
		}
		ss.lastFrame.Store(time.Now().UnixNano())
		s.dispatch(ss, frame)
	}
}

var errMalformedFrame = errors.New("malformed frame")

// readFrame reads and decodes one binary message.
func readFrame(conn *websocket.Conn, maxBytes int) (*pb.Frame, error) {
	kind, data, err := conn.ReadMessage()
	if err != nil {
		return nil, err
	}
	if kind != websocket.BinaryMessage {
		return nil, fmt.Errorf("%w: message type %d is not binary", errMalformedFrame, kind)
	}
	frame, err := protocol.Decode(data, maxBytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errMalformedFrame, err)
	}
	return frame, nil
}

// writeLoop sends queued frames and the coordinator's heartbeats until the
// session closes, then sends the final frame and a close message.
func (s *Server) writeLoop(ss *session) {
	defer close(ss.writerDone)
	defer ss.conn.Close()
	ticker := time.NewTicker(s.cfg.Workers.HeartbeatInterval)
	defer ticker.Stop()

	for {
		select {
		case frame := <-ss.send:
			if err := s.writeFrame(ss, frame); err != nil {
				ss.close(nil, "write: "+err.Error())
			}
		case <-ticker.C:
			hb := &pb.Frame{Body: &pb.Frame_Heartbeat{Heartbeat: &pb.Heartbeat{
				SentUnixNano: time.Now().UnixNano(),
			}}}
			if err := s.writeFrame(ss, hb); err != nil {
				ss.close(nil, "write: "+err.Error())
			}
		case <-ss.closing:
			s.finishWrites(ss)
			return
		}
	}
}

// finishWrites flushes the queue and the final frame of a graceful close,
// sends a close message and waits briefly for the reader to receive the peer's
// close frame.
func (s *Server) finishWrites(ss *session) {
	if ss.final != nil {
		for flushed := false; !flushed; {
			select {
			case frame := <-ss.send:
				if s.writeFrame(ss, frame) != nil {
					return
				}
			default:
				flushed = true
			}
		}
		if s.writeFrame(ss, ss.final) != nil {
			return
		}
	}
	msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, truncate(ss.reason, 120))
	if ss.conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(closeGrace)) != nil {
		return
	}
	timer := time.NewTimer(closeGrace)
	defer timer.Stop()
	select {
	case <-ss.readerDone:
	case <-timer.C:
	}
}

func (s *Server) writeFrame(ss *session, frame *pb.Frame) error {
	data, err := protocol.Encode(frame)
	if err != nil {
		return fmt.Errorf("encode %s frame: %w", protocol.TypeOf(frame), err)
	}
	_ = ss.conn.SetWriteDeadline(time.Now().Add(s.cfg.Workers.HeartbeatTimeout))
	if err := ss.conn.WriteMessage(websocket.BinaryMessage, data); err != nil {
		return err
	}
	ss.log.Trace("frame sent", "type", protocol.TypeOf(frame))
	return nil
}

// rejectConn sends a Reject on a connection without a session, closes it
// and waits briefly for the peer's close frame.
func rejectConn(conn *websocket.Conn, reject *pb.Frame) {
	defer conn.Close()
	deadline := time.Now().Add(closeGrace)
	_ = conn.SetWriteDeadline(deadline)
	if data, err := protocol.Encode(reject); err == nil {
		if conn.WriteMessage(websocket.BinaryMessage, data) != nil {
			return
		}
	}
	msg := websocket.FormatCloseMessage(websocket.ClosePolicyViolation, truncate(reject.GetReject().GetMessage(), 120))
	if conn.WriteControl(websocket.CloseMessage, msg, deadline) != nil {
		return
	}
	// Read until the peer replies to the close frame, the read fails or the
	// deadline passes. The read limit bounds each message.
	_ = conn.SetReadDeadline(deadline)
	for {
		if _, _, err := conn.NextReader(); err != nil {
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

// sessionFor returns the open session of a worker, or nil.
func (s *Server) sessionFor(workerID string) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions[workerID]
}

// syncedSessions returns the open sessions that finished their state sync.
func (s *Server) syncedSessions() []*session {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*session
	for _, ss := range s.sessions {
		if ss.synced.Load() {
			out = append(out, ss)
		}
	}
	slices.SortFunc(out, func(a, b *session) int {
		return strings.Compare(a.workerID, b.workerID)
	})
	return out
}
