package connector

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"

	"github.com/dtf-io/dtf/plugin/pb"
	"github.com/dtf-io/dtf/protocol"
	wirepb "github.com/dtf-io/dtf/protocol/pb"
)

// waitFor bounds every wait for an event, a frame or a condition.
const waitFor = 5 * time.Second

// fakeCoordinator is a WebSocket server on 127.0.0.1 that speaks the
// session part of the wire protocol. Its hello function decides the reply
// to each Hello. It replies to heartbeats and records every other frame.
type fakeCoordinator struct {
	t      *testing.T
	server *httptest.Server
	// hello returns the reply to the n-th Hello, counted from 1. A nil
	// function or a nil reply welcomes the worker.
	hello func(n int, hello *wirepb.Hello) *wirepb.Frame

	mu        sync.Mutex
	closed    bool
	conns     []*fakeConn
	hellos    []*wirepb.Hello
	helloAt   []time.Time
	handlers  sync.WaitGroup
	taskFrame chan *wirepb.Frame
	// resumable keeps each session's window for a resume; without it every
	// Hello starts a new session.
	resumable bool
	windows   map[string]*protocol.Window
	// compression is the algorithm Welcome chooses when Hello offers it.
	compression string
	// withholdAcks makes every connection stamp ack 0 from now on.
	withholdAcks atomic.Bool
	// sendMu orders sendTask against the replay of a resumed connection,
	// so every numbered frame is either replayed or written after it.
	sendMu sync.Mutex
}

// fakeConn is one worker connection on the fake coordinator.
type fakeConn struct {
	ws          *websocket.Conn
	subprotocol string
	sessionID   string
	owner       *fakeCoordinator
	window      *protocol.Window
	codec       protocol.Codec
	writeMu     sync.Mutex
	replies     chan *wirepb.Heartbeat
	closeCode   chan int
	closeReason chan string
}

func startFake(t *testing.T, hello func(n int, hello *wirepb.Hello) *wirepb.Frame) *fakeCoordinator {
	t.Helper()
	f := &fakeCoordinator{
		t:         t,
		hello:     hello,
		taskFrame: make(chan *wirepb.Frame, 4096),
		windows:   make(map[string]*protocol.Window),
	}
	f.server = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.close)
	return f
}

// url is the base URL that a worker is configured with.
func (f *fakeCoordinator) url() string { return f.server.URL }

func (f *fakeCoordinator) addr() string { return strings.TrimPrefix(f.server.URL, "http://") }

func (f *fakeCoordinator) close() {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	f.server.Close()

	f.mu.Lock()
	for _, c := range f.conns {
		_ = c.ws.Close()
	}
	f.mu.Unlock()
	f.handlers.Wait()
}

func (f *fakeCoordinator) helloCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.hellos)
}

func (f *fakeCoordinator) helloTimes() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time{}, f.helloAt...)
}

func (f *fakeCoordinator) firstHello() *wirepb.Hello {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.hellos) == 0 {
		return nil
	}
	return f.hellos[0]
}

// latest returns the newest connection.
func (f *fakeCoordinator) latest() *fakeConn {
	f.mu.Lock()
	defer f.mu.Unlock()
	require.NotEmpty(f.t, f.conns, "no worker connected to the fake coordinator")
	return f.conns[len(f.conns)-1]
}

func (f *fakeCoordinator) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		http.Error(w, "closed", http.StatusServiceUnavailable)
		return
	}
	f.handlers.Add(1)
	f.mu.Unlock()
	defer f.handlers.Done()

	if r.URL.Path != protocol.ConnectPath {
		http.NotFound(w, r)
		return
	}
	upgrader := websocket.Upgrader{Subprotocols: []string{protocol.Subprotocol}}
	ws, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	c := &fakeConn{
		owner:       f,
		ws:          ws,
		subprotocol: ws.Subprotocol(),
		replies:     make(chan *wirepb.Heartbeat, 1024),
		closeCode:   make(chan int, 1),
		closeReason: make(chan string, 1),
	}
	ws.SetCloseHandler(func(code int, reason string) error {
		c.closeCode <- code
		c.closeReason <- reason
		c.writeMu.Lock()
		defer c.writeMu.Unlock()
		msg := websocket.FormatCloseMessage(code, "")
		return ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
	})

	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		_ = ws.Close()
		return
	}
	f.conns = append(f.conns, c)
	f.mu.Unlock()
	defer ws.Close()
	f.session(c)
}

// session replies to the Hello, then serves the connection until it fails.
func (f *fakeCoordinator) session(c *fakeConn) {
	_ = c.ws.SetReadDeadline(time.Now().Add(waitFor))
	frame, err := c.read()
	if err != nil || frame.GetHello() == nil {
		return
	}
	f.mu.Lock()
	f.hellos = append(f.hellos, frame.GetHello())
	f.helloAt = append(f.helloAt, time.Now())
	n := len(f.hellos)
	f.mu.Unlock()

	reply := f.welcomeFor(c, n, frame)
	if f.hello != nil {
		if custom := f.hello(n, frame.GetHello()); custom != nil {
			reply = custom
		}
	}
	// sendMu is held from the Welcome until the session is registered, so
	// a test that sends a task as soon as the worker reports connected
	// waits for it instead of finding no session.
	f.sendMu.Lock()
	if err := c.send(reply); err != nil || reply.GetReject() != nil {
		f.sendMu.Unlock()
		return
	}
	if reply.GetWelcome().GetCompression() != "" {
		c.writeMu.Lock()
		c.codec.Compression = reply.GetWelcome().GetCompression()
		c.writeMu.Unlock()
	}
	if reply.GetWelcome().GetResumed() {
		for _, frame := range c.window.Unacknowledged() {
			if err := c.send(frame); err != nil {
				f.sendMu.Unlock()
				return
			}
		}
	}
	f.mu.Lock()
	c.sessionID = reply.GetWelcome().GetSessionId()
	f.mu.Unlock()
	f.sendMu.Unlock()

	for {
		// Long enough for any test, short enough that a forgotten
		// connection ends by itself.
		_ = c.ws.SetReadDeadline(time.Now().Add(2 * waitFor))
		frame, err := c.read()
		if err != nil {
			return
		}
		isNew, err := c.window.Receive(frame)
		if err != nil {
			f.t.Logf("fake coordinator: %v", err)
			return
		}
		if err := c.window.Acknowledge(frame.GetAck()); err != nil {
			f.t.Logf("fake coordinator: %v", err)
			return
		}
		if !isNew {
			continue
		}
		heartbeat := frame.GetHeartbeat()
		switch {
		case heartbeat != nil && heartbeat.GetReply():
			c.replies <- heartbeat
		case heartbeat != nil:
			reply := &wirepb.Frame{Body: &wirepb.Frame_Heartbeat{Heartbeat: &wirepb.Heartbeat{
				SentUnixNano: time.Now().UnixNano(),
				Reply:        true,
				EchoUnixNano: heartbeat.GetSentUnixNano(),
			}}}
			if err := c.send(reply); err != nil {
				return
			}
		default:
			f.taskFrame <- frame
		}
	}
}

// welcomeFor returns the Welcome for the n-th Hello and sets the
// connection's window: the remembered one on a resume, a new one otherwise.
func (f *fakeCoordinator) welcomeFor(c *fakeConn, n int, frame *wirepb.Frame) *wirepb.Frame {
	hello := frame.GetHello()
	f.mu.Lock()
	defer f.mu.Unlock()
	reply := welcome(fmt.Sprintf("s-%d", n))
	if f.compression != "" && len(hello.GetCompression()) > 0 {
		reply.GetWelcome().Compression = f.compression
	}
	if window, ok := f.windows[hello.GetSessionId()]; ok && f.resumable {
		c.window = window
		if err := window.Acknowledge(frame.GetAck()); err != nil {
			f.t.Logf("fake coordinator: %v", err)
		}
		reply.GetWelcome().SessionId = hello.GetSessionId()
		reply.GetWelcome().Resumed = true
		reply.Ack = window.Received()
		return reply
	}
	c.window = protocol.NewWindow(0, 0)
	if f.resumable {
		f.windows[reply.GetWelcome().GetSessionId()] = c.window
	}
	return reply
}

// forget drops every remembered session, like a coordinator restart.
func (f *fakeCoordinator) forget() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.windows = make(map[string]*protocol.Window)
}

// sendTask numbers a task frame in the newest session's window and writes
// it to that session's newest connection. A failed write loses nothing:
// the frame is replayed when the worker resumes.
func (f *fakeCoordinator) sendTask(frame *wirepb.Frame) error {
	f.sendMu.Lock()
	defer f.sendMu.Unlock()
	f.mu.Lock()
	var conn *fakeConn
	for i := len(f.conns) - 1; i >= 0 && conn == nil; i-- {
		if f.conns[i].sessionID != "" {
			conn = f.conns[i]
		}
	}
	if conn == nil {
		f.mu.Unlock()
		return fmt.Errorf("no session")
	}
	window := conn.window
	f.mu.Unlock()
	if err := window.Add(frame); err != nil {
		return err
	}
	_ = conn.send(frame)
	return nil
}

func (c *fakeConn) read() (*wirepb.Frame, error) {
	_, data, err := c.ws.ReadMessage()
	if err != nil {
		return nil, err
	}
	return protocol.Decode(data, protocol.DefaultMaxFrameBytes)
}

// resumableFake starts a fake coordinator that resumes sessions.
func resumableFake(t *testing.T) *fakeCoordinator {
	t.Helper()
	f := startFake(t, nil)
	f.mu.Lock()
	f.resumable = true
	f.mu.Unlock()
	return f
}

// send writes a copy of frame stamped with the connection's ack.
func (c *fakeConn) send(frame *wirepb.Frame) error {
	stamped := &wirepb.Frame{Seq: frame.GetSeq(), Body: frame.Body}
	if c.window != nil && !c.owner.withholdAcks.Load() {
		stamped.Ack = c.window.Received()
	}
	c.writeMu.Lock()
	codec := c.codec
	c.writeMu.Unlock()
	data, err := codec.Encode(stamped)
	if err != nil {
		return err
	}
	return c.sendRaw(data)
}

func (c *fakeConn) sendRaw(data []byte) error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	_ = c.ws.SetWriteDeadline(time.Now().Add(waitFor))
	return c.ws.WriteMessage(websocket.BinaryMessage, data)
}

// closeNormally sends a close frame with code 1000.
func (c *fakeConn) closeNormally() error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "coordinator restarting")
	return c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
}

func welcome(sessionID string) *wirepb.Frame {
	return &wirepb.Frame{Body: &wirepb.Frame_Welcome{Welcome: &wirepb.Welcome{
		SessionId:           sessionID,
		HeartbeatIntervalMs: 2000,
		HeartbeatTimeoutMs:  6000,
		ServerTimeUnixMs:    time.Now().UnixMilli(),
	}}}
}

func reject(code wirepb.Reject_Code, message string, retryAfter time.Duration) *wirepb.Frame {
	return &wirepb.Frame{Body: &wirepb.Frame_Reject{Reject: &wirepb.Reject{
		Code:         code,
		Message:      message,
		RetryAfterMs: retryAfter.Milliseconds(),
	}}}
}

// eventStream replaces the gRPC server stream of Events in tests. It splits
// the events into state changes, task frames and stats; stats that find
// their channel full are dropped, so that tests that ignore them never
// block the stream.
type eventStream struct {
	grpc.ServerStream
	ctx    context.Context
	states chan *pb.StateChange
	frames chan []byte
	stats  chan *pb.ConnectorStats
}

func (s *eventStream) Context() context.Context { return s.ctx }

func (s *eventStream) Send(event *pb.ConnectorEvent) error {
	switch e := event.GetEvent().(type) {
	case *pb.ConnectorEvent_State:
		s.states <- e.State
	case *pb.ConnectorEvent_Frame:
		s.frames <- e.Frame
	case *pb.ConnectorEvent_Stats:
		select {
		case s.stats <- e.Stats:
		default:
		}
	}
	return nil
}

// harness runs a Connector with an Events stream for one test.
type harness struct {
	t         *testing.T
	connector *Connector
	stream    *eventStream
	cancel    context.CancelFunc
	done      chan error
	// log contains the connector's log entries at error level, or at
	// every level when DTF_TEST_LOG is set. It is nil when the test gave
	// the connector a logger of its own.
	log *logRecorder
}

// fastConfig makes every timer of the connector short, so that tests run
// in well under a second per reconnection.
const fastConfig = `{
	"heartbeat_interval": "50ms",
	"heartbeat_timeout": "400ms",
	"backoff_base": "10ms",
	"backoff_multiplier": 2,
	"backoff_cap": "80ms",
	"healthy_after": "10s",
	"dial_timeout": "1s",
	"handshake_timeout": "1s"
}`

func testLogger() hclog.Logger {
	if os.Getenv("DTF_TEST_LOG") == "" {
		return hclog.NewNullLogger()
	}
	return hclog.New(&hclog.LoggerOptions{Name: "reconnection", Level: hclog.Trace, Output: os.Stderr})
}

// recordedLogger returns a JSON logger and the recorder that keeps its
// entries. It logs errors only, or every level echoed to stderr when
// DTF_TEST_LOG is set.
func recordedLogger() (hclog.Logger, *logRecorder) {
	recorder := &logRecorder{echo: os.Getenv("DTF_TEST_LOG") != ""}
	level := hclog.Error
	if recorder.echo {
		level = hclog.Trace
	}
	logger := hclog.New(&hclog.LoggerOptions{
		Name:       "reconnection",
		Level:      level,
		JSONFormat: true,
		Output:     recorder,
	})
	return logger, recorder
}

func connectorConfig(url, configJSON string) *pb.ConnectorConfig {
	return &pb.ConnectorConfig{
		Url:         url,
		WorkerId:    "worker-1",
		Token:       "secret",
		TaskTypes:   []string{"command"},
		Slots:       2,
		Labels:      map[string]string{"os": "linux"},
		HostVersion: "host-test",
		ConfigJson:  []byte(configJSON),
	}
}

// startConnector configures a Connector for url and opens its Events
// stream. The test's cleanup stops it and waits for Events to return.
func startConnector(t *testing.T, url, configJSON string) *harness {
	t.Helper()
	return startConnectorWith(t, url, configJSON, Options{})
}

// startConnectorWith is startConnector with options; the logger, version
// and random source are the test's.
func startConnectorWith(t *testing.T, url, configJSON string, opts Options) *harness {
	t.Helper()
	logger, logs := recordedLogger()
	opts.Logger, opts.Version, opts.Rand = logger, "test", rand.New(rand.NewPCG(1, 2))
	c := New(opts)
	_, err := c.Configure(context.Background(), connectorConfig(url, configJSON))
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{
		t:         t,
		connector: c,
		stream: &eventStream{
			ctx:    ctx,
			states: make(chan *pb.StateChange, 1024),
			frames: make(chan []byte, 1024),
			stats:  make(chan *pb.ConnectorStats, 1024),
		},
		cancel: cancel,
		done:   make(chan error, 1),
		log:    logs,
	}
	go func() { h.done <- c.Events(&pb.Empty{}, h.stream) }()
	t.Cleanup(h.stop)
	return h
}

func (h *harness) stop() {
	stopCtx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	_, err := h.connector.Stop(stopCtx, &pb.Empty{})
	require.NoError(h.t, err)
	h.cancel()
	select {
	case <-h.done:
	case <-time.After(waitFor):
		h.t.Fatal("Events did not return after Stop")
	}
	// The state machine drops a transition that its table does not allow
	// and logs it, so the log is where a wrong transition in the loop shows.
	// Harnesses built with a logger of their own have no log to check.
	if h.log != nil {
		invalid, _ := h.log.withMessage("connection state machine")
		assert.Empty(h.t, invalid, "transitions the state table does not allow")
	}
}

// nextState returns the next state change in state, skipping others.
func (h *harness) nextState(state string) *pb.StateChange {
	h.t.Helper()
	deadline := time.After(waitFor)
	for {
		select {
		case change := <-h.stream.states:
			if change.GetState() == state {
				return change
			}
		case <-deadline:
			h.t.Fatalf("no %s state change within %s", state, waitFor)
			return nil
		}
	}
}

// nextChange returns the next state change, whatever its state.
func (h *harness) nextChange() *pb.StateChange {
	h.t.Helper()
	select {
	case change := <-h.stream.states:
		return change
	case <-time.After(waitFor):
		h.t.Fatalf("no state change within %s", waitFor)
		return nil
	}
}

// nextFrame returns the next task frame forwarded to the host.
func (h *harness) nextFrame() *wirepb.Frame {
	h.t.Helper()
	select {
	case data := <-h.stream.frames:
		frame, err := protocol.Decode(data, protocol.DefaultMaxFrameBytes)
		require.NoError(h.t, err)
		return frame
	case <-time.After(waitFor):
		h.t.Fatalf("no task frame within %s", waitFor)
		return nil
	}
}

// waitEventsReturn waits for Events to return on its own and returns its
// error.
func (h *harness) waitEventsReturn() error {
	h.t.Helper()
	select {
	case err := <-h.done:
		h.done <- err // keep it for stop
		return err
	case <-time.After(waitFor):
		h.t.Fatal("Events did not return")
		return nil
	}
}
