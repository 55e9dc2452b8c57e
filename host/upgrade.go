package host

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dtf-io/dtf/host/config"
	dtfplugin "github.com/dtf-io/dtf/plugin"
	"github.com/dtf-io/dtf/plugin/pb"
	"github.com/dtf-io/dtf/protocol"
	wirepb "github.com/dtf-io/dtf/protocol/pb"
)

// A live upgrade replaces the running connector plugin with a process of a
// new binary while tasks run. The new process must pass its checks before
// the old one is touched: launch (checksum, go-plugin handshake, API
// version, Info) and a validate_only Configure. When both processes speak
// connector API version 2, the old one exports its session and the new one
// resumes it. Otherwise the old one stops and the new one starts a new
// session. The host's state sync and outbox then resend what the
// coordinator has not acknowledged.

// Bounds of the steps of a live upgrade.
const (
	// upgradeCheckTimeout bounds the validate_only Configure of the new
	// process.
	upgradeCheckTimeout = 10 * time.Second
	// sendsSettleTimeout bounds the wait for sends that hold the old
	// connector when the senders pause. A send still under way after it
	// may be rejected by the old plugin, and is then retried (outcomes,
	// checkpoints) or dropped (progress), as during a reconnect.
	sendsSettleTimeout = 5 * time.Second
	// exportTimeout bounds the old plugin's Export, which stops its loop
	// and gathers the session state.
	exportTimeout = 10 * time.Second
	// swapTakeTimeout bounds how long the supervisor waits for the
	// upgrade's handover after the old stream ended. It covers the flush
	// and the Export.
	swapTakeTimeout = sendsSettleTimeout + exportTimeout + defaultSendTimeout
)

// ErrUpgradeFailed is wrapped by UpgradeConnector's error when the new
// binary failed a check and the old plugin keeps running.
var ErrUpgradeFailed = errors.New("connector plugin upgrade failed; the running plugin stays")

// connectorSwap is an upgrade that replaces the process old with proc. The
// supervisor takes it once old's Events stream has ended.
type connectorSwap struct {
	old  pluginProcess
	proc pluginProcess
	// ready closes once resume is final: the session that old exported,
	// or nil for a new session.
	ready  chan struct{}
	resume *pb.SessionHandover
}

// UpgradeResult describes a live upgrade that replaced the connector.
type UpgradeResult struct {
	// Version is the new plugin's release version from its Info.
	Version string
	// APIVersion is the connector API version negotiated with it.
	APIVersion int
	// HandedOver is true when the old plugin exported its session to the
	// new one; false when the new one starts a new session.
	HandedOver bool
	// ExportTime is the time from the pause of the host's senders until
	// the old plugin returned its session. The senders wait longer, until
	// the new plugin's Events stream carries its first event. Zero without
	// a handover.
	ExportTime time.Duration
}

// UpgradeConnector replaces the running connector plugin with a new process
// of plugin block p, which is usually the connector block of the worker
// config read again, so that a changed path or sha256 applies. Running
// tasks are not touched. When the new binary fails its checksum, the
// handshake, the API version negotiation or the health check, the old
// plugin keeps running, one error line is logged, and the error wraps
// ErrUpgradeFailed. Upgrades are serialized.
func (h *Host) UpgradeConnector(ctx context.Context, p config.Plugin) (UpgradeResult, error) {
	h.upgradeMu.Lock()
	defer h.upgradeMu.Unlock()
	logger := h.logger.With("plugin", p.Name, "path", p.Path)

	h.mu.Lock()
	old, oldClient := h.connectorProc, h.connector
	h.mu.Unlock()
	if old == nil || oldClient == nil {
		err := fmt.Errorf("%w: no connector plugin is running now, for example while it restarts; "+
			"retry the reload in a moment", ErrUpgradeFailed)
		logger.Error("connector plugin upgrade failed, keeping the current plugin", "reason", err)
		return UpgradeResult{}, err
	}
	if p.Kind != dtfplugin.KindConnector {
		err := fmt.Errorf("%w: plugin %s has kind %q, expected %q", ErrUpgradeFailed, p.Name, p.Kind,
			dtfplugin.KindConnector)
		logger.Error("connector plugin upgrade failed, keeping the current plugin", "reason", err)
		return UpgradeResult{}, err
	}

	logger.Info("connector plugin upgrade: launching the new binary")
	next, err := h.launchChecked(ctx, p)
	if err != nil {
		err = fmt.Errorf("%w: %w", ErrUpgradeFailed, err)
		// NOTE: the supervisor restarts a crashed connector from the
		// block's path, so a rejected binary left there is what the next
		// restart launches.
		logger.Error("connector plugin upgrade failed, keeping the current plugin; put the previous "+
			"binary back at its path, because a restart of the connector launches the file there",
			"reason", err)
		return UpgradeResult{}, err
	}

	result := UpgradeResult{
		Version:    next.Info().GetVersion(),
		APIVersion: apiVersionOf(next),
		HandedOver: apiVersionOf(old) >= dtfplugin.ConnectorAPIVersion &&
			apiVersionOf(next) >= dtfplugin.ConnectorAPIVersion,
	}
	h.mu.Lock()
	h.connectorBlock = p
	h.mu.Unlock()
	logger.Info("connector plugin upgrade: new binary passed its checks, replacing the running plugin",
		"version", result.Version, "old_api_version", apiVersionOf(old), "api_version", result.APIVersion,
		"handover", result.HandedOver)

	if result.HandedOver {
		result.ExportTime, result.HandedOver = h.handOver(ctx, old, oldClient, next)
	} else {
		h.replace(old, oldClient, next)
	}
	logger.Info("connector plugin upgraded", "version", result.Version, "api_version", result.APIVersion,
		"handed_over", result.HandedOver, "export_time", result.ExportTime.Round(time.Millisecond))
	return result, nil
}

// launchChecked launches a process of p and checks it: Launch verifies the
// checksum, the handshake, the API version and Info, and a validate_only
// Configure with the host's current settings is the health check. A
// process that fails is killed.
func (h *Host) launchChecked(ctx context.Context, p config.Plugin) (pluginProcess, error) {
	proc, err := h.launch(ctx, h.launchConfig(p))
	if err != nil {
		return nil, err
	}
	if proc.Connector() == nil {
		proc.Kill()
		return nil, fmt.Errorf("plugin %s (%s) is not a connector plugin", p.Name, p.Path)
	}
	checkCtx, cancel := context.WithTimeout(ctx, upgradeCheckTimeout)
	defer cancel()
	req := h.connectorConfig(p, proc)
	req.ValidateOnly = true
	resp, err := proc.Connector().Configure(checkCtx, req)
	if err = configureResult(p, resp.GetProblems(), err); err != nil {
		proc.Kill()
		return nil, fmt.Errorf("health check of the new connector plugin %s (validate_only Configure) failed: %w",
			p.Name, h.locate(p, err))
	}
	return proc, nil
}

// handOver moves the session from old to next without losing or repeating
// a frame. It pauses the senders, waits for the sends that hold the old
// client, flushes the old batch sender, and calls Export. The supervisor
// then starts next with the exported session. When Export fails, the old
// plugin is stopped and next starts a new session; handOver then reports
// false. It returns how long the senders were paused before the session
// state was in hand.
func (h *Host) handOver(ctx context.Context, old pluginProcess, oldClient pb.ConnectorClient,
	next pluginProcess,
) (time.Duration, bool) {
	swap := &connectorSwap{old: old, proc: next, ready: make(chan struct{})}
	defer close(swap.ready)

	start := time.Now()
	h.mu.Lock()
	h.swap = swap
	h.connector = nil
	if h.sendPause == nil {
		h.sendPause = make(chan struct{})
	}
	h.mu.Unlock()

	h.awaitSends()
	if batching, ok := oldClient.(*batchingConnector); ok {
		h.flushSender(ctx, batching.sender)
	}

	exportCtx, cancel := context.WithTimeout(ctx, exportTimeout)
	defer cancel()
	handover, err := oldClient.Export(exportCtx, &pb.Empty{})
	if err != nil {
		h.logger.Warn("connector plugin did not export its session; stopping it, and the new plugin "+
			"starts a new session, after which the state sync resends what the coordinator lacks",
			"error", err)
		h.stopOld(oldClient)
		return time.Since(start), false
	}
	swap.resume = handover
	h.logger.Info("session exported by the old connector plugin", "session_id", handover.GetSessionId(),
		"unacknowledged", len(handover.GetUnacknowledged()), "queued", len(handover.GetQueued()))
	return time.Since(start), true
}

// replace stops old and lets next start a new session: the path of a
// plugin pair that cannot hand over a session.
func (h *Host) replace(old pluginProcess, oldClient pb.ConnectorClient, next pluginProcess) {
	swap := &connectorSwap{old: old, proc: next, ready: make(chan struct{})}
	close(swap.ready)
	h.mu.Lock()
	h.swap = swap
	h.mu.Unlock()
	h.stopOld(oldClient)
}

// stopOld requests the old connector to close its session cleanly, which ends
// its Events stream and hands the supervisor over to the swap.
func (h *Host) stopOld(client pb.ConnectorClient) {
	stopCtx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	if _, err := client.Stop(stopCtx, &pb.Empty{}); err != nil {
		h.logger.Warn("old connector plugin stop failed; it is killed once its stream ends", "error", err)
	}
}

// takeSwap returns the swap whose old process is proc, once its handover
// is ready, and makes its new process the current connector. The old
// process is killed in the background, because its stream has ended and
// the new one should start at once. When ctx ends first, the new process
// is killed and takeSwap reports false.
func (h *Host) takeSwap(ctx context.Context, proc pluginProcess) (connectorSwap, bool) {
	h.mu.Lock()
	swap := h.swap
	if swap == nil || swap.old != proc {
		h.mu.Unlock()
		return connectorSwap{}, false
	}
	h.swap = nil
	h.mu.Unlock()

	timer := time.NewTimer(swapTakeTimeout)
	defer timer.Stop()
	select {
	case <-swap.ready:
	case <-ctx.Done():
		swap.proc.Kill()
		return connectorSwap{}, false
	case <-timer.C:
		// The upgrade hangs in a call to the old plugin; the new one
		// starts a new session rather than wait longer.
		h.logger.Warn("session handover did not finish in time; the new connector plugin starts a new session",
			"timeout", swapTakeTimeout)
		return h.commitSwap(connectorSwap{old: swap.old, proc: swap.proc}), true
	}
	return h.commitSwap(*swap), true
}

// commitSwap makes swap's new process the current connector process and
// kills the old one in the background.
func (h *Host) commitSwap(swap connectorSwap) connectorSwap {
	h.mu.Lock()
	if h.connectorProc == swap.old {
		h.connectorProc = swap.proc
	}
	h.mu.Unlock()
	// A handed-over session sends no new hello, so a plugin_list frame
	// brings the new connector's version to the coordinator. The resumed
	// connect that follows sends one again.
	wake(h.pluginsChanged)
	go swap.old.Kill()
	return swap
}

// connectorPlugin returns the connector's current plugin block.
func (h *Host) connectorPlugin() config.Plugin {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.connectorBlock
}

// acquireConnector returns the current connector client and the function
// that the caller calls when its send is done. While an upgrade has paused
// the senders it waits for the next connector until ctx ends, and then
// returns errNotConnected.
func (h *Host) acquireConnector(ctx context.Context) (pb.ConnectorClient, func(), error) {
	for {
		h.mu.Lock()
		client, pause := h.connector, h.sendPause
		if client != nil {
			h.sends.Add(1)
			h.mu.Unlock()
			return client, h.sends.Done, nil
		}
		h.mu.Unlock()
		if pause == nil {
			return nil, nil, errNotConnected
		}
		select {
		case <-pause:
		case <-ctx.Done():
			return nil, nil, errNotConnected
		}
	}
}

// publishConnector makes client the connector that sends go to and lets
// senders paused by an upgrade go on.
func (h *Host) publishConnector(client pb.ConnectorClient) {
	h.mu.Lock()
	h.connector = client
	h.mu.Unlock()
	h.resumeSenders()
}

// resumeSenders ends a pause of the senders.
func (h *Host) resumeSenders() {
	h.mu.Lock()
	pause := h.sendPause
	h.sendPause = nil
	h.mu.Unlock()
	if pause != nil {
		close(pause)
	}
}

// awaitSends waits, up to sendsSettleTimeout, until no send holds the old
// connector client.
func (h *Host) awaitSends() {
	settled := make(chan struct{})
	go func() {
		h.sends.Wait()
		close(settled)
	}()
	timer := time.NewTimer(sendsSettleTimeout)
	defer timer.Stop()
	select {
	case <-settled:
	case <-timer.C:
		h.logger.Warn("sends to the old connector plugin still under way after the upgrade paused them; "+
			"the old plugin may reject them, and outcomes are then resent", "timeout", sendsSettleTimeout)
	}
}

// flushSender waits until the batch sender has passed every frame it took
// before the call to the plugin, or the plugin rejected it.
//
// NOTE: BatchSender has no flush of its own. Its frames reach the plugin in
// call order, so a Send returns only after every earlier frame was settled.
// The last Send carries a heartbeat frame, which the connector always
// rejects as not a task frame, so it never reaches the coordinator.
func (h *Host) flushSender(ctx context.Context, sender *dtfplugin.BatchSender) {
	barrier, err := encodeBarrier()
	if err != nil {
		h.logger.Warn("flush of the old connector's sender skipped", "error", err)
		return
	}
	flushCtx, cancel := context.WithTimeout(ctx, defaultSendTimeout)
	defer cancel()
	err = sender.Send(flushCtx, barrier)
	if err == nil {
		h.logger.Warn("old connector plugin accepted the flush marker frame; it may send it to the coordinator")
	}
}

// encodeBarrier returns the frame that flushSender sends.
func encodeBarrier() ([]byte, error) {
	frame := &wirepb.Frame{Body: &wirepb.Frame_Heartbeat{Heartbeat: &wirepb.Heartbeat{}}}
	return protocol.Encode(frame)
}

// apiVersionOf returns the connector API version negotiated with proc, or
// 1 for a process that cannot report it, such as a test's in-process fake.
func apiVersionOf(proc pluginProcess) int {
	if v, ok := proc.(apiVersioned); ok {
		return v.APIVersion()
	}
	return dtfplugin.APIVersion
}
