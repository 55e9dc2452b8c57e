package coordinator

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/dtf-io/dtf/coordinator/api"
	"github.com/dtf-io/dtf/coordinator/store"
)

// Bounds of the fleet history, which exists for the dashboard and the API
// only: a lost entry costs a detail of a chart, never a task.
const (
	// fleetMaxEvents bounds the timeline entries kept per worker. Only a
	// change of connection state adds one, so 100 entries cover 50 cuts.
	// Beyond that, the oldest entries are dropped first.
	fleetMaxEvents = 100
	// fleetSampleInterval is the time between two samples of every worker.
	fleetSampleInterval = 5 * time.Second
	// fleetMaxSamples bounds the samples kept per worker: 120 samples at
	// fleetSampleInterval cover the last 10 minutes.
	fleetMaxSamples = 120
	// fleetRetention is how long the history of a disconnected or drained
	// worker is kept after it left. Without it, every worker ID ever seen
	// would hold memory until the coordinator restarts.
	fleetRetention = time.Hour
)

// fleetHistory is the in-memory connection history of every worker seen
// since the coordinator started: a bounded timeline of state changes, the
// time of the last change, the reconnect count, the downtime and a bounded
// series of samples. A restart loses it. Its lock is a leaf: nothing else
// is locked while mu is held, so callers may hold Server.mu and each
// session's mu, and the events of one worker are recorded in the order of
// those locks.
type fleetHistory struct {
	// streams receives each new timeline entry, unless it is nil.
	streams *streamHub

	mu      sync.Mutex
	workers map[string]*workerHistory
}

// workerHistory is the history of one worker.
type workerHistory struct {
	state string
	since time.Time
	// connects counts the entries of new and resumed connections, so
	// reconnects are one less.
	connects int
	// downtime sums the disconnections that ended. The current one is
	// added when the downtime is read.
	downtime time.Duration
	events   []api.WorkerEvent
	samples  []api.WorkerSample
}

func newFleetHistory(streams *streamHub) *fleetHistory {
	return &fleetHistory{streams: streams, workers: map[string]*workerHistory{}}
}

// record appends ev to the worker's timeline, moves the worker to
// ev.State and sends the entry to the stream. connect marks the entry of a
// new or resumed connection, which counts as a reconnect after the
// worker's first. An entry older than the worker's current state, which a
// clock step back could produce, counts as made at the start of that
// state.
func (f *fleetHistory) record(workerID string, ev api.WorkerEvent, connect bool) {
	if f == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	h := f.workers[workerID]
	if h == nil {
		h = &workerHistory{}
		f.workers[workerID] = h
	}
	if ev.Time.Before(h.since) {
		ev.Time = h.since
	}
	if h.state == api.WorkerDisconnected && ev.State != api.WorkerDisconnected {
		h.downtime += ev.Time.Sub(h.since)
	}
	if connect {
		h.connects++
	}
	if ev.State != h.state || h.since.IsZero() {
		h.state = ev.State
		h.since = ev.Time
	}
	h.events = appendBounded(h.events, ev, fleetMaxEvents)

	f.streams.publish(api.StreamWorkerEvent, api.StreamWorkerEventData{
		WorkerID:   workerID,
		Event:      ev,
		State:      h.state,
		StateSince: h.since,
		Reconnects: h.reconnects(),
		DowntimeMs: h.downtimeAt(ev.Time).Milliseconds(),
	})
}

// appendBounded appends v to s and drops the oldest elements beyond limit.
func appendBounded[T any](s []T, v T, limit int) []T {
	if len(s) >= limit {
		n := copy(s, s[len(s)-limit+1:])
		clear(s[n:])
		s = s[:n]
	}
	return append(s, v)
}

func (h *workerHistory) reconnects() int {
	return max(h.connects-1, 0)
}

// downtimeAt returns the downtime up to now, the current disconnection
// included.
func (h *workerHistory) downtimeAt(now time.Time) time.Duration {
	d := h.downtime
	if h.state == api.WorkerDisconnected && now.After(h.since) {
		d += now.Sub(h.since)
	}
	return d
}

// fill sets the history fields of a worker's API row. A worker without
// history keeps them zero.
func (f *fleetHistory) fill(wk *api.Worker, now time.Time) {
	if f == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	h := f.workers[wk.ID]
	if h == nil {
		return
	}
	wk.StateSince = h.since
	wk.Reconnects = h.reconnects()
	wk.DowntimeMs = h.downtimeAt(now).Milliseconds()
}

// timeline returns a copy of the worker's history, or false when there is
// none.
func (f *fleetHistory) timeline(workerID string, now time.Time) (api.WorkerTimeline, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	h := f.workers[workerID]
	if h == nil {
		return api.WorkerTimeline{}, false
	}
	return api.WorkerTimeline{
		WorkerID:         workerID,
		State:            h.state,
		StateSince:       h.since,
		Reconnects:       h.reconnects(),
		DowntimeMs:       h.downtimeAt(now).Milliseconds(),
		Events:           append([]api.WorkerEvent{}, h.events...),
		Samples:          append([]api.WorkerSample{}, h.samples...),
		MaxEvents:        fleetMaxEvents,
		MaxSamples:       fleetMaxSamples,
		SampleIntervalMs: fleetSampleInterval.Milliseconds(),
	}, true
}

// sample adds one sample to every worker's series, with the round-trip
// times and the running attempts by worker ID, and returns the samples.
func (f *fleetHistory) sample(now time.Time, rtt map[string]time.Duration, running map[string]int) map[string]api.WorkerSample {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]api.WorkerSample, len(f.workers))
	for id, h := range f.workers {
		sample := api.WorkerSample{Time: now, State: h.state, Reconnects: h.reconnects(), Running: running[id]}
		if h.state == api.WorkerConnected || h.state == api.WorkerDraining {
			sample.RTTMs = float64(rtt[id].Microseconds()) / 1000
		}
		h.samples = appendBounded(h.samples, sample, fleetMaxSamples)
		out[id] = sample
	}
	return out
}

// forget drops the history of one worker.
func (f *fleetHistory) forget(workerID string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.workers, workerID)
}

// prune drops the history of each worker that has been disconnected or
// drained for fleetRetention, and returns their IDs.
func (f *fleetHistory) prune(now time.Time) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var dropped []string
	for id, h := range f.workers {
		away := h.state == api.WorkerDisconnected || h.state == api.WorkerDrained
		if away && now.Sub(h.since) >= fleetRetention {
			delete(f.workers, id)
			dropped = append(dropped, id)
		}
	}
	return dropped
}

// recordState records that the session's worker entered state. The caller
// holds s.mu, so that the entries of one worker follow the order in which
// its sessions were registered, resumed and detached.
func (s *Server) recordState(ss *session, state, reason string) {
	s.fleet.record(ss.workerID, api.WorkerEvent{
		Time:      time.Now(),
		State:     state,
		SessionID: ss.id,
		Reason:    reason,
	}, false)
}

// recordConnect records a new or resumed connection of the session's
// worker: connected, or draining when a draining session resumes. The
// caller holds s.mu.
func (s *Server) recordConnect(ss *session, reason string, resumed bool) {
	state := api.WorkerConnected
	if ss.draining.Load() {
		state = api.WorkerDraining
	}
	s.fleet.record(ss.workerID, api.WorkerEvent{
		Time:      time.Now(),
		State:     state,
		SessionID: ss.id,
		Resumed:   resumed,
		Reason:    reason,
	}, true)
}

// newSessionReason describes a new session for the timeline, naming the
// worker's previous session, if any, that it replaced. The caller holds
// s.mu.
func newSessionReason(old *session) string {
	switch {
	case old == nil:
		return "new session"
	case old.attached() != nil:
		return "new session; it replaced session " + old.id + ", whose connection was still open"
	}
	return "new session; the worker did not resume session " + old.id
}

// recordDraining records that the worker of a registered session started
// draining.
func (s *Server) recordDraining(ss *session, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sessions[ss.workerID] == ss {
		s.recordState(ss, api.WorkerDraining, "draining: "+reason)
	}
}

// runFleet samples every worker each fleetSampleInterval and sends the
// stream's snapshots each streamSnapshotInterval while a stream is open,
// until ctx ends.
func (s *Server) runFleet(ctx context.Context) {
	samples := time.NewTicker(fleetSampleInterval)
	defer samples.Stop()
	snapshots := time.NewTicker(streamSnapshotInterval)
	defer snapshots.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-samples.C:
			s.sampleFleet(ctx)
		case <-snapshots.C:
			if s.streams.count() > 0 {
				s.publishSnapshot(ctx)
			}
		}
	}
}

// sampleFleet takes one sample of every worker, sends the round to the
// stream and drops the histories past fleetRetention.
func (s *Server) sampleFleet(ctx context.Context) {
	storeCtx, cancel := context.WithTimeout(ctx, storeTimeout)
	running, err := s.store.RunningCounts(storeCtx)
	cancel()
	if err != nil && ctx.Err() == nil {
		// The round is kept with zero running tasks, so the charts keep
		// their time axis.
		s.log.Named("fleet").Warn("reading running attempts for the fleet samples failed", "error", err)
	}
	rtt := map[string]time.Duration{}
	s.mu.Lock()
	for id, state := range s.workers {
		rtt[id] = state.rtt
	}
	s.mu.Unlock()

	now := time.Now()
	round := s.fleet.sample(now, rtt, running)
	if len(round) > 0 {
		s.streams.publish(api.StreamSamples, api.StreamSamplesData{Time: now, Samples: round})
	}
	s.forgetDeparted(now)
}

// dropWorkerState deletes the round-trip time, connect count and drained
// mark of each worker of ids that has no session, and returns the ids of
// those that have one.
func (s *Server) dropWorkerState(ids ...string) (withSession []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		if s.sessions[id] != nil {
			withSession = append(withSession, id)
			continue
		}
		delete(s.workers, id)
	}
	return withSession
}

// forgetDeparted drops the history of each worker that left fleetRetention
// before now, and its round-trip time, connect count and drained mark
// unless it has a session again. A worker ID that never returns then holds
// no memory; its row in the store stays, so the workers list still shows it.
func (s *Server) forgetDeparted(now time.Time) {
	dropped := s.fleet.prune(now)
	s.dropWorkerState(dropped...)
	for _, id := range dropped {
		s.log.Named("fleet").Debug("departed worker forgotten", "worker_id", id, "retention", fleetRetention)
	}
}

// handleWorkerTimeline serves GET /v1/workers/{id}/timeline.
func (s *Server) handleWorkerTimeline(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	timeline, ok := s.fleet.timeline(id, time.Now())
	if !ok {
		writeError(w, http.StatusNotFound, "", fmt.Sprintf("no history for worker %q; the coordinator keeps "+
			"the history of the workers seen since it started, for %s after they leave; list the workers "+
			"with GET /v1/workers", id, fleetRetention))
		return
	}
	writeJSON(w, http.StatusOK, timeline)
}

// taskCounter is implemented by a store that counts tasks by state in one
// grouped query, as the SQLite store does.
type taskCounter interface {
	CountTasks(ctx context.Context) (store.TaskCounts, error)
}

// taskCounts returns the number of tasks in each state, with every state
// present. A store without a grouped count has every task read, which the
// stream does once per snapshot for all its clients, and only while a
// stream is open.
func (s *Server) taskCounts(ctx context.Context) (map[string]int, error) {
	counts := map[string]int{}
	for _, state := range []string{api.StateQueued, api.StateRunning, api.StateSucceeded, api.StateFailed,
		api.StateCancelled, api.StateTimedOut} {
		counts[state] = 0
	}
	if counter, ok := s.store.(taskCounter); ok {
		grouped, err := counter.CountTasks(ctx)
		if err != nil {
			return nil, err
		}
		for state, n := range grouped.ByState {
			counts[state] = n
		}
		return counts, nil
	}
	tasks, err := s.store.ListTasks(ctx, store.TaskFilter{})
	if err != nil {
		return nil, err
	}
	for _, t := range tasks {
		counts[t.State]++
	}
	return counts, nil
}

// recordRestoredSessions starts the history of each worker whose session
// the previous run saved as disconnected since this start, because its
// worker has to resume the session.
func (s *Server) recordRestoredSessions() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ss := range s.sessions {
		s.recordState(ss, api.WorkerDisconnected, "coordinator restarted; the session waits for its worker "+
			"to resume it")
	}
}

// resumeReason describes a resumed session for the timeline. prev is the
// session's connection that the resume replaced, nil when the coordinator
// had already noticed that it ended.
func resumeReason(prev *connection) string {
	if prev != nil {
		return "session resumed on a new connection; the previous connection was still open"
	}
	return "session resumed"
}

// recordDetach records that the connection of the worker's registered
// session ended: drained when the worker left after its drain,
// disconnected otherwise. The caller holds s.mu.
func (s *Server) recordDetach(ss *session, reason string, left bool) {
	state := api.WorkerDisconnected
	if left {
		state = api.WorkerDrained
	}
	s.recordState(ss, state, reason)
}

// recordExpiry records that a detached session can no longer be resumed.
// A worker that left after its drain stays drained, so only a
// disconnected worker gets an entry. The caller holds s.mu and ss.mu.
func (s *Server) recordExpiry(ss *session) {
	if ss.left {
		return
	}
	reason := fmt.Sprintf("session expired after workers.session_ttl %s; the worker has to start a new "+
		"session", s.cfg.Workers.SessionTTL)
	if ss.ended {
		reason = "detached session ended; the worker has to start a new session"
	}
	s.recordState(ss, api.WorkerDisconnected, reason)
}
