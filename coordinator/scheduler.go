package coordinator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dtf-io/dtf/coordinator/store"
	"github.com/dtf-io/dtf/protocol/pb"
)

// runScheduler assigns queued tasks and ends grace periods. Submissions,
// outcomes, syncs, requeues and disconnects wake it through kick; the tick
// catches everything else, such as a grace period that ran out.
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
	tasks, err := s.store.QueuedTasks(ctx, types, 1)
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
	assign := &pb.Frame{Body: &pb.Frame_Assign{Assign: &pb.Assign{
		Ref:       &pb.TaskRef{TaskId: task.ID, Attempt: uint32(task.Attempt)},
		Type:      task.Type,
		Name:      task.Name,
		Payload:   task.Payload,
		TimeoutMs: task.TimeoutMS,
	}}}
	ss.markAssigned(task.ID, task.Attempt)
	if !ss.enqueue(assign) {
		// The session closed after the attempt was committed; a newer
		// session of the worker would never learn of it, so requeue now.
		s.loseAttempt(ctx, store.RunningAttempt{TaskID: task.ID, Attempt: task.Attempt, WorkerID: ss.workerID},
			"the session closed before the assignment was sent")
		return false, nil
	}
	log.Info("task assigned", "type", task.Type)
	return true, nil
}

// queuedReason explains why a queued task of taskType is not running.
func (s *Server) queuedReason(taskType string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	syncing := ""
	for _, ss := range s.sessions {
		if !ss.serves(taskType) || ss.attached() == nil {
			continue
		}
		if ss.synced.Load() {
			return "waiting for a free slot"
		}
		syncing = ss.workerID
	}
	if syncing != "" {
		return fmt.Sprintf("waiting for worker %s to sync its state", syncing)
	}
	return fmt.Sprintf("no connected worker serves type %q", taskType)
}
