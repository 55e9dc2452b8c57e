package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/dtf-io/dtf/protocol"
	"github.com/dtf-io/dtf/protocol/pb"
)

// workerSettings are the parts of the run configuration that every
// simulated worker uses.
type workerSettings struct {
	url              string
	token            string
	taskType         string
	slots            int
	compression      bool
	handshakeTimeout time.Duration
	backoffBase      time.Duration
	backoffCap       time.Duration
	healthyAfter     time.Duration
	replayFrames     int
}

// rejectError is a Reject received during the handshake or a session.
type rejectError struct {
	code       pb.Reject_Code
	message    string
	retryAfter time.Duration
}

func (e *rejectError) Error() string {
	return fmt.Sprintf("rejected with %s: %s (retry after %s)", e.code, e.message, e.retryAfter)
}

// errSequenceGap ends a session whose peer skipped sequence numbers.
var errSequenceGap = errors.New("sequence gap from coordinator")

// simWorker is one simulated worker: a WebSocket client that speaks the
// wire protocol as a worker host with its reconnection plugin would, and
// completes every assigned task at once with a succeeded outcome.
type simWorker struct {
	index    int
	id       string
	settings *workerSettings
	fleet    *fleet
	backoff  *backoff

	// sessionID and window survive reconnects so that the next hello can
	// ask to resume the session.
	sessionID string
	window    *protocol.Window
	// heldOutcomes are the outcomes sent but not acknowledged, by attempt, like a
	// worker host's outbox.
	heldOutcomes map[taskKey]*pb.TaskOutcome
}

type taskKey struct {
	taskID  string
	attempt uint32
}

func newSimWorker(index int, settings *workerSettings, f *fleet) *simWorker {
	return &simWorker{
		index:        index,
		id:           fmt.Sprintf("load-%06d", index+1),
		settings:     settings,
		fleet:        f,
		backoff:      newBackoff(settings.backoffBase, settings.backoffCap, 2),
		window:       protocol.NewWindow(settings.replayFrames, 0),
		heldOutcomes: map[taskKey]*pb.TaskOutcome{},
	}
}

// run connects and reconnects until ctx ends. After a failed dial or an
// ended session it waits a jittered backoff delay, and at least the
// retry_after_ms of a Reject, as the reconnection plugin does.
func (w *simWorker) run(ctx context.Context) {
	for ctx.Err() == nil {
		w.fleet.recordAttempt(time.Now())
		err := w.connect(ctx)
		if ctx.Err() != nil {
			return
		}
		delay := w.backoff.next()
		var reject *rejectError
		if errors.As(err, &reject) {
			w.fleet.rejects.Add(1)
			delay = max(delay, reject.retryAfter)
		}
		timer := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
	}
}

// connection is one WebSocket connection of a simulated worker.
type connection struct {
	conn    *websocket.Conn
	codec   protocol.Codec
	writeMu sync.Mutex
	window  *protocol.Window
	fleet   *fleet
}

// send stamps the acknowledgement, encodes and writes one frame.
func (c *connection) send(frame *pb.Frame) error {
	frame.Ack = c.window.Received()
	data, err := c.codec.Encode(frame)
	if err != nil {
		return err
	}
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	_ = c.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := c.conn.WriteMessage(websocket.BinaryMessage, data); err != nil {
		return fmt.Errorf("write %s frame: %w", protocol.TypeOf(frame), err)
	}
	c.fleet.framesSent.Add(1)
	return nil
}

// sendTask numbers a task frame, keeps it for replay and sends it. A full
// replay buffer ends the session, because the frames in it can only be
// acknowledged by the coordinator and a resume replays them.
func (c *connection) sendTask(frame *pb.Frame) error {
	if err := c.window.Add(frame); err != nil {
		c.fleet.replayFull.Add(1)
		return err
	}
	return c.send(frame)
}

func (c *connection) read() (*pb.Frame, error) {
	kind, data, err := c.conn.ReadMessage()
	if err != nil {
		return nil, err
	}
	if kind != websocket.BinaryMessage {
		return nil, fmt.Errorf("message type %d is not binary", kind)
	}
	frame, err := c.codec.Decode(data)
	if err != nil {
		return nil, err
	}
	c.fleet.framesReceived.Add(1)
	return frame, nil
}

// connect dials, runs the handshake and serves the session until it ends.
func (w *simWorker) connect(ctx context.Context) error {
	dialer := websocket.Dialer{
		Subprotocols:     []string{protocol.Subprotocol},
		HandshakeTimeout: w.settings.handshakeTimeout,
	}
	dialCtx, cancel := context.WithTimeout(ctx, w.settings.handshakeTimeout)
	conn, _, err := dialer.DialContext(dialCtx, w.settings.url, nil)
	cancel()
	if err != nil {
		return fmt.Errorf("dial %s: %w", w.settings.url, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()

	c := &connection{conn: conn, window: w.window, fleet: w.fleet}
	welcome, ack, err := w.handshake(c)
	if err != nil {
		return err
	}

	// A resumed session keeps both windows: drop what the coordinator
	// acknowledged and replay the rest before any new frame. Otherwise
	// numbering starts again and the state sync follows.
	// NOTE: the resume branch was written before the coordinator could
	// resume a session and has not yet run against one.
	resumed := welcome.GetResumed() && w.sessionID != "" && welcome.GetSessionId() == w.sessionID
	if !resumed {
		w.window = protocol.NewWindow(w.settings.replayFrames, 0)
		c.window = w.window
	}
	w.sessionID = welcome.GetSessionId()
	c.codec.Compression = welcome.GetCompression()
	w.fleet.recordWelcome(w.index, resumed)
	started := time.Now()

	s := &sessionState{synced: resumed}
	if resumed {
		w.fleet.recordSynced()
	}
	err = w.serve(ctx, c, welcome, ack, resumed, s)
	w.fleet.recordDisconnect(s.synced)
	if time.Since(started) >= w.settings.healthyAfter {
		w.backoff.reset()
	}
	return err
}

// handshake sends the hello and reads the welcome or reject. It returns the
// welcome and the acknowledgement the welcome frame carried.
func (w *simWorker) handshake(c *connection) (*pb.Welcome, uint64, error) {
	hello := &pb.Hello{
		WorkerId:      w.id,
		Token:         w.settings.token,
		SessionId:     w.sessionID,
		TaskTypes:     []string{w.settings.taskType},
		Slots:         uint32(w.settings.slots),
		HostVersion:   "dtf-load",
		PluginVersion: "dtf-load",
	}
	if w.settings.compression {
		hello.Compression = []string{protocol.CompressionDeflate}
	}
	if err := c.send(&pb.Frame{Body: &pb.Frame_Hello{Hello: hello}}); err != nil {
		return nil, 0, err
	}
	_ = c.conn.SetReadDeadline(time.Now().Add(w.settings.handshakeTimeout))
	frame, err := c.read()
	if err != nil {
		return nil, 0, fmt.Errorf("read welcome: %w", err)
	}
	if reject := frame.GetReject(); reject != nil {
		return nil, 0, &rejectError{
			code:       reject.GetCode(),
			message:    reject.GetMessage(),
			retryAfter: time.Duration(reject.GetRetryAfterMs()) * time.Millisecond,
		}
	}
	welcome := frame.GetWelcome()
	if welcome == nil {
		return nil, 0, fmt.Errorf("expected welcome or reject, got %s", protocol.TypeOf(frame))
	}
	return welcome, frame.GetAck(), nil
}

// sessionState is what one connection tracks while it serves frames.
type sessionState struct {
	synced bool
}

// serve replays or syncs, starts the heartbeats and handles frames until
// the connection fails or ctx ends.
func (w *simWorker) serve(ctx context.Context, c *connection, welcome *pb.Welcome, ack uint64,
	resumed bool, s *sessionState) error {
	interval := time.Duration(welcome.GetHeartbeatIntervalMs()) * time.Millisecond
	timeout := time.Duration(welcome.GetHeartbeatTimeoutMs()) * time.Millisecond
	if interval <= 0 || timeout <= 0 {
		return fmt.Errorf("welcome without heartbeat settings: interval %s, timeout %s", interval, timeout)
	}

	if resumed {
		if err := c.window.Acknowledge(ack); err != nil {
			return fmt.Errorf("resume: %w", err)
		}
		for _, frame := range c.window.Unacknowledged() {
			if err := c.send(frame); err != nil {
				return err
			}
		}
	} else if err := c.sendTask(w.stateSync()); err != nil {
		return err
	}

	hbCtx, stopHeartbeats := context.WithCancel(ctx)
	defer stopHeartbeats()
	go sendHeartbeats(hbCtx, c, interval)

	for {
		_ = c.conn.SetReadDeadline(time.Now().Add(timeout))
		frame, err := c.read()
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		if err := c.window.Acknowledge(frame.GetAck()); err != nil {
			return err
		}
		fresh, err := c.window.Receive(frame)
		if err != nil {
			return fmt.Errorf("%w: %w", errSequenceGap, err)
		}
		if !fresh {
			continue
		}
		if err := w.handle(c, frame, s); err != nil {
			return err
		}
	}
}

// stateSync reports no running attempts, because tasks finish at once, and
// the outcomes still held.
func (w *simWorker) stateSync() *pb.Frame {
	sync := &pb.StateSync{}
	for key := range w.heldOutcomes {
		sync.HeldOutcomes = append(sync.HeldOutcomes, &pb.TaskRef{TaskId: key.taskID, Attempt: key.attempt})
	}
	return &pb.Frame{Body: &pb.Frame_StateSync{StateSync: sync}}
}

// handle acts on one new frame from the coordinator.
func (w *simWorker) handle(c *connection, frame *pb.Frame, s *sessionState) error {
	switch body := frame.GetBody().(type) {
	case *pb.Frame_Heartbeat:
		if body.Heartbeat.GetReply() {
			return nil
		}
		return c.send(&pb.Frame{Body: &pb.Frame_Heartbeat{Heartbeat: &pb.Heartbeat{
			SentUnixNano: time.Now().UnixNano(),
			Reply:        true,
			EchoUnixNano: body.Heartbeat.GetSentUnixNano(),
		}}})
	case *pb.Frame_StateSyncResult:
		if !s.synced {
			s.synced = true
			w.fleet.recordSynced()
		}
		for _, outcome := range w.heldOutcomes {
			if err := c.sendTask(&pb.Frame{Body: &pb.Frame_TaskOutcome{TaskOutcome: outcome}}); err != nil {
				return err
			}
		}
		return nil
	case *pb.Frame_Assign:
		return w.runTask(c, body.Assign)
	case *pb.Frame_OutcomeAck:
		ref := body.OutcomeAck.GetRef()
		delete(w.heldOutcomes, taskKey{ref.GetTaskId(), ref.GetAttempt()})
		w.fleet.recordOutcomeAck(body.OutcomeAck.GetApplied())
		return nil
	case *pb.Frame_CancelTask:
		// Tasks finish when assigned, so there is nothing to stop.
		return nil
	case *pb.Frame_Reject:
		return &rejectError{
			code:       body.Reject.GetCode(),
			message:    body.Reject.GetMessage(),
			retryAfter: time.Duration(body.Reject.GetRetryAfterMs()) * time.Millisecond,
		}
	default:
		w.fleet.unknownFrames.Add(1)
		return nil
	}
}

// runTask reports an assigned attempt as started and then as succeeded,
// without running anything.
func (w *simWorker) runTask(c *connection, assign *pb.Assign) error {
	ref := assign.GetRef()
	now := time.Now().UnixMilli()
	if err := c.sendTask(&pb.Frame{Body: &pb.Frame_TaskStarted{TaskStarted: &pb.TaskStarted{Ref: ref}}}); err != nil {
		return err
	}
	outcome := &pb.TaskOutcome{
		Ref:            ref,
		Status:         pb.Status_STATUS_SUCCEEDED,
		StartedUnixMs:  now,
		FinishedUnixMs: now,
	}
	w.heldOutcomes[taskKey{ref.GetTaskId(), ref.GetAttempt()}] = outcome
	return c.sendTask(&pb.Frame{Body: &pb.Frame_TaskOutcome{TaskOutcome: outcome}})
}

// sendHeartbeats sends a heartbeat every interval until ctx ends or a write
// fails; a failed write also fails the reader, which ends the session.
func sendHeartbeats(ctx context.Context, c *connection, interval time.Duration) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			err := c.send(&pb.Frame{Body: &pb.Frame_Heartbeat{Heartbeat: &pb.Heartbeat{
				SentUnixNano: time.Now().UnixNano(),
			}}})
			if err != nil {
				_ = c.conn.Close()
				return
			}
		}
	}
}
