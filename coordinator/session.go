package coordinator

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/dtf-io/dtf/coordinator/api"
	"github.com/dtf-io/dtf/coordinator/store"
	"github.com/dtf-io/dtf/protocol"
	"github.com/dtf-io/dtf/protocol/pb"
)

const (
	rejectUnauthenticated = pb.Reject_CODE_UNAUTHENTICATED
	rejectProtocolError   = pb.Reject_CODE_PROTOCOL_ERROR
	rejectRegisterAgain   = pb.Reject_CODE_REGISTER_AGAIN
	rejectShuttingDown    = pb.Reject_CODE_SHUTTING_DOWN
	rejectOverloaded      = pb.Reject_CODE_OVERLOADED
	rejectWorkerIDInUse   = pb.Reject_CODE_WORKER_ID_IN_USE
)

// session is the state of one worker session. It outlives its WebSocket
// connection for workers.session_ttl, so that a worker that reconnects can
// resume it: the replay buffer keeps the task frames the worker has not
// acknowledged, and both the sequence numbers and the state sync carry over.
type session struct {
	id        string
	workerID  string
	taskTypes []string
	slots     int
	hello     *pb.Hello
	started   time.Time
	log       hclog.Logger

	// pluginList is the newest plugin_list frame of the session, nil until
	// the worker sends one. Server.mu guards it.
	pluginList *pb.PluginList

	// window numbers the task frames sent to the worker, keeps them until
	// the worker acknowledges them, and tracks the worker's frames received.
	window *protocol.Window
	// windowFrames and windowBytes are the window's bounds.
	windowFrames int
	windowBytes  int
	// peerAcked is the highest acknowledgement received from the worker.
	peerAcked atomic.Uint64
	rtt       protocol.RTTEstimator

	// mu guards conn, detachedAt, ended, left and lostAway. Lock order:
	// Server.mu before session.mu.
	mu sync.Mutex
	// conn is the attached connection; nil while the worker is away.
	conn       *connection
	detachedAt time.Time
	// ended is set when the session can no longer be resumed.
	ended bool
	// left is set when the worker closed the connection after its
	// Draining frame saying that its host stops; it comes back with a new
	// session.
	left bool
	// lostAway lists the attempts that the coordinator ended as lost while
	// the worker was away, until the worker resumes the session.
	lostAway []store.AttemptRef

	// assigned contains the attempts assigned through this session. A state
	// sync never requeues them, because their Assign may still be in flight.
	assignedMu sync.Mutex
	assigned   map[refKey]bool

	// synced is set once the StateSyncResult was queued; the scheduler
	// assigns nothing to a session before.
	synced atomic.Bool
	// draining is set by the worker's Draining frame; the scheduler assigns
	// nothing more to the session. It lasts for the session, resumes
	// included.
	draining atomic.Bool
	// lastFrame is the Unix time in nanoseconds of the last frame received.
	lastFrame atomic.Int64
}

func (s *Server) newSession(hello *pb.Hello) *session {
	id := newID("s-", 8)
	slots := int(hello.GetSlots())
	if slots < 1 {
		slots = 1
	}
	w := s.cfg.Workers
	ss := &session{
		id:           id,
		workerID:     hello.GetWorkerId(),
		taskTypes:    hello.GetTaskTypes(),
		slots:        slots,
		hello:        hello,
		started:      time.Now(),
		log:          s.log.Named("session").With("worker_id", hello.GetWorkerId(), "session_id", id),
		window:       protocol.NewWindow(w.ReplayFrames, w.ReplayBytes),
		windowFrames: w.ReplayFrames,
		windowBytes:  w.ReplayBytes,
		assigned:     map[refKey]bool{},
	}
	ss.lastFrame.Store(time.Now().UnixNano())
	return ss
}

// enqueue numbers a task frame, keeps it in the replay buffer and wakes the
// writer of the attached connection; a detached session sends it after the
// worker resumes. It reports whether the frame was taken. A full replay
// buffer ends the session, because dropping the frame would break the
// delivery guarantee: the worker then starts a new session and syncs its
// state.
func (ss *session) enqueue(frame *pb.Frame) bool {
	if ss.isEnded() {
		return false
	}
	if err := ss.window.Add(frame); err != nil {
		ss.log.Warn("replay buffer full; ending the session", "type", protocol.TypeOf(frame), "error", err)
		ss.end(rejectFrame(rejectRegisterAgain, "session ended: replay buffer full; start a new session", 0),
			"replay buffer full")
		return false
	}
	ss.notify()
	return true
}

// notify wakes the writer of the attached connection, if any.
func (ss *session) notify() {
	ss.mu.Lock()
	c := ss.conn
	ss.mu.Unlock()
	if c != nil {
		c.wakeWriter()
	}
}

// acknowledge drops the frames the worker acknowledged from the replay
// buffer. It returns an error for an acknowledgement of a frame never sent.
func (ss *session) acknowledge(ack uint64) error {
	if ack == 0 {
		return nil
	}
	if err := ss.window.Acknowledge(ack); err != nil {
		return err
	}
	for {
		prev := ss.peerAcked.Load()
		if ack <= prev || ss.peerAcked.CompareAndSwap(prev, ack) {
			return nil
		}
	}
}

// canResume reports whether a hello that acknowledges ack can continue the
// session: the worker must have received every frame the coordinator
// already dropped and none it never sent. The caller holds ss.mu.
func (ss *session) canResumeLocked(ack uint64) bool {
	return !ss.ended && ack >= ss.peerAcked.Load() && ack <= ss.window.Sent()
}

// hasRoom reports whether the replay buffer is below three quarters of its
// bounds. The scheduler assigns only to such sessions, so that the last
// quarter stays free for acknowledgements and cancellations.
func (ss *session) hasRoom() bool {
	frames, bytes := ss.window.Pending()
	return frames < ss.windowFrames*3/4 && bytes < ss.windowBytes*3/4
}

// end makes the session impossible to resume and closes its connection,
// sending final after the frames already queued.
func (ss *session) end(final *pb.Frame, reason string) {
	ss.mu.Lock()
	if ss.ended {
		ss.mu.Unlock()
		return
	}
	ss.ended = true
	c := ss.conn
	ss.mu.Unlock()
	if c != nil {
		c.close(final, reason)
	}
}

func (ss *session) isEnded() bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.ended
}

// resumableUntil returns when a detached session expires, given the
// session time-to-live, or the zero time when ss is attached or ended.
func (ss *session) resumableUntil(ttl time.Duration) time.Time {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.conn != nil || ss.ended || ss.detachedAt.IsZero() {
		return time.Time{}
	}
	return ss.detachedAt.Add(ttl).UTC()
}

// attached returns the connection of the session, or nil while the worker
// is away.
func (ss *session) attached() *connection {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.conn
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

// register makes ss the worker's session with c attached, ending an older
// session of the worker, and ends the worker's grace period.
func (s *Server) register(ss *session, c *connection) {
	ss.conn = c
	s.mu.Lock()
	old := s.sessions[ss.workerID]
	s.sessions[ss.workerID] = ss
	delete(s.graceDeadlines, ss.workerID)
	s.countConnect(ss.workerID)
	s.workers[ss.workerID].drained = false
	// A hello that names a session the coordinator no longer has, as after
	// a coordinator crash, is a reconnect as well.
	reconnect := s.workers[ss.workerID].connects > 1 || ss.hello.GetSessionId() != ""
	s.recordConnect(ss, newSessionReason(old), false)
	s.mu.Unlock()
	s.metrics.connects.Add(1)

	switch {
	case old == nil:
	case old.attached() != nil:
		// After a half-open link this happens once; when it repeats, two
		// worker processes share one worker_id and take the session from
		// each other.
		old.log.Warn("session replaced by a new session of the same worker; "+
			"if this repeats, two workers share this worker_id and each needs its own",
			"new_session_id", ss.id)
		old.end(nil, "replaced by a new session")
	default:
		// A worker that restarted, or lost its session state, starts anew
		// while its old session waits for a resume that will not come.
		old.log.Info("detached session dropped: the worker started a new session", "new_session_id", ss.id)
		old.end(nil, "replaced by a new session")
	}
	s.connLog.Info(ss.log, "connected/"+ss.workerID, "worker connected", "reconnect", reconnect,
		"remote_addr", c.remote, "task_types", ss.taskTypes, "slots", ss.slots,
		"host_version", ss.hello.GetHostVersion(), "plugin_version", ss.hello.GetPluginVersion(),
		"compression", c.codec.Compression)
	s.recordWorker(ss)
}

// recordWorker stores the declaration of the session's worker from its
// hello.
func (s *Server) recordWorker(ss *session) {
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

// touchWorker stores the time of the session's last frame as its worker's
// last-seen time once the session is gone, so that the worker list shows
// it after a coordinator restart too. The store otherwise keeps the start
// of each session.
func (s *Server) touchWorker(ss *session) {
	ctx, cancel := storeContext()
	defer cancel()
	if err := s.store.TouchWorker(ctx, ss.workerID, time.Unix(0, ss.lastFrame.Load())); err != nil {
		ss.log.Error("record last-seen time failed", "error", err)
	}
}

// countConnect counts a new or resumed session of a worker. The caller
// holds s.mu.
func (s *Server) countConnect(workerID string) {
	state := s.workers[workerID]
	if state == nil {
		state = &workerState{}
		s.workers[workerID] = state
	}
	state.connects++
}

// resume attaches c to the worker's session named by hello when that
// session can continue with the hello's acknowledgement ack. It returns the
// session and its previous connection, which the caller closes. When the
// hello names a session that cannot continue, it returns nil and the
// reason, for the log.
func (s *Server) resume(hello *pb.Hello, ack uint64, c *connection) (*session, *connection, string) {
	if hello.GetSessionId() == "" {
		return nil, nil, ""
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// Sessions are looked up by the hello's worker ID, so a worker cannot
	// resume another worker's session even when it knows the session ID.
	ss := s.sessions[hello.GetWorkerId()]
	if ss == nil || ss.id != hello.GetSessionId() {
		return nil, nil, "the coordinator has no such session of the worker: it expired or was not saved"
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if !ss.canResumeLocked(ack) {
		if ss.ended {
			return nil, nil, "the session ended"
		}
		return nil, nil, fmt.Sprintf("acknowledgement %d is outside the frames the coordinator still has: "+
			"acknowledged %d, sent %d", ack, ss.peerAcked.Load(), ss.window.Sent())
	}
	prev := ss.conn
	ss.conn = c
	ss.detachedAt = time.Time{}
	// The hello of the resume is the session's newest frame.
	ss.lastFrame.Store(time.Now().UnixNano())
	delete(s.graceDeadlines, ss.workerID)
	s.countConnect(ss.workerID)
	s.recordConnect(ss, resumeReason(prev), true)
	return ss, prev, ""
}

// detach runs after a connection ended. The session stays for
// workers.session_ttl so that the worker can resume it, unless it ended or
// resume is disabled, and the worker's grace period starts either way.
func (s *Server) detach(ss *session, c *connection) {
	// A worker that closes the connection after its drain saying that its
	// host stops has left: the host starts a new session when it runs
	// again, so the session ends at once. A draining worker whose
	// connection broke, or whose connector lost its host, may still
	// resume, so its session waits like any other.
	left := ss.draining.Load() && c.peerStopped.Load()
	ss.mu.Lock()
	current := ss.conn == c
	if current {
		ss.conn = nil
		ss.detachedAt = time.Now()
		if left {
			ss.left, ss.ended = true, true
		}
	}
	ended := ss.ended
	ss.mu.Unlock()
	if !current {
		ss.log.Debug("previous connection of the session closed", "reason", c.reason)
		return
	}

	ttl := s.cfg.Workers.SessionTTL
	// Sessions are kept on shutdown too: Run saves them for the next start.
	keep := !ended && ttl > 0
	s.mu.Lock()
	registered := s.sessions[ss.workerID] == ss
	if registered {
		if !keep {
			delete(s.sessions, ss.workerID)
		}
		s.graceDeadlines[ss.workerID] = time.Now().Add(s.cfg.Workers.ReassignAfter)
		if state := s.workers[ss.workerID]; state != nil {
			state.drained = state.drained || left
			state.lastSeen = time.Unix(0, ss.lastFrame.Load()).UTC()
		}
		s.recordDetach(ss, c.reason, left)
	}
	s.mu.Unlock()
	s.metrics.disconnects.Add(1)
	key := "disconnected/" + ss.workerID
	switch {
	case !registered:
		s.connLog.Info(ss.log, key, "replaced session closed", "reason", c.reason)
	case left:
		// Its tasks were released or finished; any still running get the
		// grace period like those of any disconnected worker.
		s.drainedWorkers.Add(1)
		s.touchWorker(ss)
		s.connLog.Info(ss.log, key, "worker left after draining", "reason", c.reason,
			"reassign_after", s.cfg.Workers.ReassignAfter)
	case keep && ss.draining.Load():
		s.connLog.Info(ss.log, key, "draining worker disconnected; session kept for resume", "reason", c.reason,
			"session_ttl", ttl, "reassign_after", s.cfg.Workers.ReassignAfter)
	case keep:
		s.connLog.Info(ss.log, key, "worker disconnected; session kept for resume", "reason", c.reason,
			"session_ttl", ttl, "reassign_after", s.cfg.Workers.ReassignAfter)
	default:
		s.connLog.Info(ss.log, key, "worker disconnected", "reason", c.reason,
			"reassign_after", s.cfg.Workers.ReassignAfter)
	}
}

// expireSessions drops the sessions that stayed detached for longer than
// workers.session_ttl, and the ended ones, releasing their replay buffers.
func (s *Server) expireSessions() {
	now := time.Now()
	ttl := s.cfg.Workers.SessionTTL
	var expired []*session
	s.mu.Lock()
	for workerID, ss := range s.sessions {
		ss.mu.Lock()
		gone := ss.conn == nil && (ss.ended || !now.Before(ss.detachedAt.Add(ttl)))
		if gone {
			s.recordExpiry(ss)
			ss.ended = true
			delete(s.sessions, workerID)
			expired = append(expired, ss)
		}
		ss.mu.Unlock()
	}
	s.mu.Unlock()
	for _, ss := range expired {
		s.touchWorker(ss)
		frames, bytes := ss.window.Pending()
		ss.log.Info("session expired", "session_ttl", ttl, "unacknowledged_frames", frames,
			"unacknowledged_bytes", bytes)
	}
}

// endDetached ends ss and drops it from the sessions unless a connection
// is attached to it. It reports whether ss is gone.
func (s *Server) endDetached(ss *session) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.conn != nil {
		return false
	}
	ss.ended = true
	if s.sessions[ss.workerID] == ss {
		delete(s.sessions, ss.workerID)
	}
	return true
}

// sessionFor returns the worker's session, attached or waiting for a
// resume, or nil.
func (s *Server) sessionFor(workerID string) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions[workerID]
}

// schedulableSessions returns the attached sessions that finished their
// state sync, are not draining and have room in their replay buffer.
func (s *Server) schedulableSessions() []*session {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*session
	for _, ss := range s.sessions {
		if ss.synced.Load() && !ss.draining.Load() && ss.attached() != nil && ss.hasRoom() {
			out = append(out, ss)
		}
	}
	slices.SortFunc(out, func(a, b *session) int {
		return strings.Compare(a.workerID, b.workerID)
	})
	return out
}

// attachedConnections returns the connections of every attached session.
func (s *Server) attachedConnections() []*connection {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*connection, 0, len(s.sessions))
	for _, ss := range s.sessions {
		if c := ss.attached(); c != nil {
			out = append(out, c)
		}
	}
	return out
}

// Bounds on the plugin list of a hello as the API shows it. The list is
// release metadata, so the coordinator trims an oversized one instead of
// rejecting the worker.
const (
	maxHelloPlugins     = 64
	maxPluginFieldBytes = 128
)

// workerPlugins returns a worker's plugin list for the API, trimmed to
// maxHelloPlugins entries of at most maxPluginFieldBytes per string.
func workerPlugins(listed []*pb.WorkerPlugin) []api.WorkerPlugin {
	if len(listed) == 0 {
		return nil
	}
	if len(listed) > maxHelloPlugins {
		listed = listed[:maxHelloPlugins]
	}
	plugins := make([]api.WorkerPlugin, 0, len(listed))
	for _, p := range listed {
		plugins = append(plugins, api.WorkerPlugin{
			Name:       trimField(p.GetName()),
			Kind:       trimField(p.GetKind()),
			Version:    trimField(p.GetVersion()),
			APIVersion: int(p.GetApiVersion()),
		})
	}
	return plugins
}

// trimField cuts s to maxPluginFieldBytes, dropping a rune split by the cut.
func trimField(s string) string {
	if len(s) <= maxPluginFieldBytes {
		return s
	}
	return strings.ToValidUTF8(s[:maxPluginFieldBytes], "")
}
