package coordinator

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/dtf-io/dtf/coordinator/api"
	"github.com/dtf-io/dtf/coordinator/store"
	"github.com/dtf-io/dtf/protocol"
	"github.com/dtf-io/dtf/protocol/pb"
)

// runScheduler assigns queued tasks, ends grace periods and attempts past
// their timeout. Submissions, outcomes, syncs, requeues and disconnects wake
// it through kick. The tick catches everything else, such as a grace period
// that ran out or a retry backoff that passed.
func (s *Server) runScheduler(ctx context.Context) {
	ticker := time.NewTicker(s.cfg.ScheduleInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			// Log the repeats of connection events that the limiter held
			// back, so the last state of a flapping worker reaches the log.
			s.connLog.Flush()
			s.watchOrphans()
			s.expireGracePeriods()
			s.expireTimeouts()
			s.expireSessions()
			s.schedule()
		case <-s.kick:
			s.schedule()
		}
	}
}

// watchOrphans starts a grace period for every worker that has running
// attempts but neither a session nor a grace period. On the first tick after
// a start this covers every attempt that was running when the previous
// coordinator stopped, so their grace period counts from the start.
func (s *Server) watchOrphans() {
	ctx, cancel := storeContext()
	defer cancel()
	running, err := s.store.RunningAttempts(ctx, "")
	if err != nil {
		s.log.Named("scheduler").Error("list running attempts failed", "error", err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range running {
		if ss := s.sessions[r.WorkerID]; ss != nil && ss.attached() != nil {
			continue
		}
		if _, waiting := s.graceDeadlines[r.WorkerID]; waiting {
			continue
		}
		deadline := s.started.Add(s.cfg.Workers.ReassignAfter)
		if now := time.Now(); deadline.Before(now) {
			deadline = now.Add(s.cfg.Workers.ReassignAfter)
		}
		s.graceDeadlines[r.WorkerID] = deadline
		s.log.Named("scheduler").Info("waiting for worker to reconnect", "worker_id", r.WorkerID,
			"requeue_at", deadline.Format(time.RFC3339))
	}
}

// expireGracePeriods requeues the running attempts of every worker whose
// grace period ended without a new session.
func (s *Server) expireGracePeriods() {
	now := time.Now()
	var expired []string
	s.mu.Lock()
	for workerID, deadline := range s.graceDeadlines {
		if !now.Before(deadline) {
			expired = append(expired, workerID)
			delete(s.graceDeadlines, workerID)
		}
	}
	s.mu.Unlock()

	for _, workerID := range expired {
		ctx, cancel := storeContext()
		running, err := s.store.RunningAttempts(ctx, workerID)
		if err != nil {
			s.log.Named("scheduler").Error("list running attempts failed", "worker_id", workerID, "error", err)
			cancel()
			continue
		}
		reason := fmt.Sprintf("worker %s did not reconnect within reassign_after %s",
			workerID, s.cfg.Workers.ReassignAfter)
		if s.countLost(workerID, len(running)) {
			reason = fmt.Sprintf("worker %s left after draining with the attempt still running, and did "+
				"not return within reassign_after %s", workerID, s.cfg.Workers.ReassignAfter)
		}
		// A session kept for resume gets a cancellation for each lost
		// attempt, so a worker that resumes late stops running it.
		ss := s.sessionFor(workerID)
		for _, r := range running {
			s.loseAttempt(ctx, r, reason)
			if ss != nil {
				ss.enqueue(cancelFrame(r.TaskID, r.Attempt, reason))
				ss.mu.Lock()
				ss.lostAway = append(ss.lostAway, store.AttemptRef{TaskID: r.TaskID, Attempt: r.Attempt})
				ss.mu.Unlock()
			}
		}
		cancel()
	}
}

// countLost counts a worker whose grace period ended as lost, unless it left
// after draining, and reports whether it did. A worker without running
// attempts lost nothing and is not counted.
func (s *Server) countLost(workerID string, running int) (drained bool) {
	s.mu.Lock()
	if state := s.workers[workerID]; state != nil {
		drained = state.drained
	}
	s.mu.Unlock()
	if !drained && running > 0 {
		s.lostWorkers.Add(1)
	}
	return drained
}

// schedule assigns queued tasks to attached, synced sessions with free slots
// and room in their replay buffer, in rounds of at most one task per
// session, so that work spreads over the fleet. Each round reads the queue
// once per kind of worker and starts all of its attempts in one store
// transaction. The Assign frames go out after that transaction committed.
func (s *Server) schedule() {
	if s.shuttingDown.Load() {
		return
	}
	sessions := s.schedulableSessions()
	if len(sessions) == 0 {
		return
	}
	ctx, cancel := storeContext()
	defer cancel()

	running, err := s.store.RunningCounts(ctx)
	if err != nil {
		s.log.Named("scheduler").Error("count running attempts failed", "error", err)
		return
	}
	free := make(map[*session]int, len(sessions))
	for _, ss := range sessions {
		free[ss] = ss.slots - running[ss.workerID]
	}

	// Each round assigns a task to a session or takes its last free slot
	// away, so the loop ends once the queue or the free slots run out. The
	// bound only guards against a bug that makes no progress.
	for round := 0; round <= len(sessions)+maxSlots(sessions); round++ {
		assigned, err := s.assignRound(ctx, sessions, free)
		if err != nil {
			s.log.Named("scheduler").Error("assignment failed", "error", err)
			return
		}
		if !assigned {
			return
		}
	}
}

// maxSlots returns the largest slot count among sessions.
func maxSlots(sessions []*session) int {
	largest := 0
	for _, ss := range sessions {
		largest = max(largest, ss.slots)
	}
	return largest
}

// assignRound plans one task for each session with a free slot, starts the
// attempts in one transaction and sends their Assign frames. It reports
// whether any session may take more in a further round. A session whose
// kind of worker found no queued task, or that has no room left, gets no
// further round.
func (s *Server) assignRound(ctx context.Context, sessions []*session, free map[*session]int) (bool, error) {
	plan := s.planRound(ctx, sessions, free)
	if len(plan) == 0 {
		return false, nil
	}
	starts := make([]store.AttemptStart, len(plan))
	for i, p := range plan {
		starts[i] = store.AttemptStart{TaskID: p.taskID, WorkerID: p.session.workerID}
	}
	results, err := s.store.StartAttempts(ctx, starts, time.Now())
	if err != nil {
		return false, err
	}
	more := false
	for i, res := range results {
		ss := plan[i].session
		if res.Err != nil {
			// Cancelled since it was read; the next round reads again.
			more = true
			continue
		}
		sent := s.sendAssign(ctx, ss, res.Task, res.Checkpoint)
		if sent {
			s.observeDispatch(plan[i].ready, time.Now())
		}
		if !sent || !ss.hasRoom() {
			free[ss] = 0
			continue
		}
		free[ss]--
		more = more || free[ss] > 0
	}
	return more, nil
}

// plannedStart is one queued task picked for a session.
type plannedStart struct {
	session *session
	taskID  string
	// ready is when the task could run: when it was queued, or the end of
	// its retry backoff if later. The dispatch latency counts from it.
	ready time.Time
}

// planRound picks one queued task for each session with a free slot.
// Sessions that declare the same task types and labels share one read of
// the queue. A session for which the queue has no task gets its free slots
// taken away for this pass.
func (s *Server) planRound(ctx context.Context, sessions []*session, free map[*session]int) []plannedStart {
	groups := map[string][]*session{}
	var order []string
	for _, ss := range sessions {
		if free[ss] <= 0 || ss.attached() == nil || ss.isEnded() {
			free[ss] = 0
			continue
		}
		key := s.queueKey(ss)
		if groups[key] == nil {
			order = append(order, key)
		}
		groups[key] = append(groups[key], ss)
	}

	var plan []plannedStart
	claimed := map[string]bool{}
	for _, key := range order {
		group := groups[key]
		// Tasks claimed for an earlier group may match this one too, so
		// read as many more as were claimed.
		tasks, err := s.store.QueuedTasks(ctx, store.QueuedQuery{
			Types:  s.servedTypes(group[0]),
			Labels: group[0].hello.GetLabels(),
			Now:    time.Now(),
			Limit:  len(group) + len(claimed),
		})
		if err != nil {
			s.log.Named("scheduler").Error("read queued tasks failed", "worker_id", group[0].workerID,
				"error", err)
			continue
		}
		next := 0
		for _, ss := range group {
			for next < len(tasks) && claimed[tasks[next].ID] {
				next++
			}
			if next == len(tasks) {
				free[ss] = 0
				continue
			}
			claimed[tasks[next].ID] = true
			task := tasks[next]
			ready := task.Updated
			if task.NotBefore.After(ready) {
				ready = task.NotBefore
			}
			plan = append(plan, plannedStart{session: ss, taskID: task.ID, ready: ready})
			next++
		}
	}
	return plan
}

// queueKey returns a key that is equal for sessions that may run the same
// queued tasks: the same served types and the same labels.
func (s *Server) queueKey(ss *session) string {
	var b strings.Builder
	for _, t := range s.servedTypes(ss) {
		fmt.Fprintf(&b, "%q,", t)
	}
	b.WriteString("|")
	labels := ss.hello.GetLabels()
	for _, name := range slices.Sorted(maps.Keys(labels)) {
		fmt.Fprintf(&b, "%q=%q,", name, labels[name])
	}
	return b.String()
}

// servedTypes returns the task types of ss that are in the coordinator's
// task_types.
func (s *Server) servedTypes(ss *session) []string {
	types := make([]string, 0, len(ss.taskTypes))
	for _, t := range ss.taskTypes {
		if s.knownTypes[t] {
			types = append(types, t)
		}
	}
	return types
}

// sendAssign sends the Assign of a started attempt, which resumes from
// checkpoint when it is set, and reports whether the session took it. When
// the session closed after the attempt was committed, a newer session of
// the worker would never learn of the attempt, so it is requeued at once.
func (s *Server) sendAssign(ctx context.Context, ss *session, task *api.Task, checkpoint *store.Checkpoint) bool {
	assign := &pb.Frame{Body: &pb.Frame_Assign{Assign: &pb.Assign{
		Ref:        &pb.TaskRef{TaskId: task.ID, Attempt: uint32(task.Attempt)},
		Type:       task.Type,
		Name:       task.Name,
		Payload:    task.Payload,
		TimeoutMs:  task.TimeoutMS,
		Checkpoint: assignCheckpoint(checkpoint),
	}}}
	if size, limit := proto.Size(assign)+frameOverhead, ss.maxFrameBytes(); size > limit {
		s.failOversized(ctx, ss, task, size, limit)
		return false
	}
	ss.markAssigned(task.ID, task.Attempt)
	if !ss.enqueue(assign) {
		s.loseAttempt(ctx, store.RunningAttempt{TaskID: task.ID, Attempt: task.Attempt, WorkerID: ss.workerID},
			"the session closed before the assignment was sent")
		return false
	}
	log := ss.log.With("task_id", task.ID, "attempt", task.Attempt)
	if checkpoint != nil {
		log.Info("task assigned", "type", task.Type, "resume_attempt", checkpoint.Attempt,
			"resume_sequence", checkpoint.Sequence)
	} else {
		log.Info("task assigned", "type", task.Type)
	}
	return true
}

// frameOverhead bounds what a frame's encoding adds to its protobuf body:
// the encoding byte, the sequence number and acknowledgement fields and a
// message tag.
const frameOverhead = 64

// maxFrameBytes returns the largest frame the session's worker reads, as
// its hello announced, or the protocol's default for a worker that did not
// announce one.
func (ss *session) maxFrameBytes() int {
	if limit := ss.hello.GetMaxFrameBytes(); limit > 0 {
		return int(limit)
	}
	return protocol.DefaultMaxFrameBytes
}

// failOversized ends a started attempt whose Assign is larger than its
// worker reads, and with it the task. Sending it would make the worker
// drop the connection, and every resume would replay the same frame, so
// the worker would never be reachable again.
func (s *Server) failOversized(ctx context.Context, ss *session, task *api.Task, size, limit int) {
	message := fmt.Sprintf("the assignment is %d bytes, over worker %s's max_frame_bytes of %d; "+
		"shrink the payload or raise max_frame_bytes in the worker's reconnection plugin config", size,
		ss.workerID, limit)
	ss.log.Warn("task failed: assignment too large for the worker", "task_id", task.ID, "attempt", task.Attempt,
		"bytes", size, "max_frame_bytes", limit)
	now := time.Now()
	_, err := s.store.ApplyOutcome(ctx, store.Outcome{
		TaskID: task.ID, Attempt: task.Attempt, WorkerID: ss.workerID,
		Status: api.StateFailed, ExitCode: -1, Message: message, Started: now, Finished: now,
	}, now)
	if err != nil {
		s.loseAttempt(ctx, store.RunningAttempt{TaskID: task.ID, Attempt: task.Attempt, WorkerID: ss.workerID},
			"its assignment was too large for the worker, and failing the task failed: "+err.Error())
	}
}

// queuedReason explains why a queued task is not running. It names the
// first obstacle in the order the scheduler meets them: the retry backoff,
// then the task type, the required labels, state syncs and draining of the
// workers that could run it, and last the free slots.
func (s *Server) queuedReason(task api.Task, now time.Time) string {
	if task.NotBefore.After(now) {
		return "retry backoff until " + task.NotBefore.UTC().Format("15:04:05 UTC")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var serving, matching []*session
	for _, ss := range s.sessions {
		if ss.serves(task.Type) && ss.attached() != nil {
			serving = append(serving, ss)
		}
	}
	if len(serving) == 0 {
		return fmt.Sprintf("no connected worker serves type %q", task.Type)
	}
	for _, ss := range serving {
		if hasLabels(ss.hello.GetLabels(), task.Labels) {
			matching = append(matching, ss)
		}
	}
	if len(matching) == 0 {
		return missingLabelReason(serving, task)
	}

	syncing, draining := "", ""
	for _, ss := range matching {
		switch {
		case ss.draining.Load():
			draining = ss.workerID
		case !ss.synced.Load():
			syncing = ss.workerID
		default:
			return "waiting for a free slot"
		}
	}
	if syncing != "" {
		return fmt.Sprintf("waiting for worker %s to sync its state", syncing)
	}
	return fmt.Sprintf("every connected worker that can run it is draining, such as %s", draining)
}

// missingLabelReason returns a reason that names a required label no
// worker in serving has, or, when each exists somewhere, states that no
// worker has all of them.
func missingLabelReason(serving []*session, task api.Task) string {
	for _, name := range slices.Sorted(maps.Keys(task.Labels)) {
		value := task.Labels[name]
		found := false
		for _, ss := range serving {
			if got, ok := ss.hello.GetLabels()[name]; ok && got == value {
				found = true
				break
			}
		}
		if !found {
			return fmt.Sprintf("no connected worker serving type %q has label %s", task.Type,
				formatLabel(name, value))
		}
	}
	pairs := make([]string, 0, len(task.Labels))
	for _, name := range slices.Sorted(maps.Keys(task.Labels)) {
		pairs = append(pairs, formatLabel(name, task.Labels[name]))
	}
	return fmt.Sprintf("no connected worker serving type %q has all of the labels %s", task.Type,
		strings.Join(pairs, ","))
}
