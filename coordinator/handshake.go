package coordinator

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/gorilla/websocket"
	"github.com/hashicorp/go-hclog"

	"github.com/dtf-io/dtf/protocol"
	"github.com/dtf-io/dtf/protocol/pb"
)

// handleConnect upgrades a worker connection, runs the handshake and then
// starts the connection's reader, which serves the session until the
// connection ends; the handler itself returns, so that an idle worker
// holds one goroutine.
func (s *Server) handleConnect(w http.ResponseWriter, r *http.Request) {
	// Registered before the upgrade, so Run's wait cannot start before it.
	s.conns.Add(1)
	defer s.conns.Done()

	if !slices.Contains(websocket.Subprotocols(r), protocol.Subprotocol) {
		s.metrics.connectionRejects[connectionInvalidUpgrade].Add(1)
		s.connLog.Warn(s.log, "upgrade without subprotocol", "websocket upgrade rejected: missing subprotocol",
			"remote_addr", r.RemoteAddr, "subprotocol", protocol.Subprotocol)
		writeError(w, http.StatusBadRequest, "", fmt.Sprintf(
			"missing WebSocket subprotocol %q; connect with a dtf worker of this version", protocol.Subprotocol))
		return
	}
	if !s.allowConnection(w, r) {
		return
	}
	if !s.startHandshake() {
		s.rejectUpgrade(w, r)
		return
	}
	ws, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		s.pendingHandshakes.Add(-1)
		// The upgrader has already written an HTTP error.
		s.metrics.connectionRejects[connectionInvalidUpgrade].Add(1)
		s.connLog.Warn(s.log, "upgrade failed", "websocket upgrade failed", "remote_addr", r.RemoteAddr,
			"error", err)
		return
	}
	// The handshake's messages and those of the token mode carry no tag,
	// so max_frame_bytes bounds them exactly. A tagged message carries its
	// tag after a frame of up to the limit.
	ws.SetReadLimit(int64(s.cfg.Workers.MaxFrameBytes))
	ss, c, welcome := s.handshake(ws, r.RemoteAddr)
	if ss == nil {
		return
	}
	if c.opener != nil {
		ws.SetReadLimit(int64(s.cfg.Workers.MaxFrameBytes + protocol.TagSize))
	}
	s.serveConnection(ss, c, welcome)
}

// startHandshake counts a connection that waits for its hello and reports
// whether it is within workers.max_pending_handshakes.
func (s *Server) startHandshake() bool {
	if s.pendingHandshakes.Add(1) > int64(s.cfg.Workers.MaxPendingHandshakes) {
		s.pendingHandshakes.Add(-1)
		return false
	}
	return true
}

// rejectUpgrade answers an upgrade over the pending handshake limit with
// 503 and a Retry-After of one second up to the handshake timeout, spread
// at random so that the rejected workers do not return together.
func (s *Server) rejectUpgrade(w http.ResponseWriter, r *http.Request) {
	maxSeconds := max(int(s.cfg.Workers.HandshakeTimeout/time.Second), 1)
	retry := 1 + rand.IntN(maxSeconds)
	s.metrics.connectionRejects[connectionPendingHandshakes].Add(1)
	s.connLog.Warn(s.log, "pending handshakes", "websocket upgrade rejected: too many pending handshakes",
		"max_pending_handshakes", s.cfg.Workers.MaxPendingHandshakes, "remote_addr", r.RemoteAddr)
	w.Header().Set("Retry-After", strconv.Itoa(retry))
	writeError(w, http.StatusServiceUnavailable, "", fmt.Sprintf(
		"too many connections wait for their handshake (max_pending_handshakes %d); retry after %d s",
		s.cfg.Workers.MaxPendingHandshakes, retry))
}

// handshake reads the Hello, authenticates the worker, checks the session
// rate, and resumes the named session or registers a new one. It returns
// the session, its new connection and the Welcome to send first, or nil
// after rejecting the connection. The connection counts as a pending
// handshake until handshake returns, and the whole handshake, a SCRAM
// exchange included, ends within handshake_timeout.
func (s *Server) handshake(ws *websocket.Conn, remote string) (*session, *connection, *pb.Frame) {
	defer s.pendingHandshakes.Add(-1)
	log := s.log.Named("session").With("remote_addr", remote)
	if s.shuttingDown.Load() {
		s.rejectHandshake(ws, log, handshakeShuttingDown, "",
			rejectFrame(rejectShuttingDown, "coordinator is shutting down", shutdownRetryHint()))
		return nil, nil, nil
	}
	frame, helloBytes, err := s.readHello(ws)
	if err != nil {
		s.rejectHandshake(ws, log, handshakeNoHello, "", rejectFrame(rejectProtocolError, s.helloError(err), 0))
		return nil, nil, nil
	}
	hello := frame.GetHello()
	if hello == nil {
		// Typically a frame delayed past its session's end, such as an
		// outcome from an evicted worker: the worker must register again,
		// and its outcome stays in its outbox until then.
		s.rejectHandshake(ws, log.With("type", protocol.TypeOf(frame)), handshakeNotHello, "",
			rejectFrame(rejectRegisterAgain, fmt.Sprintf(
				"no session is open on this connection; send hello first, got %s", protocol.TypeOf(frame)), 0))
		return nil, nil, nil
	}
	log = log.With("worker_id", hello.GetWorkerId(), "session_id", hello.GetSessionId())
	if reject := s.checkHello(hello); reject != nil {
		s.rejectHandshake(ws, log, handshakeInvalidHello, "", reject)
		return nil, nil, nil
	}
	auth, reject := s.authenticate(ws, hello, helloBytes, log)
	if reject != nil {
		s.rejectHandshake(ws, log, authRejectReason(reject), "", reject)
		return nil, nil, nil
	}
	if ok, retryAfter := s.admitSession(hello, remote); !ok {
		// admitSession counts and logs the rejection.
		rejectConn(ws, rejectFrame(rejectOverloaded,
			"coordinator sheds a reconnection storm", retryAfter))
		return nil, nil, nil
	}

	c := newConnection(ws, remote, s.cfg.Workers.SendQueue)
	welcome := &pb.Welcome{ServerTimeUnixMs: time.Now().UnixMilli()}
	if s.cfg.Workers.Compression && slices.Contains(hello.GetCompression(), protocol.CompressionDeflate) {
		welcome.Compression = protocol.CompressionDeflate
	}
	c.codec = protocol.Codec{
		Compression:     welcome.Compression,
		MaxFrameBytes:   s.cfg.Workers.MaxFrameBytes,
		MaxDecodedBytes: s.cfg.Workers.DecodedLimit(),
	}

	// The keys are bound to the session id, so they are derived before the
	// connection is attached: for the named session first, and again if a
	// new session replaces it.
	if auth != nil {
		c.credentialID = auth.credentialID
		welcome.ScramServerFinal = auth.serverFinal
		if hello.GetSessionId() != "" && !s.setKeys(c, auth, hello.GetSessionId(), ws, log) {
			return nil, nil, nil
		}
	}
	ss, prev, notResumable := s.resume(hello, frame.GetAck(), c)
	if ss != nil {
		s.resumeSession(ss, prev, frame.GetAck())
		welcome.Resumed = true
	} else {
		if reject := s.checkWorkerIDInUse(hello, remote); reject != nil {
			// The worker authenticated, so its worker_id is its own.
			s.rejectHandshake(ws, log, handshakeWorkerIDInUse, hello.GetWorkerId(), reject)
			return nil, nil, nil
		}
		if notResumable != "" {
			s.connLog.Info(log, "not resumable/"+hello.GetWorkerId(), "session not resumable; starting a new one",
				"reason", notResumable)
		}
		ss = s.newSession(hello)
		if auth != nil && !s.setKeys(c, auth, ss.id, ws, log) {
			return nil, nil, nil
		}
		s.register(ss, c)
	}
	welcome.SessionId = ss.id
	interval, timeout := s.adaptHeartbeat(ss)
	c.setHeartbeat(interval, timeout)
	welcome.HeartbeatIntervalMs = interval.Milliseconds()
	welcome.HeartbeatTimeoutMs = timeout.Milliseconds()
	return ss, c, &pb.Frame{Body: &pb.Frame_Welcome{Welcome: welcome}}
}

// readHello sets the handshake's deadline and reads the first frame. It
// returns the frame and its bytes as received, for the SCRAM transcript.
func (s *Server) readHello(ws *websocket.Conn) (*pb.Frame, []byte, error) {
	_ = ws.SetReadDeadline(time.Now().Add(s.cfg.Workers.HandshakeTimeout))
	return readMessage(ws, s.handshakeCodec())
}

// helloError returns the message of the Reject for a connection that sent
// no valid hello.
func (s *Server) helloError(err error) string {
	var netErr interface{ Timeout() bool }
	if errors.As(err, &netErr) && netErr.Timeout() {
		return fmt.Sprintf("no hello within workers.handshake_timeout %s; send a hello frame first",
			s.cfg.Workers.HandshakeTimeout)
	}
	return "send a hello frame first: " + err.Error()
}

// handshakeRejectMessages are the log messages of rejected handshakes, one
// per reason, so that each reads on its own.
var handshakeRejectMessages = [numHandshakeRejectReasons]string{
	handshakeShuttingDown:    "handshake rejected: coordinator is shutting down",
	handshakeNoHello:         "handshake failed: no valid hello",
	handshakeNotHello:        "handshake rejected: first frame is not hello",
	handshakeInvalidHello:    "worker rejected: invalid hello",
	handshakeUnauthenticated: "worker rejected: authentication failed",
	handshakeProtocolError:   "worker rejected: handshake protocol error",
	handshakeStoreError:      "worker rejected: store read failed",
	handshakeSessionRate:     "worker rejected: session rate limit reached",
	handshakeWorkerIDInUse:   "worker rejected: its worker_id has a live session on another connection",
}

// rejectHandshake counts, logs and sends the Reject of a handshake. The
// log line is rate-limited by reason, and by worker too when workerID is
// set, which callers do only once the worker has authenticated.
// Authentication failures are counted where they are detected, in
// Server.authFailures.
func (s *Server) rejectHandshake(
	ws *websocket.Conn,
	log hclog.Logger,
	reason handshakeRejectReason,
	workerID string,
	reject *pb.Frame,
) {
	if reason != handshakeUnauthenticated {
		s.metrics.handshakeRejects[reason].Add(1)
	}
	level := hclog.Warn
	if reason == handshakeShuttingDown {
		level = hclog.Info
	}
	key := handshakeRejectLabels[reason]
	if workerID != "" {
		key += "/" + workerID
	}
	s.connLog.Log(log, level, key, handshakeRejectMessages[reason], "reason", reject.GetReject().GetMessage())
	rejectConn(ws, reject)
}

// authRejectReason returns the reason of a Reject from authenticate.
func authRejectReason(reject *pb.Frame) handshakeRejectReason {
	switch reject.GetReject().GetCode() {
	case rejectUnauthenticated:
		return handshakeUnauthenticated
	case rejectOverloaded:
		return handshakeStoreError
	default:
		return handshakeProtocolError
	}
}

// setKeys derives the connection's keys for sessionID and reports whether
// that succeeded; on failure it rejects the connection.
func (s *Server) setKeys(c *connection, auth *authResult, sessionID string, ws *websocket.Conn, log hclog.Logger) bool {
	sealer, opener, err := auth.sessionKeys(sessionID)
	if err != nil {
		s.metrics.handshakeRejects[handshakeProtocolError].Add(1)
		log.Error("deriving session keys failed", "session_id", sessionID, "error", err)
		rejectConn(ws, rejectFrame(rejectProtocolError, "the coordinator could not derive session keys", 0))
		return false
	}
	c.sealer, c.opener = sealer, opener
	return true
}

// checkHello returns a Reject for a hello with an invalid worker ID or
// labels, or nil. authenticate checks the credentials.
func (s *Server) checkHello(hello *pb.Hello) *pb.Frame {
	if err := protocol.CheckWorkerID(hello.GetWorkerId()); err != nil {
		return rejectFrame(rejectProtocolError, err.Error()+"; fix worker_id in worker.hcl", 0)
	}
	if problem := checkLabels(hello.GetLabels()); problem != "" {
		return rejectFrame(rejectProtocolError, "invalid labels: "+problem+"; fix labels in worker.hcl", 0)
	}
	return nil
}

// checkWorkerIDInUse returns a Reject for a hello that would start a new
// session while the worker's current session is attached and heard from
// within its heartbeat timeout. Two worker processes then share one
// worker_id, and replacing the live session would lose its attempts. A hello that names the current session is the same worker, which
// may have lost its link without the coordinator noticing yet, so it may
// replace it. The retry hint ends when the live connection would time out
// if it were dead.
func (s *Server) checkWorkerIDInUse(hello *pb.Hello, remote string) *pb.Frame {
	current := s.sessionFor(hello.GetWorkerId())
	if current == nil || current.id == hello.GetSessionId() {
		return nil
	}
	c := current.attached()
	if c == nil {
		return nil
	}
	silent := time.Since(time.Unix(0, current.lastFrame.Load()))
	remaining := c.timeout() - silent
	if remaining <= 0 {
		return nil
	}
	return rejectFrame(rejectWorkerIDInUse, fmt.Sprintf(
		"worker_id %q is connected from %s, which sent a frame %s ago; this connection from %s is a "+
			"second worker process with the same worker_id: give each worker its own worker_id",
		hello.GetWorkerId(), c.remote, silent.Round(time.Millisecond), remote), max(remaining, time.Second))
}

// resumeSession finishes the resume of ss: it closes the session's
// previous connection, which a half-open link may have kept alive, and
// drops the frames that the hello acknowledged. The writer of the new
// connection then sends the rest of the replay buffer after the Welcome.
func (s *Server) resumeSession(ss *session, prev *connection, ack uint64) {
	if prev != nil {
		prev.abort("resumed on a new connection")
	}
	// resume checked that ack is within the frames sent.
	_ = ss.acknowledge(ack)
	s.metrics.connects.Add(1)
	s.metrics.resumes.Add(1)
	frames, bytes := ss.window.Pending()
	s.connLog.Info(ss.log, "resumed/"+ss.workerID, "worker resumed its session", "ack", ack,
		"replay_frames", frames, "replay_bytes", bytes, "received", ss.window.Received())

	// The worker replays the outcomes of attempts that ended while it was
	// away right after the Welcome. Those lost meanwhile wait for them, as
	// after a state sync.
	ss.mu.Lock()
	lost := ss.lostAway
	ss.lostAway = nil
	ss.mu.Unlock()
	if len(lost) > 0 {
		ctx, cancel := storeContext()
		defer cancel()
		if err := s.holdAttempts(ctx, ss, lost); err != nil {
			ss.log.Error("holding queued tasks for the late outcomes of their lost attempts failed; "+
				"they may run again", "error", err)
		}
	}
}
