package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/dtf-io/dtf/coordinator/api"
	"github.com/dtf-io/dtf/coordinator/store"
	"github.com/dtf-io/dtf/coordinator/ui"
	"github.com/dtf-io/dtf/protocol"
)

// newHTTPServer returns the server of the listener, with the timeouts of
// the config. It sets no WriteTimeout, because that deadline would cut off
// a response that a handler streams for long, such as a stream of events.
// The WebSocket upgrader clears the deadlines on the connections it takes
// over.
func (s *Server) newHTTPServer() *http.Server {
	return &http.Server{
		Handler:           s.routes(),
		ReadHeaderTimeout: s.cfg.HTTPReadHeaderTimeout,
		ReadTimeout:       s.cfg.HTTPReadTimeout,
		IdleTimeout:       s.cfg.HTTPIdleTimeout,
		ErrorLog:          s.httpErrorLog(),
	}
}

// routes serves the worker endpoint, the HTTP API, the dashboard and
// /healthz, with the request body limit in front of all of them. The API
// endpoints check bearer tokens when api.auth is token. /healthz, the
// worker endpoint, whose workers authenticate in the handshake, and the
// dashboard's static files, which hold no data, stay open.
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+protocol.ConnectPath, s.handleConnect)
	mux.HandleFunc("POST /v1/tasks", s.requireRole(RoleSubmit, s.handleSubmit))
	mux.HandleFunc("GET /v1/tasks", s.requireRole(RoleRead, s.handleListTasks))
	mux.HandleFunc("GET /v1/tasks/{id}", s.requireRole(RoleRead, s.handleGetTask))
	mux.HandleFunc("POST /v1/tasks/{id}/cancel", s.requireRole(RoleSubmit, s.handleCancel))
	mux.HandleFunc("GET /v1/workers", s.requireRole(RoleRead, s.handleListWorkers))
	mux.HandleFunc("GET /v1/workers/{id}/timeline", s.requireRole(RoleRead, s.handleWorkerTimeline))
	mux.HandleFunc("DELETE /v1/workers/{id}", s.requireRole(RoleSubmit, s.handleForgetWorker))
	mux.HandleFunc("GET "+api.StreamPath, s.requireRole(RoleRead, s.handleStream))
	mux.Handle("GET /ui/", ui.Handler("/ui/"))
	mux.Handle("GET /ui", http.RedirectHandler("/ui/", http.StatusMovedPermanently))
	mux.HandleFunc("GET /metrics", s.requireRole(RoleRead, s.metricsHandler()))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if allowed := allowedMethods(mux, r); len(allowed) > 0 {
			w.Header().Set("Allow", strings.Join(allowed, ", "))
			writeError(w, http.StatusMethodNotAllowed, "", fmt.Sprintf("method %s not allowed on %s; use %s",
				r.Method, r.URL.Path, strings.Join(allowed, " or ")))
			return
		}
		writeError(w, http.StatusNotFound, "", fmt.Sprintf("no endpoint %s %s", r.Method, r.URL.Path))
	})
	return s.limitBody(mux)
}

// allowedMethods returns the methods that mux serves on r's path with a
// route other than the catch-all "/". The catch-all matches every method,
// so without this check ServeMux never returns 405 itself.
func allowedMethods(mux *http.ServeMux, r *http.Request) []string {
	var allowed []string
	for _, method := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
		http.MethodPatch, http.MethodDelete} {
		probe := r.Clone(r.Context())
		probe.Method = method
		if _, pattern := mux.Handler(probe); pattern != "" && pattern != "/" {
			allowed = append(allowed, method)
		}
	}
	return allowed
}

// limitBody rejects a request whose Content-Length is over max_body_bytes
// with 413 before any handler runs. It caps the body of every other
// request, such as a chunked one, at the same size, so a handler that
// reads past it gets an *http.MaxBytesError.
func (s *Server) limitBody(next http.Handler) http.Handler {
	limit := int64(s.cfg.MaxBodyBytes)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > limit {
			// The body is not read, so the server closes the connection
			// after this response instead of draining it.
			w.Header().Set("Connection", "close")
			writeError(w, http.StatusRequestEntityTooLarge, "", bodyTooLargeMessage(r.ContentLength, limit))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, limit)
		next.ServeHTTP(w, r)
	})
}

// bodyTooLargeMessage names the limit and the setting that changes it.
// size is -1 when the request did not state its length.
func bodyTooLargeMessage(size, limit int64) string {
	what := "request body"
	if size >= 0 {
		what = fmt.Sprintf("request body of %d bytes", size)
	}
	return fmt.Sprintf("%s is over the limit of %d bytes; send less at once, for example fewer tasks "+
		"per submission, or raise max_body_bytes in the coordinator config", what, limit)
}

func (s *Server) handleSubmit(w http.ResponseWriter, r *http.Request) {
	req, verr := decodeSubmit(r.Body, s.cfg.TaskTypes)
	if verr != nil {
		writeError(w, verr.status, verr.field, verr.Error())
		return
	}

	batch := req.Batch
	if batch == "" {
		batch = newID("b-", 6)
	}
	tasks := make([]store.NewTask, len(req.Tasks))
	ids := make([]string, len(req.Tasks))
	for i, spec := range req.Tasks {
		timeout, _ := time.ParseDuration(spec.Timeout) // validated by decodeSubmit
		maxAttempts := spec.MaxAttempts
		if maxAttempts == 0 {
			maxAttempts = s.cfg.MaxAttempts
		}
		ids[i] = newID("t-", 8)
		tasks[i] = store.NewTask{
			ID:          ids[i],
			Batch:       batch,
			Name:        spec.Name,
			Type:        spec.Type,
			Payload:     spec.Payload,
			TimeoutMS:   timeout.Milliseconds(),
			MaxAttempts: maxAttempts,
			Labels:      spec.Labels,
		}
	}
	if err := s.store.CreateTasks(r.Context(), tasks, time.Now()); err != nil {
		s.log.Named("api").Error("submit failed", "batch", batch, "error", err)
		writeError(w, http.StatusInternalServerError, "", "store tasks: "+err.Error())
		return
	}
	s.log.Named("api").Info("tasks submitted", "batch", batch, "count", len(tasks))
	s.kickScheduler()

	// One read for the whole submission: a task's attempts, if the
	// scheduler started one already, are left to GET /v1/tasks/{id}.
	created, err := s.store.GetTasks(r.Context(), ids)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "", "read submitted tasks: "+err.Error())
		return
	}
	resp := api.SubmitResponse{Batch: batch, Tasks: make([]api.Task, 0, len(created))}
	for _, task := range created {
		resp.Tasks = append(resp.Tasks, s.withReason(task))
	}
	writeJSON(w, http.StatusCreated, resp)
}

func (s *Server) handleListTasks(w http.ResponseWriter, r *http.Request) {
	filter := store.TaskFilter{Batch: r.URL.Query().Get("batch"), State: r.URL.Query().Get("state")}
	if filter.State != "" && !knownState(filter.State) {
		writeError(w, http.StatusBadRequest, "state", fmt.Sprintf(
			"state: unknown task state %q; use queued, running, succeeded, failed, cancelled or timed_out",
			filter.State))
		return
	}
	tasks, err := s.store.ListTasks(r.Context(), filter)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "", err.Error())
		return
	}
	for i := range tasks {
		tasks[i] = s.withReason(tasks[i])
	}
	writeJSON(w, http.StatusOK, map[string][]api.Task{"tasks": tasks})
}

func (s *Server) handleGetTask(w http.ResponseWriter, r *http.Request) {
	task, err := s.store.GetTask(r.Context(), r.PathValue("id"))
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, "", fmt.Sprintf("task %q not found", r.PathValue("id")))
		return
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, "", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, s.withReason(*task))
}

// handleCancel cancels a task in the store at once and, for a running
// task, sends CancelTask to its worker. The worker's later outcome is
// acknowledged with applied=false.
func (s *Server) handleCancel(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	before, err := s.store.CancelTask(r.Context(), id, "cancelled through the API", time.Now())
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, "", fmt.Sprintf("task %q not found", id))
		return
	case errors.Is(err, store.ErrTerminal):
		writeError(w, http.StatusConflict, "", fmt.Sprintf("task %q already ended; only queued and running "+
			"tasks can be cancelled", id))
		return
	case err != nil:
		writeError(w, http.StatusInternalServerError, "", err.Error())
		return
	}

	log := s.log.Named("api").With("task_id", id, "attempt", before.Attempt)
	if before.State == api.StateRunning {
		s.sendCancel(before, log)
	}
	log.Info("task cancelled", "previous_state", before.State)
	s.kickScheduler()

	task, err := s.store.GetTask(r.Context(), id)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, *task)
}

func (s *Server) sendCancel(task *api.Task, log hclog.Logger) {
	ss := s.sessionFor(task.WorkerID)
	if ss == nil {
		// The StateSyncResult of the worker's next session cancels the
		// attempt.
		log.Info("worker of cancelled task is not connected", "worker_id", task.WorkerID)
		return
	}
	ss.enqueue(cancelFrame(task.ID, task.Attempt, "cancelled through the API"))
}

func (s *Server) handleListWorkers(w http.ResponseWriter, r *http.Request) {
	workers, err := s.listWorkers(r.Context())
	if err != nil {
		writeError(w, http.StatusInternalServerError, "", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string][]api.Worker{"workers": workers})
}

// listWorkers returns the row of every recorded worker, ordered by ID, for
// GET /v1/workers and the event stream's snapshots.
func (s *Server) listWorkers(ctx context.Context) ([]api.Worker, error) {
	records, err := s.store.ListWorkers(ctx)
	if err != nil {
		return nil, err
	}
	running, err := s.store.RunningAttempts(ctx, "")
	if err != nil {
		return nil, err
	}
	perWorker := map[string]int{}
	for _, a := range running {
		perWorker[a.WorkerID]++
	}

	now := time.Now()
	s.mu.Lock()
	workers := make([]api.Worker, 0, len(records))
	for _, rec := range records {
		wk := api.Worker{
			ID:            rec.ID,
			TaskTypes:     rec.TaskTypes,
			Slots:         rec.Slots,
			Running:       perWorker[rec.ID],
			Labels:        rec.Labels,
			LastSeen:      rec.LastSeen,
			HostVersion:   rec.HostVersion,
			PluginVersion: rec.PluginVersion,
		}
		if state := s.workers[rec.ID]; state != nil {
			wk.Connects = state.connects
			wk.RTTMs = float64(state.rtt.Microseconds()) / 1000
			if state.lastSeen.After(wk.LastSeen) {
				wk.LastSeen = state.lastSeen
			}
		}
		wk.State = api.WorkerDisconnected
		if state := s.workers[rec.ID]; state != nil && state.drained {
			wk.State = api.WorkerDrained
		}
		if ss := s.sessions[rec.ID]; ss != nil {
			wk.Connected = ss.attached() != nil
			wk.SessionID = ss.id
			wk.Plugins = workerPlugins(ss.currentPlugins())
			if version, ok := ss.listedConnectorVersion(); ok {
				wk.PluginVersion = version
			}
			wk.LastSeen = time.Unix(0, ss.lastFrame.Load()).UTC()
			if !wk.Connected {
				wk.ResumableUntil = ss.resumableUntil(s.cfg.Workers.SessionTTL)
			}
			switch {
			case wk.Connected && ss.draining.Load():
				wk.State = api.WorkerDraining
			case wk.Connected:
				wk.State = api.WorkerConnected
			}
		}
		s.fleet.fill(&wk, now)
		s.fillWorkerMetrics(&wk)
		workers = append(workers, wk)
	}
	s.mu.Unlock()
	sort.Slice(workers, func(i, j int) bool { return workers[i].ID < workers[j].ID })
	return workers, nil
}

// withReason sets QueuedReason on a queued task.
func (s *Server) withReason(task api.Task) api.Task {
	if task.State == api.StateQueued {
		task.QueuedReason = s.queuedReason(task, time.Now())
	}
	return task
}

func knownState(state string) bool {
	return state == api.StateQueued || state == api.StateRunning || api.Terminal(state)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, field, message string) {
	writeJSON(w, status, api.Error{Error: message, Field: field})
}

// handleForgetWorker serves DELETE /v1/workers/{id}. It removes a worker
// that has left, with no running attempt, from the store and from the
// coordinator's memory. The worker's tasks keep naming it. A worker that
// left after a drain is forgotten at once; any other needs its session to
// have expired.
func (s *Server) handleForgetWorker(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	log := s.log.Named("api").With("worker_id", id)
	drained := s.sessionFor(id)
	if drained != nil && (drained.attached() != nil || !drained.draining.Load()) {
		state := "connected"
		if drained.attached() == nil {
			state = "away, but its session waits for a resume"
		}
		writeError(w, http.StatusConflict, "", fmt.Sprintf("worker %q is %s; stop the worker and wait "+
			"workers.session_ttl (%s) after it left, or drain it, before you forget it",
			id, state, s.cfg.Workers.SessionTTL))
		return
	}
	running, err := s.store.RunningAttempts(r.Context(), id)
	if err != nil {
		log.Error("forgetting worker failed: listing its running attempts failed", "error", err)
		writeError(w, http.StatusInternalServerError, "", err.Error())
		return
	}
	if len(running) > 0 {
		writeError(w, http.StatusConflict, "", fmt.Sprintf("worker %q still has running attempts (%d); the "+
			"coordinator requeues them workers.reassign_after (%s) after the worker left, and then the "+
			"worker can be forgotten", id, len(running), s.cfg.Workers.ReassignAfter))
		return
	}
	if drained != nil && !s.endDetached(drained) {
		writeError(w, http.StatusConflict, "", fmt.Sprintf("worker %q connected again while it was being "+
			"forgotten; it stays recorded", id))
		return
	}
	err = s.store.DeleteWorker(r.Context(), id)
	if errors.Is(err, store.ErrWorkerNotFound) {
		writeError(w, http.StatusNotFound, "", fmt.Sprintf("worker %q not found; GET /v1/workers lists "+
			"the recorded workers", id))
		return
	}
	if err != nil {
		log.Error("forgetting worker failed: deleting its record failed", "error", err)
		writeError(w, http.StatusInternalServerError, "", err.Error())
		return
	}

	if len(s.dropWorkerState(id)) > 0 {
		// The worker's hello arrived between the check and the delete, so
		// its record is written again and it stays.
		if ss := s.sessionFor(id); ss != nil {
			s.recordWorker(ss)
		}
		log.Warn("worker connected while it was being forgotten; it stays recorded")
		writeError(w, http.StatusConflict, "", fmt.Sprintf("worker %q connected while it was being "+
			"forgotten; it stays recorded", id))
		return
	}
	s.fleet.forget(id)
	log.Info("worker forgotten")
	w.WriteHeader(http.StatusNoContent)
}
