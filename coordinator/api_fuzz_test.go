package coordinator

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/dtf-io/dtf/coordinator/api"
	"github.com/dtf-io/dtf/coordinator/config"

	"github.com/dtf-io/dtf/internal/fuzzcorpus"
)

// updateFuzzCorpus rewrites the seed corpora under testdata/fuzz:
// go test ./coordinator -run TestWriteFuzzCorpus -update-fuzz-corpus
var updateFuzzCorpus = flag.Bool("update-fuzz-corpus", false, "rewrite the seed corpora under testdata/fuzz")

// FuzzDecodeSubmit checks that decodeSubmit returns either a submission
// that the handler can store or a 400 or 413 with a message.
func FuzzDecodeSubmit(f *testing.F) {
	taskTypes := config.DefaultTaskTypes
	f.Fuzz(func(t *testing.T, body []byte) {
		req, rerr := decodeSubmit(bytes.NewReader(body), taskTypes)
		if rerr != nil {
			if req != nil {
				t.Fatal("decodeSubmit returned a request with an error")
			}
			if rerr.status != http.StatusBadRequest && rerr.status != http.StatusRequestEntityTooLarge {
				t.Fatalf("status %d for %q, expected 400 or 413", rerr.status, rerr.Error())
			}
			if rerr.message == "" {
				t.Fatalf("error without a message, field %q", rerr.field)
			}
			return
		}
		if len(req.Tasks) == 0 || len(req.Tasks) > maxTasksPerSubmit {
			t.Fatalf("accepted %d tasks", len(req.Tasks))
		}
		for i, spec := range req.Tasks {
			if !json.Valid(spec.Payload) || spec.Payload[0] != '{' {
				t.Fatalf("tasks[%d] accepted with payload %q", i, spec.Payload)
			}
			if timeout, err := time.ParseDuration(spec.Timeout); spec.Timeout != "" && (err != nil || timeout < 0) {
				t.Fatalf("tasks[%d] accepted with timeout %q", i, spec.Timeout)
			}
		}
	})
}

// Routes of FuzzAPI, chosen by the route argument modulo their count.
const (
	fuzzRouteSubmit = iota
	fuzzRouteList
	fuzzRouteGet
	fuzzRouteCancel
	fuzzRouteWorkers
	fuzzRouteCount
)

// FuzzAPI sends requests built from the input to the API handler of a
// running coordinator, through an httptest recorder: a submission with the
// input as body, or a list, get or cancel whose query or task id is the
// input. The response must be a success or a 4xx with a JSON error message,
// never a 5xx or a panic.
func FuzzAPI(f *testing.F) {
	srv := startFuzzServer(f)
	handler := srv.routes()
	f.Fuzz(func(t *testing.T, route uint8, text string, body []byte) {
		req, err := fuzzRequest(int(route)%fuzzRouteCount, text, body)
		if err != nil {
			return
		}
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)

		status := rec.Code
		if status >= 500 {
			t.Fatalf("%s %s: status %d: %s", req.Method, req.URL, status, rec.Body.String())
		}
		if status >= 300 && status < 400 {
			// http.ServeMux redirects a path such as /v1/tasks//cancel to
			// its clean form.
			return
		}
		if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
			t.Fatalf("%s %s: content type %q", req.Method, req.URL, ct)
		}
		if status >= 400 {
			var apiErr api.Error
			if err := json.Unmarshal(rec.Body.Bytes(), &apiErr); err != nil || apiErr.Error == "" {
				t.Fatalf("%s %s: status %d without an error message: %q", req.Method, req.URL, status, rec.Body.String())
			}
			return
		}
		if !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("%s %s: status %d with a body that is not JSON: %q", req.Method, req.URL, status, rec.Body.String())
		}
	})
}

// fuzzRequest builds the request of one route.
func fuzzRequest(route int, text string, body []byte) (*http.Request, error) {
	const base = "http://coordinator"
	switch route {
	case fuzzRouteSubmit:
		return http.NewRequest(http.MethodPost, base+"/v1/tasks", bytes.NewReader(body))
	case fuzzRouteList:
		query := url.Values{"state": {text}, "batch": {string(body)}}
		return http.NewRequest(http.MethodGet, base+"/v1/tasks?"+query.Encode(), nil)
	case fuzzRouteGet:
		return http.NewRequest(http.MethodGet, base+"/v1/tasks/"+url.PathEscape(text), nil)
	case fuzzRouteCancel:
		return http.NewRequest(http.MethodPost, base+"/v1/tasks/"+url.PathEscape(text)+"/cancel",
			bytes.NewReader(body))
	default:
		return http.NewRequest(http.MethodGet, base+"/v1/workers?"+url.QueryEscape(text), nil)
	}
}

// startFuzzServer runs a coordinator for the whole fuzz target, stopped
// in the target's cleanup.
func startFuzzServer(f *testing.F) *Server {
	cfg := config.Default("127.0.0.1:0", f.TempDir())
	srv, err := New(cfg, nil)
	if err != nil {
		f.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	f.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				f.Error(err)
			}
		case <-time.After(cfg.ShutdownTimeout + waitFor):
			f.Error("coordinator did not stop")
		}
	})
	return srv
}

// submitSeeds are valid and broken submission bodies.
var submitSeeds = []string{
	`{"tasks":[{"type":"command","payload":{"argv":["true"]}}]}`,
	`{"batch":"nightly","tasks":[{"name":"unit ✓","type":"gotest","payload":{"package":"./..."},` +
		`"timeout":"5m","max_attempts":2,"labels":{"os":"linux"}},{"type":"command","payload":{}}]}`,
	`{"tasks":`,
	`{"tasks":[],"priority":1}`,
	`{}`,
	`null`,
	`[]`,
	`{"tasks":null}`,
	`{"tasks":{}}`,
	`{"tasks":[null]}`,
	`{"tasks":[{"payload":{}}]}`,
	`{"tasks":[{"type":"x","payload":{}}]}`,
	`{"tasks":[{"type":"command","payload":[1]}]}`,
	`{"tasks":[{"type":"command","payload":"x"}]}`,
	`{"tasks":[{"type":"command","payload":{},"timeout":"30"}]}`,
	`{"tasks":[{"type":"command","payload":{},"timeout":"-1s"}]}`,
	`{"tasks":[{"type":"command","payload":{},"max_attempts":-1}]}`,
	`{"tasks":[{"type":"command","payload":{},"max_attempts":1e400}]}`,
	`{"tasks":[{"type":"command","payload":{},"name":5}]}`,
	`{"tasks":[{"type":"command","payload":{},"name":"a\u0000b"}]}`,
	`{"tasks":[{"type":"command","payload":{},"labels":{"":"x"}}]}`,
	`{"tasks":[{"type":"command","payload":{},"labels":[1]}]}`,
	`{"batch":7,"tasks":[{"type":"command","payload":{}}]}`,
	`{"batch":"` + strings.Repeat("b", 200) + `","tasks":[{"type":"command","payload":{}}]}`,
	"{\"tasks\":[{\"type\":\"command\",\"payload\":{},\"name\":\"\xff\"}]}",
	`{"tasks":[{"type":"command","payload":{}}]} trailing`,
}

// TestWriteFuzzCorpus writes the seed corpora of FuzzDecodeSubmit and
// FuzzAPI when -update-fuzz-corpus is set.
func TestWriteFuzzCorpus(t *testing.T) {
	if !*updateFuzzCorpus {
		t.Skip("run with -update-fuzz-corpus to rewrite testdata/fuzz")
	}
	var decode, apiSeeds [][]any
	for _, seed := range submitSeeds {
		decode = append(decode, []any{[]byte(seed)})
		apiSeeds = append(apiSeeds, []any{uint8(fuzzRouteSubmit), "", []byte(seed)})
	}
	for _, query := range []struct {
		route uint8
		text  string
		body  string
	}{
		{fuzzRouteList, "queued", "nightly"},
		{fuzzRouteList, "asleep", ""},
		{fuzzRouteList, "", "\x00"},
		{fuzzRouteGet, "t-00000000", ""},
		{fuzzRouteGet, "../../etc/passwd", ""},
		{fuzzRouteCancel, "t-00000000", ""},
		{fuzzRouteCancel, "", "{}"},
		{fuzzRouteWorkers, "", ""},
	} {
		apiSeeds = append(apiSeeds, []any{query.route, query.text, []byte(query.body)})
	}
	fuzzcorpus.Write(t, "FuzzDecodeSubmit", decode...)
	fuzzcorpus.Write(t, "FuzzAPI", apiSeeds...)
}
