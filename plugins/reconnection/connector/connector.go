// Package connector is the reconnection plugin's implementation of the
// Connector service of plugin/pb, and owns the worker's WebSocket
// connection to the coordinator. It dials, sends Hello and keeps the
// session alive with heartbeats that adapt to the round-trip time. It
// notices a dead peer within the heartbeat timeout and reconnects with
// jittered exponential backoff behind a circuit breaker. Task frames from
// the worker host pass a priority send queue, get sequence numbers and
// stay in a replay buffer until the coordinator acknowledges them, so a
// resumed session loses and repeats nothing.
//
// The package has no go-plugin dependency, so it is tested in process; the
// plugin binary in the parent folder serves it through go-plugin.
package connector

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dtf-io/dtf/plugin/pb"
	"github.com/dtf-io/dtf/protocol"
	wirepb "github.com/dtf-io/dtf/protocol/pb"
)

// Name is the plugin's name in PluginInfo.
const Name = "reconnection"

// eventQueue bounds the events waiting for the Events stream. A full queue
// stops the reader, which pushes back on the coordinator.
const eventQueue = 64

// Options configure a Connector.
type Options struct {
	// Logger receives the connector's logs; nil discards them.
	Logger hclog.Logger
	// Version is the plugin's version, sent in Hello and PluginInfo.
	Version string
	// Rand draws the backoff jitter; nil seeds one at random.
	Rand *rand.Rand
	// StatsInterval is how often the Events stream carries a stats event;
	// zero means DefaultStatsInterval.
	StatsInterval time.Duration
}

// Stats is a snapshot of the connector's counters.
type Stats struct {
	// Connected is true while a session is open.
	Connected bool
	// SessionID is the open session's id, empty while disconnected.
	SessionID string
	// Connections counts the connections that reached Welcome.
	Connections uint64
	// SmoothedRTT, RTTVariance and RTTSamples describe the round-trip time
	// of the open connection, or of the last one while disconnected.
	SmoothedRTT time.Duration
	RTTVariance time.Duration
	RTTSamples  uint64
	// FramesIn and FramesOut count WebSocket messages, heartbeats included,
	// and BytesIn and BytesOut their payload bytes on the wire.
	FramesIn  uint64
	FramesOut uint64
	BytesIn   uint64
	BytesOut  uint64
	// FrameBytesRaw and FrameBytesEncoded are the size of the frames sent
	// before and after compression, without authentication tags.
	FrameBytesRaw     uint64
	FrameBytesEncoded uint64
	// UnknownFrames counts frames whose type this build does not know.
	UnknownFrames uint64
	// MalformedFrames counts messages that did not decode as a frame.
	MalformedFrames uint64
	// RejectedFrames counts messages that failed their authentication tag;
	// each one ended its connection.
	RejectedFrames uint64
	// DuplicateFrames counts sequenced frames received a second time, from
	// a replay, and dropped.
	DuplicateFrames uint64
	// ReplayedFrames counts frames written again after a resume.
	ReplayedFrames uint64
	// Resumes counts connections that resumed the previous session.
	Resumes uint64
	// HeartbeatInterval and HeartbeatTimeout are the adapted values of the
	// open connection, or of the last one while disconnected.
	HeartbeatInterval time.Duration
	HeartbeatTimeout  time.Duration
	// Unacknowledged and UnacknowledgedBytes describe the replay buffer.
	Unacknowledged      int
	UnacknowledgedBytes int
	// Queued is the number of frames in the send queue, per priority.
	Queued [priorityLevels]int
}

type counters struct {
	connections       atomic.Uint64
	framesIn          atomic.Uint64
	framesOut         atomic.Uint64
	bytesIn           atomic.Uint64
	bytesOut          atomic.Uint64
	frameBytesRaw     atomic.Uint64
	frameBytesEncoded atomic.Uint64
	// rttSamples keeps the heartbeat round-trip samples for the next
	// stats event.
	rttSamples      sampleBuffer
	unknownFrames   atomic.Uint64
	malformedFrames atomic.Uint64
	rejectedFrames  atomic.Uint64
	duplicateFrames atomic.Uint64
	replayed        atomic.Uint64
	resumes         atomic.Uint64
}

// Connector implements pb.ConnectorServer. Configure must precede Events;
// one Events stream runs at a time.
type Connector struct {
	pb.UnimplementedConnectorServer

	log           hclog.Logger
	version       string
	rng           *rand.Rand
	statsInterval time.Duration
	stats         counters

	mu  sync.Mutex
	cfg *Config
	// resume is the session handover of the last Configure, which the
	// next Events stream continues; nil starts a new session.
	resume *pb.SessionHandover
	active *session // the welcomed session, nil while disconnected
	last   *session // the most recent welcomed session, for Stats
	loop   *eventLoop
	link   *link // the open Events stream's link, nil without one
}

// eventLoop is one run of the connection loop behind one Events stream.
type eventLoop struct {
	cancel context.CancelCauseFunc
	events chan *pb.ConnectorEvent
	// streamDone is the Events stream's context; events emitted after it
	// ended are dropped.
	streamDone <-chan struct{}
	done       chan struct{}
	machine    *stateMachine
	link       *link
}

var _ pb.ConnectorServer = (*Connector)(nil)

// New returns a Connector that waits for Configure.
func New(opts Options) *Connector {
	logger := opts.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	rng := opts.Rand
	if rng == nil {
		rng = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	statsInterval := opts.StatsInterval
	if statsInterval <= 0 {
		statsInterval = DefaultStatsInterval
	}
	return &Connector{log: logger, version: opts.Version, rng: rng, statsInterval: statsInterval}
}

// Info returns the plugin's name and version.
func (c *Connector) Info(context.Context, *pb.Empty) (*pb.PluginInfo, error) {
	return &pb.PluginInfo{Name: Name, Version: c.version}, nil
}

// Configure validates and stores the configuration. A config with
// problems returns them in the response and is not stored, and with
// validate_only set a valid one is not stored either. It fails while an
// Events stream is open.
func (c *Connector) Configure(_ context.Context, in *pb.ConnectorConfig) (*pb.ConfigureResponse, error) {
	cfg, err := ParseConfig(in)
	var problems *ConfigError
	if errors.As(err, &problems) {
		return &pb.ConfigureResponse{Problems: problems.Problems}, nil
	}
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := checkHandover(cfg, in.GetResume()); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if in.GetValidateOnly() {
		return &pb.ConfigureResponse{}, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.loop != nil {
		return nil, status.Error(codes.FailedPrecondition,
			"cannot configure the reconnection plugin while its Events stream is open; call Stop first")
	}
	c.cfg = cfg
	c.resume = in.GetResume()
	c.log.Info("configured", "url", cfg.URL,
		"heartbeat_interval", cfg.HeartbeatInterval, "heartbeat_timeout", cfg.HeartbeatTimeout,
		"resume_session_id", c.resume.GetSessionId())
	return &pb.ConfigureResponse{}, nil
}

// Events runs the connection loop and streams its state changes and the
// inbound task frames until Stop, a fatal rejection, or the end of the
// stream's context.
func (c *Connector) Events(_ *pb.Empty, stream grpc.ServerStreamingServer[pb.ConnectorEvent]) error {
	c.mu.Lock()
	cfg := c.cfg
	if cfg == nil {
		c.mu.Unlock()
		return status.Error(codes.FailedPrecondition, "call Configure before Events")
	}
	if c.loop != nil {
		c.mu.Unlock()
		return status.Error(codes.FailedPrecondition, "an Events stream is already open; call Stop first")
	}
	// Configure checked the handover, so this fails only on a bug.
	link, err := restoredLink(cfg, c.resume)
	if err != nil {
		c.mu.Unlock()
		return status.Error(codes.Internal, err.Error())
	}
	// A handover is used once: a later stream of this process resumes
	// from its own link.
	c.resume = nil
	ctx, cancel := context.WithCancelCause(stream.Context())
	loop := &eventLoop{
		cancel:     cancel,
		events:     make(chan *pb.ConnectorEvent, eventQueue),
		streamDone: stream.Context().Done(),
		done:       make(chan struct{}),
		link:       link,
	}
	// Each state change is followed by a stats event, so a receiver sees
	// the counters of a connection at its end.
	loop.machine = newStateMachine(func(change *pb.StateChange) {
		loop.emit(change)
		c.emitStats(loop)
	})
	c.loop = loop
	c.link = loop.link
	c.mu.Unlock()

	go func() {
		defer close(loop.done)
		c.connectLoop(ctx, cfg, loop)
	}()
	statsDone := make(chan struct{})
	go func() {
		defer close(statsDone)
		c.reportStats(ctx, loop, c.statsInterval)
	}()
	err = c.relay(stream, loop)
	cancel(nil)
	<-statsDone

	c.mu.Lock()
	c.loop = nil
	c.link = nil
	c.mu.Unlock()
	return err
}

// relay sends the loop's events on the stream until the loop has ended and
// its queued events are sent. A failed send stops the loop.
func (c *Connector) relay(stream grpc.ServerStreamingServer[pb.ConnectorEvent], loop *eventLoop) error {
	var sendErr error
	send := func(event *pb.ConnectorEvent) {
		if sendErr != nil {
			return
		}
		if err := stream.Send(event); err != nil {
			sendErr = err
			loop.cancel(fmt.Errorf("events stream failed: %w", err))
		}
	}
	for {
		select {
		case event := <-loop.events:
			send(event)
		case <-loop.done:
			// Every emit finished before done closed, so the queue holds
			// the last events.
			for {
				select {
				case event := <-loop.events:
					send(event)
				default:
					return sendErr
				}
			}
		}
	}
}

// Send queues one task frame for the coordinator and returns once the send
// queue took it. From the first connected event until the loop ends, it
// queues also while disconnected: the frame is written after the next
// welcome, or dropped when the coordinator starts a new session, whose
// state sync replaces it. While the frame's priority level is full it
// blocks for up to send_timeout and then fails with ResourceExhausted. It
// fails with Unavailable before the first session and after the loop ended,
// and with InvalidArgument for a frame that is not a task frame or is too
// large.
func (c *Connector) Send(ctx context.Context, req *pb.SendRequest) (*pb.Empty, error) {
	cfg, link, err := c.openLink()
	if err != nil {
		return nil, err
	}
	frame, frameType, err := parseTaskFrame(cfg, req.GetFrame())
	if err != nil {
		return nil, err
	}
	sendCtx, cancel := context.WithTimeout(ctx, cfg.SendTimeout)
	defer cancel()
	err = link.queue.Push(sendCtx, priorityOf(frameType), frame)
	if err != nil {
		return nil, pushError(ctx, err, frameType, cfg, false)
	}
	return &pb.Empty{}, nil
}

// SendBatch queues the request's frames in order, each with the checks of
// Send, and stops at the first frame it cannot queue. The response counts
// the frames queued and carries the status that Send would have returned
// for the next one. All frames together wait at most send_timeout, or the
// request's timeout_ms when that is shorter, for room in the send queue.
// A frame that is still waiting then fails with ResourceExhausted, or with
// DeadlineExceeded when timeout_ms ran out. Either way the frames after it
// are not queued.
func (c *Connector) SendBatch(ctx context.Context, req *pb.SendBatchRequest) (*pb.SendBatchResponse, error) {
	cfg, link, err := c.openLink()
	if err != nil {
		return rejectedAt(0, err), nil
	}

	wait, byRequest := cfg.SendTimeout, false
	if requested := time.Duration(req.GetTimeoutMs()) * time.Millisecond; requested > 0 && requested < wait {
		wait, byRequest = requested, true
	}
	sendCtx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()

	frames := req.GetFrames()
	for i, data := range frames {
		frame, frameType, err := parseTaskFrame(cfg, data)
		if err != nil {
			return rejectedAt(i, err), nil
		}
		err = link.queue.Push(sendCtx, priorityOf(frameType), frame)
		if err != nil {
			return rejectedAt(i, pushError(ctx, err, frameType, cfg, byRequest)), nil
		}
	}
	return &pb.SendBatchResponse{Accepted: uint32(len(frames))}, nil
}

// openLink returns the configuration and the link of the open Events
// stream, or Unavailable while Send cannot queue frames.
func (c *Connector) openLink() (*Config, *link, error) {
	c.mu.Lock()
	cfg, link := c.cfg, c.link
	c.mu.Unlock()
	if link == nil || !link.isOpen() {
		return nil, nil, status.Error(codes.Unavailable,
			"no session open with the coordinator; retry after the next connected event")
	}
	return cfg, link, nil
}

// parseTaskFrame checks that data is a task frame within max_frame_bytes
// that the coordinator can decode, and returns it as a frame that carries
// the host's bytes, without the sequence number and acknowledgement, which
// the writer sets. The frame is not decoded: the writer sends the bytes on
// as they came. The error is an InvalidArgument status.
func parseTaskFrame(cfg *Config, data []byte) (*wirepb.Frame, string, error) {
	if len(data) > cfg.MaxFrameBytes {
		return nil, "", status.Errorf(codes.InvalidArgument,
			"frame of %d bytes exceeds max_frame_bytes %d; shrink the frame or raise max_frame_bytes",
			len(data), cfg.MaxFrameBytes)
	}
	frameType, body, err := protocol.Scan(data, cfg.MaxFrameBytes)
	if err != nil {
		return nil, "", status.Errorf(codes.InvalidArgument, "invalid frame: %v", err)
	}
	if frameType == protocol.TypeUnknown || protocol.SessionTypes[frameType] {
		return nil, "", status.Errorf(codes.InvalidArgument,
			"cannot send a %s frame: the host sends only task frames, the plugin sends session frames",
			frameType)
	}
	return relayedFrame(body), frameType, nil
}

// relayedFrame returns a frame that holds body, the bytes of a checked
// task frame, as its unknown fields. Its Body stays nil, and write sends
// the bytes as they are with the frame's sequence number and the current
// acknowledgement in front of them.
func relayedFrame(body []byte) *wirepb.Frame {
	frame := &wirepb.Frame{}
	frame.ProtoReflect().SetUnknown(body)
	return frame
}

// pushError converts an error of sendQueue.Push into the status that Send
// and SendBatch return. ctx is the call's context. byRequest is true when
// the wait ended at the caller's timeout_ms rather than at send_timeout.
func pushError(ctx context.Context, err error, frameType string, cfg *Config, byRequest bool) error {
	switch {
	case errors.Is(err, errQueueClosed):
		return status.Errorf(codes.Unavailable,
			"send %s frame: the connection loop ended; retry after the next connected event", frameType)
	case ctx.Err() != nil:
		return status.FromContextError(ctx.Err()).Err()
	case byRequest:
		return status.Errorf(codes.DeadlineExceeded,
			"send %s frame: send queue still full when the batch's timeout_ms ran out", frameType)
	default:
		return status.Errorf(codes.ResourceExhausted,
			"send %s frame: send queue still full after send_timeout %s, because the coordinator "+
				"has not acknowledged earlier frames; retry later or raise send_queue_frames",
			frameType, cfg.SendTimeout)
	}
}

// rejectedAt returns the SendBatch response for a batch whose first index
// frames were queued and whose next frame failed with err, a gRPC status.
func rejectedAt(index int, err error) *pb.SendBatchResponse {
	rejection := status.Convert(err)
	return &pb.SendBatchResponse{
		Accepted:     uint32(index),
		ErrorCode:    uint32(rejection.Code()),
		ErrorMessage: rejection.Message(),
	}
}

// Stop closes the open session with a normal WebSocket close, ends the
// Events stream with a closed event and waits for the loop to end. Without
// an open Events stream it does nothing.
func (c *Connector) Stop(ctx context.Context, _ *pb.Empty) (*pb.Empty, error) {
	c.mu.Lock()
	loop := c.loop
	c.mu.Unlock()
	if loop == nil {
		return &pb.Empty{}, nil
	}
	loop.cancel(errStopped)
	select {
	case <-loop.done:
		return &pb.Empty{}, nil
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

// Stats returns a snapshot of the counters and of the current or last
// connection's round-trip time.
func (c *Connector) Stats() Stats {
	c.mu.Lock()
	active, last, link := c.active, c.last, c.link
	c.mu.Unlock()
	stats := Stats{
		Connections:       c.stats.connections.Load(),
		FramesIn:          c.stats.framesIn.Load(),
		FramesOut:         c.stats.framesOut.Load(),
		BytesIn:           c.stats.bytesIn.Load(),
		BytesOut:          c.stats.bytesOut.Load(),
		FrameBytesRaw:     c.stats.frameBytesRaw.Load(),
		FrameBytesEncoded: c.stats.frameBytesEncoded.Load(),
		UnknownFrames:     c.stats.unknownFrames.Load(),
		MalformedFrames:   c.stats.malformedFrames.Load(),
		RejectedFrames:    c.stats.rejectedFrames.Load(),
		DuplicateFrames:   c.stats.duplicateFrames.Load(),
		ReplayedFrames:    c.stats.replayed.Load(),
		Resumes:           c.stats.resumes.Load(),
	}
	if active != nil {
		stats.Connected = true
		stats.SessionID = active.id
	}
	if last != nil {
		var samples int
		stats.SmoothedRTT, stats.RTTVariance, samples = last.rtt.Get()
		stats.RTTSamples = uint64(samples)
		stats.HeartbeatInterval, stats.HeartbeatTimeout = last.heartbeat()
	}
	if link != nil {
		window, _ := link.resumePoint()
		stats.Unacknowledged, stats.UnacknowledgedBytes = window.Pending()
		stats.Queued = link.queue.Len()
	}
	return stats
}

func (c *Connector) setActive(s *session) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.active = s
	if s != nil {
		c.last = s
	}
}

// hooks returns the callbacks that tie a session to this connector and to
// the Events stream of loop.
func (c *Connector) hooks(loop *eventLoop) sessionHooks {
	return sessionHooks{
		forward: func(s *session, data []byte) bool {
			event := &pb.ConnectorEvent{Event: &pb.ConnectorEvent_Frame{Frame: data}}
			select {
			case loop.events <- event:
				return true
			case <-s.done:
				// An export hands the session over as it is, so a frame
				// that was read must reach the host before the stream ends.
				if loop.link.isExporting() {
					select {
					case loop.events <- event:
						return true
					case <-loop.streamDone:
					}
				}
				return false
			case <-loop.streamDone:
				return false
			}
		},
		unknown: func(s *session) {
			if c.stats.unknownFrames.Add(1) == 1 {
				s.log.Warn("ignoring a frame of a type this plugin version does not know; "+
					"further ones are only counted; upgrade the reconnection plugin to handle them",
					"plugin_version", c.version)
			}
		},
		stats: &c.stats,
		link:  loop.link,
	}
}

// emit queues a state change for the Events stream, or drops it when the
// stream has ended.
func (loop *eventLoop) emit(change *pb.StateChange) {
	event := &pb.ConnectorEvent{Event: &pb.ConnectorEvent_State{State: change}}
	select {
	case loop.events <- event:
	case <-loop.streamDone:
	}
}

// describe fills the fields of change that come from the current or last
// connection: round-trip time and the heartbeat values in force, or the
// configured heartbeat values before any connection.
func describe(change *pb.StateChange, cfg *Config, s *session) *pb.StateChange {
	interval, timeout := cfg.HeartbeatInterval, cfg.HeartbeatTimeout
	if s != nil {
		smoothed, _, _ := s.rtt.Get()
		change.RttMicros = smoothed.Microseconds()
		interval, timeout = s.heartbeat()
	}
	change.HeartbeatIntervalMs = interval.Milliseconds()
	change.HeartbeatTimeoutMs = timeout.Milliseconds()
	return change
}

// isAuthFailure returns the Reject behind err, if any, and whether it is an
// authentication failure, which no retry with the same credentials fixes.
func isAuthFailure(err error) (*RejectError, bool) {
	var reject *RejectError
	if errors.As(err, &reject) && reject.Code == wirepb.Reject_CODE_UNAUTHENTICATED {
		return reject, true
	}
	return reject, false
}
