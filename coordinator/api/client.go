package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// DefaultAddr is the coordinator address clients use when none is set; it
// matches the listen address in configs/coordinator.hcl.
const DefaultAddr = "http://127.0.0.1:7070"

// maxResponseBytes bounds a response body that a client reads, so a broken
// or hostile server cannot grow the client's memory without limit. A list of
// 100,000 tasks stays well under it.
const maxResponseBytes = 256 << 20

// defaultClientTimeout bounds one request when Client.HTTP is nil.
const defaultClientTimeout = 30 * time.Second

// ResponseError is a non-2xx response from the coordinator.
type ResponseError struct {
	Method     string
	Path       string
	StatusCode int
	// Body is the decoded api.Error; it is empty when the body was not one.
	Body Error
}

// Error formats the failed request, the HTTP status and the API's message
// with the field it names.
func (e *ResponseError) Error() string {
	msg := e.Body.Error
	if msg == "" {
		msg = http.StatusText(e.StatusCode)
	}
	if e.Body.Field != "" && !strings.HasPrefix(msg, e.Body.Field) {
		msg = e.Body.Field + ": " + msg
	}
	return fmt.Sprintf("%s %s: %d %s", e.Method, e.Path, e.StatusCode, msg)
}

// ErrNotFound matches a ResponseError with status 404 under errors.Is.
var ErrNotFound = errors.New("not found")

// ErrConflict matches a ResponseError with status 409 under errors.Is, which
// the coordinator returns when a task to cancel is already terminal.
var ErrConflict = errors.New("conflict")

// Is lets errors.Is match ErrNotFound and ErrConflict by status code.
func (e *ResponseError) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.StatusCode == http.StatusNotFound
	case ErrConflict:
		return e.StatusCode == http.StatusConflict
	}
	return false
}

// Client calls the coordinator's HTTP API. The zero value is not usable:
// set BaseURL. Its methods are safe for concurrent use.
type Client struct {
	// BaseURL is the coordinator's address, such as "http://127.0.0.1:7070".
	BaseURL string
	// HTTP sends the requests; nil means a client with a 30 second timeout.
	HTTP *http.Client
	// Token is the API token sent as Authorization: Bearer, or empty to
	// send none.
	Token string
}

// NewClient returns a Client for the coordinator at addr. An address without
// a scheme, such as "127.0.0.1:7070", gets "http://".
func NewClient(addr string) (*Client, error) {
	if addr == "" {
		addr = DefaultAddr
	}
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("invalid coordinator address %q; use a URL such as %s", addr, DefaultAddr)
	}
	return &Client{BaseURL: strings.TrimRight(u.String(), "/")}, nil
}

// Submit creates the request's tasks and returns them with their batch.
func (c *Client) Submit(ctx context.Context, req SubmitRequest) (*SubmitResponse, error) {
	var resp SubmitResponse
	if err := c.do(ctx, http.MethodPost, "/v1/tasks", req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// ListTasks returns the tasks in creation order, without attempts. Empty
// batch or state match every task.
func (c *Client) ListTasks(ctx context.Context, batch, state string) ([]Task, error) {
	query := url.Values{}
	if batch != "" {
		query.Set("batch", batch)
	}
	if state != "" {
		query.Set("state", state)
	}
	path := "/v1/tasks"
	if len(query) > 0 {
		path += "?" + query.Encode()
	}

	var resp struct {
		Tasks []Task `json:"tasks"`
	}
	if err := c.do(ctx, http.MethodGet, path, nil, &resp); err != nil {
		return nil, err
	}
	return resp.Tasks, nil
}

// GetTask returns one task with its attempts and outcome. A missing task is
// an error that matches ErrNotFound.
func (c *Client) GetTask(ctx context.Context, id string) (*Task, error) {
	var task Task
	if err := c.do(ctx, http.MethodGet, "/v1/tasks/"+url.PathEscape(id), nil, &task); err != nil {
		return nil, err
	}
	return &task, nil
}

// Cancel cancels a queued or running task and returns it. A task that is
// already terminal is an error that matches ErrConflict.
func (c *Client) Cancel(ctx context.Context, id string) (*Task, error) {
	var task Task
	path := "/v1/tasks/" + url.PathEscape(id) + "/cancel"
	if err := c.do(ctx, http.MethodPost, path, nil, &task); err != nil {
		return nil, err
	}
	return &task, nil
}

// ListWorkers returns every worker the coordinator has seen.
func (c *Client) ListWorkers(ctx context.Context) ([]Worker, error) {
	var resp struct {
		Workers []Worker `json:"workers"`
	}
	if err := c.do(ctx, http.MethodGet, "/v1/workers", nil, &resp); err != nil {
		return nil, err
	}
	return resp.Workers, nil
}

// ForgetWorker removes a worker that has left from the coordinator's list.
// An unknown worker is an error that matches ErrNotFound, and a worker that
// is connected, waits for a resume or still has running attempts one that
// matches ErrConflict.
func (c *Client) ForgetWorker(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/v1/workers/"+url.PathEscape(id), nil, nil)
}

// WorkerTimeline returns the connection history that the coordinator keeps
// for one worker. A worker without history is an error that matches
// ErrNotFound.
func (c *Client) WorkerTimeline(ctx context.Context, id string) (*WorkerTimeline, error) {
	var timeline WorkerTimeline
	path := "/v1/workers/" + url.PathEscape(id) + "/timeline"
	if err := c.do(ctx, http.MethodGet, path, nil, &timeline); err != nil {
		return nil, err
	}
	return &timeline, nil
}

// Health checks GET /healthz and returns nil when the coordinator reports
// status "ok".
func (c *Client) Health(ctx context.Context) error {
	var resp struct {
		Status string `json:"status"`
	}
	if err := c.do(ctx, http.MethodGet, "/healthz", nil, &resp); err != nil {
		return err
	}
	if resp.Status != "ok" {
		return fmt.Errorf("GET /healthz: coordinator status is %q, expected \"ok\"", resp.Status)
	}
	return nil
}

// do sends one request with an optional JSON body and decodes a 2xx
// response into out.
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode %s %s request: %w", method, path, err)
		}
		body = bytes.NewReader(data)
	}

	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.BaseURL, "/")+path, body)
	if err != nil {
		return fmt.Errorf("build %s %s request: %w", method, path, err)
	}
	req.Header.Set("Accept", "application/json")
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}

	httpClient := c.HTTP
	if httpClient == nil {
		httpClient = &http.Client{Timeout: defaultClientTimeout}
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		// A *url.Error repeats the method and the full URL; keep its cause.
		var urlErr *url.Error
		if errors.As(err, &urlErr) {
			return fmt.Errorf("%s %s: %w", method, urlErr.URL, urlErr.Err)
		}
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()

	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return fmt.Errorf("%s %s: read response: %w", method, path, err)
	}
	if len(data) > maxResponseBytes {
		return fmt.Errorf("%s %s: response larger than %d bytes", method, path, maxResponseBytes)
	}

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		respErr := &ResponseError{Method: method, Path: path, StatusCode: resp.StatusCode}
		if json.Unmarshal(data, &respErr.Body) != nil {
			respErr.Body = Error{Error: firstLine(data)}
		}
		return respErr
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: decode response: %w", method, path, err)
	}
	return nil
}

// firstLine returns the first line of a non-JSON error body, at most 200
// bytes, such as a proxy's plain-text error page.
func firstLine(data []byte) string {
	line, _, _ := strings.Cut(strings.TrimSpace(string(data)), "\n")
	if len(line) > 200 {
		line = line[:200] + "..."
	}
	return line
}
