package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeAPI serves canned responses and records the last request.
type fakeAPI struct {
	lastMethod string
	lastURL    string
	lastBody   []byte
}

func (f *fakeAPI) handler(t *testing.T) http.Handler {
	mux := http.NewServeMux()
	record := func(r *http.Request) {
		f.lastMethod = r.Method
		f.lastURL = r.URL.String()
		f.lastBody = nil
		if r.Body != nil {
			var raw json.RawMessage
			if json.NewDecoder(r.Body).Decode(&raw) == nil {
				f.lastBody = raw
			}
		}
	}
	reply := func(w http.ResponseWriter, status int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		assert.NoError(t, json.NewEncoder(w).Encode(v))
	}

	mux.HandleFunc("POST /v1/tasks", func(w http.ResponseWriter, r *http.Request) {
		record(r)
		var req SubmitRequest
		assert.NoError(t, json.Unmarshal(f.lastBody, &req))
		if req.Tasks[0].Type == "x" {
			reply(w, http.StatusBadRequest, Error{
				Error: `tasks[0].type: unknown task type "x"; known types: command, gotest`,
				Field: "tasks[0].type",
			})
			return
		}
		reply(w, http.StatusCreated, SubmitResponse{Batch: "b1", Tasks: []Task{{ID: "t1", Batch: "b1"}}})
	})
	mux.HandleFunc("GET /v1/tasks", func(w http.ResponseWriter, r *http.Request) {
		record(r)
		reply(w, http.StatusOK, map[string]any{"tasks": []Task{{ID: "t1", State: StateQueued}}})
	})
	mux.HandleFunc("GET /v1/tasks/{id}", func(w http.ResponseWriter, r *http.Request) {
		record(r)
		if r.PathValue("id") != "t1" {
			reply(w, http.StatusNotFound, Error{Error: "task " + r.PathValue("id") + " not found"})
			return
		}
		reply(w, http.StatusOK, Task{ID: "t1", Attempts: []Attempt{{Attempt: 1, WorkerID: "w1"}}})
	})
	mux.HandleFunc("POST /v1/tasks/{id}/cancel", func(w http.ResponseWriter, r *http.Request) {
		record(r)
		if r.PathValue("id") == "done" {
			reply(w, http.StatusConflict, Error{Error: "task done is already succeeded"})
			return
		}
		reply(w, http.StatusOK, Task{ID: r.PathValue("id"), State: StateCancelled})
	})
	mux.HandleFunc("GET /v1/workers", func(w http.ResponseWriter, r *http.Request) {
		record(r)
		reply(w, http.StatusOK, map[string]any{"workers": []Worker{{ID: "w1", Connected: true}}})
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		record(r)
		reply(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /plain", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "upstream down\nmore detail", http.StatusBadGateway)
	})
	return mux
}

func newTestClient(t *testing.T) (*Client, *fakeAPI) {
	t.Helper()
	fake := &fakeAPI{}
	srv := httptest.NewServer(fake.handler(t))
	t.Cleanup(srv.Close)
	client, err := NewClient(srv.URL)
	require.NoError(t, err)
	client.HTTP = srv.Client()
	return client, fake
}

func TestClientSubmit(t *testing.T) {
	client, fake := newTestClient(t)
	resp, err := client.Submit(context.Background(), SubmitRequest{
		Batch: "b1",
		Tasks: []TaskSpec{{Type: "command", Payload: json.RawMessage(`{"argv":["true"]}`)}},
	})
	require.NoError(t, err)
	assert.Equal(t, "b1", resp.Batch)
	require.Len(t, resp.Tasks, 1)
	assert.Equal(t, "t1", resp.Tasks[0].ID)
	assert.JSONEq(t,
		`{"batch":"b1","tasks":[{"type":"command","payload":{"argv":["true"]}}]}`,
		string(fake.lastBody))
}

func TestClientSubmitErrorNamesField(t *testing.T) {
	client, _ := newTestClient(t)
	_, err := client.Submit(context.Background(), SubmitRequest{
		Tasks: []TaskSpec{{Type: "x", Payload: json.RawMessage(`{}`)}},
	})
	require.Error(t, err)

	var respErr *ResponseError
	require.ErrorAs(t, err, &respErr)
	assert.Equal(t, http.StatusBadRequest, respErr.StatusCode)
	assert.Equal(t, "tasks[0].type", respErr.Body.Field)
	assert.Equal(t,
		`POST /v1/tasks: 400 tasks[0].type: unknown task type "x"; known types: command, gotest`,
		err.Error())
}

func TestClientListTasksQuery(t *testing.T) {
	cases := []struct {
		name, batch, state, wantURL string
	}{
		{"no filter", "", "", "/v1/tasks"},
		{"batch", "b 1", "", "/v1/tasks?batch=b+1"},
		{"both", "b1", StateRunning, "/v1/tasks?batch=b1&state=running"},
	}
	client, fake := newTestClient(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tasks, err := client.ListTasks(context.Background(), tc.batch, tc.state)
			require.NoError(t, err)
			require.Len(t, tasks, 1)
			assert.Equal(t, tc.wantURL, fake.lastURL)
		})
	}
}

func TestClientGetTask(t *testing.T) {
	client, _ := newTestClient(t)
	task, err := client.GetTask(context.Background(), "t1")
	require.NoError(t, err)
	require.Len(t, task.Attempts, 1)
	assert.Equal(t, "w1", task.Attempts[0].WorkerID)

	_, err = client.GetTask(context.Background(), "nope")
	require.Error(t, err)
	assert.True(t, errors.Is(err, ErrNotFound))
	assert.False(t, errors.Is(err, ErrConflict))
	assert.Equal(t, "GET /v1/tasks/nope: 404 task nope not found", err.Error())
}

func TestClientCancel(t *testing.T) {
	client, fake := newTestClient(t)
	task, err := client.Cancel(context.Background(), "t1")
	require.NoError(t, err)
	assert.Equal(t, StateCancelled, task.State)
	assert.Equal(t, http.MethodPost, fake.lastMethod)

	_, err = client.Cancel(context.Background(), "done")
	require.Error(t, err)
	assert.True(t, errors.Is(err, ErrConflict))
	assert.Contains(t, err.Error(), "409 task done is already succeeded")
}

func TestClientWorkersAndHealth(t *testing.T) {
	client, _ := newTestClient(t)
	workers, err := client.ListWorkers(context.Background())
	require.NoError(t, err)
	require.Len(t, workers, 1)
	assert.True(t, workers[0].Connected)

	assert.NoError(t, client.Health(context.Background()))
}

func TestClientPlainTextError(t *testing.T) {
	client, _ := newTestClient(t)
	err := client.do(context.Background(), http.MethodGet, "/plain", nil, &struct{}{})
	require.Error(t, err)
	assert.Equal(t, "GET /plain: 502 upstream down", err.Error())
}

func TestClientUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	addr := srv.URL
	srv.Close()

	client, err := NewClient(addr)
	require.NoError(t, err)
	err = client.Health(context.Background())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "GET "+addr+"/healthz")
	assert.Contains(t, err.Error(), "connection refused")
}

func TestNewClientAddress(t *testing.T) {
	cases := []struct {
		addr, want, wantErr string
	}{
		{"", DefaultAddr, ""},
		{"127.0.0.1:7070", "http://127.0.0.1:7070", ""},
		{"http://127.0.0.1:7070/", "http://127.0.0.1:7070", ""},
		{"https://dtf.example:443", "https://dtf.example:443", ""},
		{"ws://127.0.0.1:7070", "", `invalid coordinator address "ws://127.0.0.1:7070"`},
	}
	for _, tc := range cases {
		t.Run(tc.addr, func(t *testing.T) {
			client, err := NewClient(tc.addr)
			if tc.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, client.BaseURL)
		})
	}
}
