package coordinator

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/dtf-io/dtf/coordinator/api"
	"github.com/dtf-io/dtf/coordinator/store"
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
// and room in their replay buffer, one task per session in turn so that
// work spreads over the fleet.
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

	free := make(map[*session]int, len(sessions))
	for _, ss := range sessions {
		running, err := s.store.RunningAttempts(ctx, ss.workerID)
		if err != nil {
			s.log.Named("scheduler").Error("list running attempts failed", "worker_id", ss.workerID, "error", err)
			return
		}
		free[ss] = ss.slots - len(running)
	}

	// Each round either assigns a task or marks a session as done, so the
	// loop ends once the queue or the free slots run out.
	for progress := true; progress; {
		progress = false
		for _, ss := range sessions {
			if free[ss] <= 0 {
				continue
			}
			assigned, err := s.assignOne(ctx, ss)
			if err != nil {
				s.log.Named("scheduler").Error("assignment failed", "worker_id", ss.workerID, "error", err)
				return
			}
			if assigned && ss.hasRoom() {
				free[ss]--
			} else {
				free[ss] = 0
			}
			progress = true
		}
	}
}

// assignOne starts the oldest queued task that ss serves and sends its
// Assign. It reports false when no queued task matches.
func (s *Server) assignOne(ctx context.Context, ss *session) (bool, error) {
	if ss.attached() == nil || ss.isEnded() {
		return false, nil
	}
	types := make([]string, 0, len(ss.taskTypes))
	for _, t := range ss.taskTypes {
		if s.knownTypes[t] {
			types = append(types, t)
		}
	}
	tasks, err := s.store.QueuedTasks(ctx, store.QueuedQuery{
		Types:  types,
		Labels: ss.hello.GetLabels(),
		Now:    time.Now(),
		Limit:  1,
	})
	if err != nil || len(tasks) == 0 {
		return false, err
	}
	task, err := s.store.StartAttempt(ctx, tasks[0].ID, ss.workerID, time.Now())
	if errors.Is(err, store.ErrConflict) {
		// Cancelled since it was read; the next round reads again.
		return true, nil
	}
	if err != nil {
		return false, err
	}

	log := ss.log.With("task_id", task.ID, "attempt", task.Attempt)
	// The attempt resumes from the stored checkpoint, the one StartAttempt
	// recorded as its resume point: only this attempt may store a newer one.
	checkpoint, err := s.store.GetCheckpoint(ctx, task.ID)
	if err != nil {
		s.loseAttempt(ctx, store.RunningAttempt{TaskID: task.ID, Attempt: task.Attempt, WorkerID: ss.workerID},
			"its checkpoint could not be read for the assignment")
		return false, err
	}
	assign := &pb.Frame{Body: &pb.Frame_Assign{Assign: &pb.Assign{
		Ref:        &pb.TaskRef{TaskId: task.ID, Attempt: uint32(task.Attempt)},
		Type:       task.Type,
		Name:       task.Name,
		Payload:    task.Payload,
		TimeoutMs:  task.TimeoutMS,
		Checkpoint: assignCheckpoint(checkpoint),
	}}}
	ss.markAssigned(task.ID, task.Attempt)
	if !ss.enqueue(assign) {
		// The session closed after the attempt was committed; a newer
		// session of the worker would never learn of it, so requeue now.
		s.loseAttempt(ctx, store.RunningAttempt{TaskID: task.ID, Attempt: task.Attempt, WorkerID: ss.workerID},
			"the session closed before the assignment was sent")
		return false, nil
	}
	if checkpoint != nil {
		log.Info("task assigned", "type", task.Type, "resume_attempt", checkpoint.Attempt,
			"resume_sequence", checkpoint.Sequence)
	} else {
		log.Info("task assigned", "type", task.Type)
	}
	return true, nil
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
