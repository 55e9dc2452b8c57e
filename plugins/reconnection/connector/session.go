package connector

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/hashicorp/go-hclog"

	"github.com/dtf-io/dtf/protocol"
	"github.com/dtf-io/dtf/protocol/pb"
)

// outboundQueue bounds the messages waiting for the writer goroutine. A full
// queue blocks Send and heartbeat replies until the writer catches up or the
// connection ends.
const outboundQueue = 64

// closeWait bounds the wait for the coordinator's close frame after the
// worker sent its own, and the write of a close frame.
const closeWait = time.Second

var (
	// errSessionClosed is returned for a frame that was not written because
	// its connection ended first.
	errSessionClosed = errors.New("connection to the coordinator closed before the frame was written")
	// errStopped ends a connection that the host stopped.
	errStopped = errors.New("stopped by the worker host")
)

// RejectError is a Reject frame from the coordinator, which refused a Hello
// or ended a session.
type RejectError struct {
	Code       pb.Reject_Code
	Message    string
	RetryAfter time.Duration
}

func (e *RejectError) Error() string {
	msg := fmt.Sprintf("coordinator rejected the session: %s: %s", e.Code, e.Message)
	if e.RetryAfter > 0 {
		msg += fmt.Sprintf(" (retry after %s)", e.RetryAfter)
	}
	return msg
}

// outbound is one message for the writer goroutine: a frame, which the
// writer encodes and stamps with the current ack, or a WebSocket control
// message in data. result, when set, receives the outcome of the write and
// must have room for one value.
type outbound struct {
	messageType int
	frame       *pb.Frame
	data        []byte
	result      chan error
}

// sessionHooks connect a session to its Connector.
type sessionHooks struct {
	// forward passes an inbound task frame to the Events stream. It returns
	// true when the stream took the frame, false when the connection or the
	// stream ended first.
	forward func(s *session, data []byte) bool
	// unknown is called for each frame whose type this build does not know.
	unknown func(s *session)
	stats   *counters
	link    *link
}

// session is one WebSocket connection to the coordinator, from the dial to
// its end. It runs exactly one reader and one writer goroutine. Every write
// goes through the writer, frames, heartbeats, pings, pongs and close frames
// alike, because gorilla/websocket allows one concurrent writer per
// connection.
type session struct {
	cfg *Config
	log hclog.Logger
	ws  *websocket.Conn
	// conn is the TCP connection under ws, which the writer corks while
	// it writes a burst of queued frames.
	conn  *corkConn
	hooks sessionHooks
	rtt   protocol.RTTEstimator

	// helloWindow is the window of the previous session, whose Received
	// value Hello carries.
	helloWindow *protocol.Window
	// resumeID is the session id that Hello names, empty for a new session.
	resumeID string

	// handshake is the SCRAM exchange of a worker with a secret, nil in the
	// token mode. transcript hashes the handshake messages, and proofSent
	// is set once the Proof is queued; the reader uses all three.
	handshake *protocol.ClientHandshake
	// secret is the secret of this handshake, which the link remembers
	// once the coordinator welcomes it.
	secret     string
	transcript protocol.Transcript
	proofSent  bool
	// inbound is the message being dispatched, for handlers that need its
	// bytes; only the reader uses it.
	inbound []byte
	// opener checks the tags of received messages, and is used only by the
	// reader. sealer tags sent messages; the reader sets it before it
	// marks the session welcomed, and only the writer uses it after that.
	// Both stay nil in the token mode.
	opener *protocol.Opener
	sealer *protocol.Sealer

	// Set by the reader from Welcome before welcomed is closed, and read
	// only after that.
	id      string
	resumed bool
	window  *protocol.Window
	codec   protocol.Codec
	bounds  protocol.HeartbeatBounds

	// interval and timeout are the heartbeat period and read timeout in
	// force, adapted to the round-trip time, in nanoseconds.
	interval atomic.Int64
	timeout  atomic.Int64
	// unacked counts the sequenced frames received since the writer last
	// wrote a frame, which carried their acknowledgement.
	unacked  atomic.Int64
	ackNudge chan struct{}
	// acked has a value after an inbound ack freed room in the window.
	acked chan struct{}

	// helloSentAt is when Hello was queued, in Unix nanoseconds; the wait
	// for Welcome is the first round-trip sample.
	helloSentAt atomic.Int64
	welcomed    chan struct{}
	isWelcomed  atomic.Bool
	handshakeBy time.Time
	// rotated is set when the session ends because secret_file holds a
	// new credential, so the loop redials at once instead of backing off.
	rotated atomic.Bool
	// reportedSecretProblem is set once watchSecretFile logged that the
	// file cannot be used; only that goroutine reads and writes it.
	reportedSecretProblem bool

	out        chan outbound
	done       chan struct{}
	endOnce    sync.Once
	endErr     error
	readerDone chan struct{}
	writerDone chan struct{}
}

// dialSession opens the WebSocket connection with the dtf subprotocol.
func dialSession(ctx context.Context, cfg *Config, log hclog.Logger, hooks sessionHooks) (*session, error) {
	window, resumeID := hooks.link.resumePoint()
	netDialer := &net.Dialer{Timeout: cfg.DialTimeout}
	// gorilla/websocket dials once per DialContext call, from the calling
	// goroutine, so conn is the connection under the returned ws.
	var conn *corkConn
	dialer := websocket.Dialer{
		NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			tcp, err := netDialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			conn = newCorkConn(tcp)
			return conn, nil
		},
		HandshakeTimeout: cfg.DialTimeout,
		Subprotocols:     []string{protocol.Subprotocol},
		TLSClientConfig:  cfg.TLS,
	}
	dialCtx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()

	ws, resp, err := dialer.DialContext(dialCtx, cfg.URL, nil)
	var body []byte
	if resp != nil && resp.Body != nil {
		// gorilla/websocket keeps up to 1 KiB of a failed handshake's body.
		body, _ = io.ReadAll(io.LimitReader(resp.Body, 1024))
		_ = resp.Body.Close()
	}
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			return nil, fmt.Errorf("dial %s: %w (HTTP status %d)%s", cfg.URL, err, resp.StatusCode,
				plainToTLSHint(cfg.URL, resp.StatusCode, body))
		}
		if hint := certificateHint(cfg, err); hint != "" {
			return nil, fmt.Errorf("dial %s: %w; %s", cfg.URL, err, hint)
		}
		return nil, fmt.Errorf("dial %s: %w", cfg.URL, err)
	}
	if ws.Subprotocol() != protocol.Subprotocol {
		_ = ws.Close()
		return nil, fmt.Errorf("dial %s: the server did not accept subprotocol %q (got %q); "+
			"check that url points at a dtf coordinator of a compatible version",
			cfg.URL, protocol.Subprotocol, ws.Subprotocol())
	}
	if conn == nil {
		_ = ws.Close()
		return nil, fmt.Errorf("dial %s: connection was not made through the session's dialer", cfg.URL)
	}
	// A tagged message carries its tag after a frame of up to the limit.
	ws.SetReadLimit(int64(cfg.MaxFrameBytes + protocol.TagSize))

	s := &session{
		cfg:         cfg,
		log:         log,
		ws:          ws,
		conn:        conn,
		hooks:       hooks,
		helloWindow: window,
		resumeID:    resumeID,
		bounds:      heartbeatBounds(cfg, 0, 0),
		ackNudge:    make(chan struct{}, 1),
		acked:       make(chan struct{}, 1),
		welcomed:    make(chan struct{}),
		out:         make(chan outbound, outboundQueue),
		done:        make(chan struct{}),
		readerDone:  make(chan struct{}),
		writerDone:  make(chan struct{}),
	}
	s.interval.Store(int64(cfg.HeartbeatInterval))
	s.timeout.Store(int64(cfg.HeartbeatTimeout))
	ws.SetPingHandler(s.onPing)
	ws.SetPongHandler(s.onPong)
	ws.SetCloseHandler(s.onClose)
	return s, nil
}

// open starts the reader and writer, sends Hello and waits for Welcome. On
// error the connection is closed and its goroutines have returned.
func (s *session) open(ctx context.Context, pluginVersion string) error {
	s.handshakeBy = time.Now().Add(s.cfg.HandshakeTimeout)
	go s.readLoop()
	go s.writeLoop()

	hello := &pb.Frame{Body: &pb.Frame_Hello{Hello: &pb.Hello{
		WorkerId:      s.cfg.WorkerID,
		Token:         s.cfg.Token,
		SessionId:     s.resumeID,
		TaskTypes:     s.cfg.TaskTypes,
		Slots:         s.cfg.Slots,
		Labels:        s.cfg.Labels,
		HostVersion:   s.cfg.HostVersion,
		PluginVersion: pluginVersion,
		MaxFrameBytes: uint32(s.cfg.MaxFrameBytes),
		Plugins:       s.cfg.Plugins,
	}}}
	if s.cfg.Compression {
		hello.GetHello().Compression = []string{protocol.CompressionDeflate}
	}
	if s.cfg.usesCredential() {
		if err := s.startHandshake(hello.GetHello()); err != nil {
			s.end(fmt.Errorf("start authentication: %w", err))
			return s.finish()
		}
	}
	// The Hello is encoded here rather than by the writer, because the
	// SCRAM transcript needs its bytes as sent.
	hello.Ack = s.helloWindow.Received()
	data, err := protocol.Encode(hello)
	if err != nil {
		s.end(fmt.Errorf("encode hello: %w", err))
		return s.finish()
	}
	s.transcript.Add(data)
	s.helloSentAt.Store(time.Now().UnixNano())
	if err := s.sendMessage(ctx, data); err != nil {
		s.end(fmt.Errorf("send hello: %w", err))
		return s.finish()
	}

	timer := time.NewTimer(time.Until(s.handshakeBy))
	defer timer.Stop()
	select {
	case <-s.welcomed:
		return nil
	case <-s.done:
	case <-timer.C:
		s.end(fmt.Errorf("no welcome from %s within handshake_timeout %s", s.cfg.URL, s.cfg.HandshakeTimeout))
	case <-ctx.Done():
		s.end(errStopped)
	}
	return s.finish()
}

// run waits until the connection ends or ctx is cancelled. On cancel it
// calls draining, writes what the send queue holds for up to closeWait and
// closes the connection with a normal WebSocket close. It returns the cause
// of the end.
func (s *session) run(ctx context.Context, draining func()) error {
	select {
	case <-s.done:
	case <-ctx.Done():
		if errors.Is(context.Cause(ctx), errExported) {
			// No close frame: the coordinator keeps the session for the
			// successor's resume, and the queue goes into the handover.
			s.end(errExported)
			break
		}
		draining()
		s.drainSendQueue()
		s.closeNormally(context.Cause(ctx))
	}
	return s.finish()
}

// drainSendQueue waits up to closeWait for the writer to take every queued
// frame, so a stop does not strand frames that Send accepted.
func (s *session) drainSendQueue() {
	deadline := time.NewTimer(closeWait)
	defer deadline.Stop()
	poll := time.NewTicker(5 * time.Millisecond)
	defer poll.Stop()
	for s.hooks.link.queue.Queued() > 0 {
		select {
		case <-poll.C:
		case <-deadline.C:
			return
		case <-s.done:
			return
		}
	}
}

// closeNormally sends a close frame and waits up to closeWait for the
// coordinator's close frame. The reason distinguishes a stop that the host
// requested from the end of the host's events stream, as when the host
// process died or is frozen.
func (s *session) closeNormally(cause error) {
	reason := protocol.CloseWorkerStopping
	if !errors.Is(cause, errStopped) {
		reason = "worker host unreachable from its connector plugin"
	}
	s.closeFor(reason, errStopped)
}

// finish closes the socket once the connection has ended and waits for the
// reader and the writer. The writer is waited for first, so that a close
// frame it still has to send goes out before the socket closes.
func (s *session) finish() error {
	<-s.done
	<-s.writerDone
	_ = s.ws.Close()
	<-s.readerDone
	return s.endErr
}

// end records the cause of the connection's end; the first cause wins.
func (s *session) end(err error) {
	s.endOnce.Do(func() {
		s.endErr = err
		close(s.done)
	})
}

// sendMessage queues an encoded handshake message and waits until the
// writer has written it.
func (s *session) sendMessage(ctx context.Context, data []byte) error {
	item := outbound{messageType: websocket.BinaryMessage, data: data, result: make(chan error, 1)}
	select {
	case s.out <- item:
	case <-s.done:
		return errSessionClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-item.result:
		return err
	case <-s.done:
		// The writer reports every item it took before it returns.
		<-s.writerDone
		select {
		case err := <-item.result:
			return err
		default:
			return errSessionClosed
		}
	case <-ctx.Done():
		return ctx.Err()
	}
}

// queueControl queues a control message without blocking the reader, which
// calls it from the ping and close handlers. A full queue drops the
// message: the peer then misses one pong, or times out its close handshake.
func (s *session) queueControl(messageType int, data []byte) {
	select {
	case s.out <- outbound{messageType: messageType, data: data}:
	default:
		s.log.Debug("outbound queue full, dropping control message", "type", messageType)
	}
}

// queueMessage queues an encoded handshake message without waiting for
// the write. It blocks while the queue is full, until the connection ends.
func (s *session) queueMessage(data []byte) {
	select {
	case s.out <- outbound{messageType: websocket.BinaryMessage, data: data}:
	case <-s.done:
	}
}

// queueFrame queues a session frame without waiting for the write, for
// heartbeat replies. It blocks while the queue is full, until the
// connection ends.
func (s *session) queueFrame(frame *pb.Frame) {
	select {
	case s.out <- outbound{messageType: websocket.BinaryMessage, frame: frame}:
	case <-s.done:
	}
}

// readDeadline is the handshake deadline until Welcome, then one heartbeat
// timeout from now.
func (s *session) readDeadline() time.Time {
	if !s.isWelcomed.Load() {
		return s.handshakeBy
	}
	return time.Now().Add(time.Duration(s.timeout.Load()))
}

func (s *session) onPing(data string) error {
	s.queueControl(websocket.PongMessage, []byte(data))
	return s.ws.SetReadDeadline(s.readDeadline())
}

func (s *session) onPong(string) error {
	return s.ws.SetReadDeadline(s.readDeadline())
}

// onClose replies to the coordinator's close frame through the writer. The
// read that called it then returns a *websocket.CloseError.
func (s *session) onClose(code int, _ string) error {
	s.queueControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, ""))
	return nil
}

// readLoop reads frames until the connection fails or ends.
func (s *session) readLoop() {
	defer close(s.readerDone)
	for {
		if err := s.ws.SetReadDeadline(s.readDeadline()); err != nil {
			s.end(fmt.Errorf("set read deadline: %w", err))
			return
		}
		messageType, data, err := s.ws.ReadMessage()
		if err != nil {
			s.end(s.describeReadError(err))
			return
		}
		s.hooks.stats.framesIn.Add(1)
		s.hooks.stats.bytesIn.Add(uint64(len(data)))
		if messageType != websocket.BinaryMessage {
			s.malformed(fmt.Errorf("websocket message type %d, expected binary", messageType))
			continue
		}
		// The tag is checked before anything is decoded; a failure ends
		// the connection.
		data, err = s.openMessage(data)
		if err != nil {
			s.end(err)
			return
		}
		frame, err := protocol.Codec{MaxFrameBytes: s.cfg.MaxFrameBytes, MaxDecodedBytes: s.cfg.MaxFrameBytes}.
			Decode(data)
		if err != nil {
			s.malformed(err)
			continue
		}
		if err := s.checkUntaggedWelcome(frame); err != nil {
			s.end(err)
			return
		}
		s.inbound = data
		if err := s.dispatch(frame, data); err != nil {
			s.end(err)
			return
		}
	}
}

func (s *session) describeReadError(err error) error {
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		if !s.isWelcomed.Load() {
			return fmt.Errorf("no welcome from %s within handshake_timeout %s", s.cfg.URL, s.cfg.HandshakeTimeout)
		}
		return fmt.Errorf("no frame from the coordinator within heartbeat_timeout %s: %w",
			time.Duration(s.timeout.Load()), err)
	}
	// gorilla/websocket reports a TCP close without a close frame as close
	// code 1006.
	var closeErr *websocket.CloseError
	if errors.As(err, &closeErr) && closeErr.Code != websocket.CloseAbnormalClosure {
		return fmt.Errorf("coordinator closed the connection: %w", err)
	}
	return fmt.Errorf("connection to the coordinator lost: %w", err)
}

// malformed counts a message that is not a valid frame. The first one of a
// connection is logged; one bad message does not end the connection.
func (s *session) malformed(err error) {
	if s.hooks.stats.malformedFrames.Add(1) == 1 {
		s.log.Warn("ignoring malformed message from the coordinator; further ones are only counted",
			"error", err)
	}
}
