package host

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dtf-io/dtf/host/config"
	dtfplugin "github.com/dtf-io/dtf/plugin"
	"github.com/dtf-io/dtf/plugin/pb"
	"github.com/dtf-io/dtf/protocol"
	wirepb "github.com/dtf-io/dtf/protocol/pb"
)

// Timeouts of single calls to the connector.
const (
	// defaultSendTimeout bounds a Send of a frame that must arrive: a state sync
	// or an outcome. The reconnection plugin itself waits up to its
	// send_timeout (30s by default) for room in a full send queue and then
	// fails with ResourceExhausted. This bound lies above that default, so
	// the plugin's setting decides and only a hung plugin reaches this one.
	// A send_timeout above it is cut to it. Either failure counts as not
	// sent, and the resender tries again with backoff. Only the resender
	// waits this long, never a task.
	defaultSendTimeout = 35 * time.Second
	// bestEffortTimeout bounds the life of a frame whose loss is harmless,
	// such as progress, from the call until the plugin queued it. The
	// executor's stream waits only while the sender's queue is full, and
	// by at most this much per report.
	bestEffortTimeout = time.Second
	stopTimeout       = 5 * time.Second
)

var errNotConnected = errors.New("no connector plugin running")

// superviseConnector runs the connector until ctx ends, relaunching the
// plugin with the restart backoff whenever its Events stream breaks. A
// go-plugin client cannot be restarted, so each relaunch is a new process
// and client. The new process opens a new session, so the host sends a
// state sync and then every outcome that the coordinator has not
// acknowledged.
func (h *Host) superviseConnector(ctx context.Context, proc pluginProcess) error {
	backoff := h.newPluginBackoff(h.connectorPlugin())
	logger := h.logger.With("plugin", h.connectorPlugin().Name)
	// exit is how the last connector process ended, for the restart event.
	exit := ""
	// resume is the session that an upgrade handed over to proc.
	var resume *pb.SessionHandover
	for {
		started := time.Now()
		var err error
		if proc != nil {
			err = h.runConnector(ctx, proc, resume)
			resume = nil
		}
		// A live upgrade ends the old process's stream on purpose, and
		// its successor takes over without a restart backoff (upgrade.go).
		if next, ok := h.takeSwap(ctx, proc); ok {
			proc, resume = next.proc, next.resume
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, ErrConnectorFatal) {
			return err
		}
		ran := time.Duration(0)
		if proc != nil {
			ran = time.Since(started)
			exit = awaitExit(proc, exitAwait)
			h.dropConnector(proc)
			h.recordConnectorStopped()
			if h.connectorPlugin().Restart.Never() {
				return connectorStaysDown(h.connectorPlugin(), err, exit)
			}
		}
		delay, recent, looping := backoff.crashed(time.Now(), ran)
		if proc != nil {
			logger.Warn("connector plugin stopped, restarting it", "error", err, "exit", exit,
				"ran_for", ran.Round(time.Millisecond), "restart_in", delay.Round(time.Millisecond))
		}
		if looping {
			logger.Warn("connector plugin is crash looping; the worker is offline while it is down, "+
				"check its log", "crashes", recent, "window", restartWarnWindow)
		}
		if !sleepCtx(ctx, delay) {
			return nil
		}
		proc, err = h.launchConnector(ctx)
		if err != nil {
			logger.Error("connector plugin restart failed, trying again", "error", err)
			proc = nil
			continue
		}
		h.recordRestart(h.connectorPlugin(), exit)
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}

// dropConnector clears a connector that stopped and kills its process.
func (h *Host) dropConnector(proc pluginProcess) {
	h.mu.Lock()
	if h.connectorProc == proc {
		h.connector, h.connectorProc = nil, nil
	}
	h.mu.Unlock()
	// Senders paused by an upgrade that failed to hand over fail now as
	// not connected, instead of waiting out their timeouts.
	h.resumeSenders()
	proc.Kill()
}

// connectorConfig returns the Configure request of connector process proc
// of plugin block p.
func (h *Host) connectorConfig(p config.Plugin, proc pluginProcess) *pb.ConnectorConfig {
	return &pb.ConnectorConfig{
		Url:         h.cfg.Coordinator.URL,
		WorkerId:    h.cfg.Coordinator.WorkerID,
		Token:       h.cfg.Coordinator.Token,
		Secret:      h.cfg.Coordinator.Secret,
		SecretFile:  h.cfg.Coordinator.SecretFile,
		CaFile:      h.cfg.Coordinator.CAFile,
		TaskTypes:   h.taskTypes(),
		Slots:       uint32(h.cfg.Slots),
		Labels:      h.cfg.Labels,
		HostVersion: Version,
		ConfigJson:  p.ConfigJSON,
		Plugins:     h.hostPlugins(proc),
	}
}

// runConnector configures the connector, opens its Events stream and
// handles events until the stream ends. When ctx ends it calls the
// connector's Stop, which closes the session cleanly, and then cancels the
// stream. A non-nil resume is a session that an upgrade handed over; the
// connector then continues it, and senders paused by the upgrade go on
// once the stream carries its first event.
func (h *Host) runConnector(ctx context.Context, proc pluginProcess, resume *pb.SessionHandover) error {
	client := proc.Connector()
	p := h.connectorPlugin()
	req := h.connectorConfig(p, proc)
	req.Resume = resume
	resp, err := client.Configure(ctx, req)
	if resume != nil && (err != nil || len(resp.GetProblems()) > 0) {
		// The config itself passed the upgrade's health check, so the
		// handover is what failed; a new session loses no outcome.
		h.logger.Warn("new connector plugin rejected the handed-over session; it starts a new session",
			"session_id", resume.GetSessionId(), "error", err)
		req.Resume, resume = nil, nil
		resp, err = client.Configure(ctx, req)
	}
	err = configureResult(p, resp.GetProblems(), err)
	var rejected *configureError
	if errors.As(err, &rejected) {
		// A restart would be rejected the same way, so stop the worker.
		return fatalConfigError{fmt.Errorf("invalid config for connector plugin %s: %w", p.Name, h.locate(p, err))}
	}
	if err != nil {
		return err
	}

	streamCtx, cancelStream := context.WithCancel(context.Background())
	defer cancelStream()
	stream, err := client.Events(streamCtx, &pb.Empty{})
	if err != nil {
		return fmt.Errorf("open events of connector plugin %s: %w", p.Name, err)
	}
	// The sender lives as long as this Events stream; a send after it
	// closed fails as not connected.
	sender := dtfplugin.NewBatchSender(client, dtfplugin.BatchSenderOptions{
		AsyncTimeout: bestEffortTimeout,
		Logger:       h.logger,
	})
	defer sender.Close()
	connector := &batchingConnector{ConnectorClient: client, sender: sender}
	// The plugin creates the link that Send queues on when its Events
	// handler runs, which the first event proves. A new session accepts no
	// Send before its welcome anyway, so only a resume waits for it.
	published := resume == nil
	if published {
		h.publishConnector(connector)
	}

	streamDone := make(chan struct{})
	defer close(streamDone)
	go func() {
		select {
		case <-streamDone:
		case <-ctx.Done():
			stopCtx, cancel := context.WithTimeout(context.Background(), stopTimeout)
			defer cancel()
			if _, err := client.Stop(stopCtx, &pb.Empty{}); err != nil {
				h.logger.Warn("connector stop failed", "error", err)
			}
			cancelStream()
		}
	}()

	for {
		event, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return errors.New("connector ended its events stream")
		}
		if err != nil {
			return fmt.Errorf("events stream of connector plugin %s: %w", p.Name, err)
		}
		if !published {
			h.publishConnector(connector)
			published = true
		}
		switch e := event.GetEvent().(type) {
		case *pb.ConnectorEvent_State:
			h.recordState(e.State)
			if err := h.handleState(e.State); err != nil {
				return err
			}
		case *pb.ConnectorEvent_Frame:
			h.handleFrame(e.Frame)
		case *pb.ConnectorEvent_Stats:
			h.recordStats(e.Stats)
		}
	}
}

// handleState logs each transition of the connection and wakes the
// resender on every connect: after a new session it sends the state sync,
// after a resumed one the outcomes that the connector did not accept.
// It returns an ErrConnectorFatal error for a "closed" state whose reason
// starts with "fatal".
func (h *Host) handleState(state *pb.StateChange) error {
	sessionID := state.GetSessionId()
	h.mu.Lock()
	wasOffline := h.offline
	switch state.GetState() {
	case "connected":
		h.offline = false
		h.lastSessionID = sessionID
	case "backing_off", "circuit_open":
		h.offline = true
	}
	if sessionID == "" {
		sessionID = h.lastSessionID
	}
	h.mu.Unlock()

	logger := h.logger.With("session_id", sessionID, "attempt", state.GetAttempt())
	nextRetry := time.UnixMilli(state.GetNextRetryUnixMs()).Format(time.RFC3339Nano)
	switch state.GetState() {
	case "connected":
		if state.GetResumed() {
			// The connector replays what the coordinator has not
			// acknowledged, and the coordinator kept this session's state,
			// so no state sync is needed.
			logger.Info("resumed session with coordinator", "reconnects", state.GetReconnects())
		} else {
			logger.Info("connected to coordinator", "reconnects", state.GetReconnects())
		}
		h.startSession(state.GetResumed())
	case "connecting":
		logger.Debug("connecting to coordinator")
	case "resuming":
		logger.Debug("resuming session with coordinator")
	case "backing_off":
		// The first failure after a connection warns; the retries of the
		// same outage are logged at debug level.
		if wasOffline {
			logger.Debug("connection attempt failed, backing off", "reason", state.GetReason(),
				"next_retry", nextRetry)
		} else {
			logger.Warn("disconnected from coordinator, backing off", "reason", state.GetReason(),
				"next_retry", nextRetry)
		}
	case "circuit_open":
		logger.Warn("circuit breaker open after repeated connection failures; no attempt until next_retry",
			"reason", state.GetReason(), "next_retry", nextRetry)
	case "draining":
		logger.Info("connector draining: writing queued frames before it closes the session",
			"reason", state.GetReason())
	case "closed":
		if strings.HasPrefix(state.GetReason(), "fatal") {
			logger.Error("connector closed the session for good", "reason", state.GetReason())
			return fmt.Errorf("%w: %s", ErrConnectorFatal, state.GetReason())
		}
		logger.Info("session closed", "reason", state.GetReason())
	default:
		// A newer connector may report states this host does not know.
		logger.Warn("unknown connection state from connector", "state", state.GetState(),
			"reason", state.GetReason())
	}
	return nil
}

// batchingConnector is the connector client that runConnector publishes:
// the plugin's gRPC client and the sender that passes task frames to it in
// batches.
type batchingConnector struct {
	pb.ConnectorClient
	sender *dtfplugin.BatchSender
}

// send hands one task frame to the connector, waiting at most timeout. It
// fails while no session is open; callers that must not lose the frame
// keep it in the outbox. Concurrent sends share SendBatch calls, and each
// still gets the result for its own frame. During a live upgrade it waits,
// within timeout, for the new connector.
func (h *Host) send(ctx context.Context, frame *wirepb.Frame, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client, data, done, err := h.encodeFor(ctx, frame)
	if err != nil {
		return err
	}
	defer done()
	if batching, ok := client.(*batchingConnector); ok {
		return batching.sender.Send(ctx, data)
	}
	_, err = client.Send(ctx, &pb.SendRequest{Frame: data})
	return err
}

// sendBestEffort sends a frame whose loss is harmless, such as task_started
// or progress, without waiting for the plugin's result. The batch sender
// keeps the order of these frames and the synchronous ones, blocks while
// its queue is full, and counts and logs the frames that the plugin
// rejects or that do not reach it within bestEffortTimeout.
func (h *Host) sendBestEffort(frame *wirepb.Frame) {
	ctx, cancel := context.WithTimeout(context.Background(), bestEffortTimeout)
	defer cancel()
	client, data, done, err := h.encodeFor(ctx, frame)
	if err != nil {
		h.logger.Trace("frame not sent", "type", protocol.TypeOf(frame), "error", err)
		return
	}
	defer done()
	if batching, ok := client.(*batchingConnector); ok {
		// SendAsync counts and logs the frames it drops.
		_ = batching.sender.SendAsync(ctx, data)
		return
	}
	if _, err := client.Send(ctx, &pb.SendRequest{Frame: data}); err != nil {
		h.logger.Trace("frame not sent", "type", protocol.TypeOf(frame), "error", err)
	}
}

// encodeFor returns the current connector and the encoded frame, or
// errNotConnected while no connector runs. While a live upgrade has paused
// the senders it waits for the new connector until ctx ends. The caller
// calls done once it has handed the frame to the connector, so that an
// upgrade knows when no send to the old connector is under way.
func (h *Host) encodeFor(ctx context.Context, frame *wirepb.Frame) (
	client pb.ConnectorClient,
	data []byte,
	done func(),
	err error,
) {
	data, err = protocol.Encode(frame)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("encode %s frame: %w", protocol.TypeOf(frame), err)
	}
	client, done, err = h.acquireConnector(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	return client, data, done, nil
}

// isUnavailable reports the error of a send while no session is open.
func isUnavailable(err error) bool {
	return errors.Is(err, errNotConnected) || errors.Is(err, dtfplugin.ErrSenderClosed) ||
		status.Code(err) == codes.Unavailable
}
