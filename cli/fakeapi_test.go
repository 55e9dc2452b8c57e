package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/dtf-io/dtf/coordinator/api"
)

// fakeCoordinator serves the task API from canned data. Each GET /v1/tasks
// returns the next snapshot of polls and repeats the last one.
type fakeCoordinator struct {
	mu        sync.Mutex
	polls     [][]api.Task
	calls     int
	outcomes  map[string]*api.Outcome
	workers   []api.Worker
	submitted []api.SubmitRequest
	listErr   int // status code returned for GET /v1/tasks, 0 for none
}

func (f *fakeCoordinator) start(t *testing.T) string {
	t.Helper()
	mux := http.NewServeMux()
	reply := func(w http.ResponseWriter, status int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		assert.NoError(t, json.NewEncoder(w).Encode(v))
	}
	mux.HandleFunc("GET /v1/tasks", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.listErr != 0 {
			reply(w, f.listErr, api.Error{Error: "store unavailable"})
			return
		}
		tasks := []api.Task{}
		if len(f.polls) > 0 {
			tasks = f.polls[min(f.calls, len(f.polls)-1)]
		}
		f.calls++
		reply(w, http.StatusOK, map[string]any{"tasks": tasks})
	})
	mux.HandleFunc("GET /v1/tasks/{id}", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		reply(w, http.StatusOK, api.Task{ID: r.PathValue("id"), Outcome: f.outcomes[r.PathValue("id")]})
	})
	mux.HandleFunc("POST /v1/tasks", func(w http.ResponseWriter, r *http.Request) {
		var req api.SubmitRequest
		assert.NoError(t, json.NewDecoder(r.Body).Decode(&req))
		f.mu.Lock()
		f.submitted = append(f.submitted, req)
		f.mu.Unlock()
		resp := api.SubmitResponse{Batch: "b1"}
		for i, spec := range req.Tasks {
			resp.Tasks = append(resp.Tasks, api.Task{
				ID: "t" + string(rune('1'+i)), Batch: "b1", Name: spec.Name, Type: spec.Type,
				State: api.StateQueued,
			})
		}
		reply(w, http.StatusCreated, resp)
	})
	mux.HandleFunc("POST /v1/tasks/{id}/cancel", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("id") == "done" {
			reply(w, http.StatusConflict, api.Error{Error: "task done is already succeeded"})
			return
		}
		reply(w, http.StatusOK, api.Task{ID: r.PathValue("id"), State: api.StateCancelled})
	})
	mux.HandleFunc("GET /v1/workers", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK, map[string]any{"workers": f.workers})
	})
	mux.HandleFunc("DELETE /v1/workers/{id}", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		for i, wk := range f.workers {
			if wk.ID != r.PathValue("id") {
				continue
			}
			if wk.Connected {
				reply(w, http.StatusConflict, api.Error{Error: "worker is connected"})
				return
			}
			f.workers = append(f.workers[:i], f.workers[i+1:]...)
			w.WriteHeader(http.StatusNoContent)
			return
		}
		reply(w, http.StatusNotFound, api.Error{Error: "worker not found"})
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

// testApp returns an App that writes to buffers, reads DTF_ADDR from addr
// and has a fixed clock.
func testApp(addr string, terminal bool) (*App, *bytes.Buffer, *bytes.Buffer) {
	stdout, stderr := &bytes.Buffer{}, &bytes.Buffer{}
	now := time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC)
	return &App{
		Stdin:    bytes.NewReader(nil),
		Stdout:   stdout,
		Stderr:   stderr,
		Getenv:   func(name string) string { return map[string]string{addrEnv: addr}[name] },
		Terminal: terminal,
		Now:      func() time.Time { return now },
	}, stdout, stderr
}

func runApp(app *App, args ...string) int {
	return app.Run(context.Background(), args)
}
