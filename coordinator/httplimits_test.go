package coordinator

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/coordinator/api"
)

// paddedSubmission returns a valid submission of one command task whose
// payload pads it to a little over size bytes.
func paddedSubmission(size int) string {
	return `{"tasks":[{"type":"command","payload":{"pad":"` + strings.Repeat("x", size) + `"}}]}`
}

// chunkedReader hides the length of its content, so that the client sends
// the body with chunked transfer encoding and no Content-Length.
type chunkedReader struct{ io.Reader }

func TestBodyOverLimitGets413(t *testing.T) {
	cfg := testConfig(t, "")
	cfg.MaxBodyBytes = 2048
	ts := startServer(t, cfg)

	t.Run("content length", func(t *testing.T) {
		var apiErr api.Error
		status := doJSON(t, http.MethodPost, ts.url+"/v1/tasks", paddedSubmission(4096), &apiErr)
		assert.Equal(t, http.StatusRequestEntityTooLarge, status)
		assert.Contains(t, apiErr.Error, "limit of 2048 bytes")
		assert.Contains(t, apiErr.Error, "max_body_bytes")
	})

	t.Run("chunked", func(t *testing.T) {
		req, err := http.NewRequest(http.MethodPost, ts.url+"/v1/tasks",
			chunkedReader{strings.NewReader(paddedSubmission(4096))})
		require.NoError(t, err)
		resp, err := httpClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		assert.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode)
		var apiErr api.Error
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&apiErr))
		assert.Contains(t, apiErr.Error, "limit of 2048 bytes")
		assert.Contains(t, apiErr.Error, "max_body_bytes")
	})

	t.Run("other endpoint", func(t *testing.T) {
		var apiErr api.Error
		status := doJSON(t, http.MethodPost, ts.url+"/v1/tasks/t-1/cancel", paddedSubmission(4096), &apiErr)
		assert.Equal(t, http.StatusRequestEntityTooLarge, status)
		assert.Contains(t, apiErr.Error, "max_body_bytes")
	})

	// The coordinator keeps serving, and a body under the limit passes.
	var resp api.SubmitResponse
	require.Equal(t, http.StatusCreated, doJSON(t, http.MethodPost, ts.url+"/v1/tasks", paddedSubmission(1500), &resp))
	assert.Len(t, resp.Tasks, 1)
	assert.Equal(t, http.StatusOK, doJSON(t, http.MethodGet, ts.url+"/healthz", nil, nil))
}

// readUntilClosed reads conn until the server closes it or the deadline
// passes, and returns what it read and the error that ended the read.
func readUntilClosed(conn net.Conn, deadline time.Duration) ([]byte, error) {
	if err := conn.SetReadDeadline(time.Now().Add(deadline)); err != nil {
		return nil, err
	}
	var got bytes.Buffer
	_, err := io.Copy(&got, conn)
	if err == nil {
		err = io.EOF
	}
	return got.Bytes(), err
}

func isTimeout(err error) bool {
	var netErr net.Error
	return errors.As(err, &netErr) && netErr.Timeout()
}

func TestSlowHeadersAreDisconnected(t *testing.T) {
	cfg := testConfig(t, "")
	cfg.HTTPReadHeaderTimeout = 200 * time.Millisecond
	ts := startServer(t, cfg)

	conn, err := net.Dial("tcp", ts.Addr())
	require.NoError(t, err)
	defer conn.Close()
	// The request line and one header, without the blank line that ends
	// the headers.
	_, err = conn.Write([]byte("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"))
	require.NoError(t, err)

	start := time.Now()
	got, err := readUntilClosed(conn, waitFor)
	assert.False(t, isTimeout(err), "the coordinator kept a connection without headers for %s: %v",
		time.Since(start), err)
	assert.NotContains(t, string(got), "200 OK", "a request without all its headers was served")

	assert.Equal(t, http.StatusOK, doJSON(t, http.MethodGet, ts.url+"/healthz", nil, nil))
}

func TestIdleKeepAliveIsClosed(t *testing.T) {
	cfg := testConfig(t, "")
	cfg.HTTPIdleTimeout = 200 * time.Millisecond
	ts := startServer(t, cfg)

	conn, err := net.Dial("tcp", ts.Addr())
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.Write([]byte("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"))
	require.NoError(t, err)
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(waitFor)))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	_, err = io.Copy(io.Discard, resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	assert.Equal(t, http.StatusOK, resp.StatusCode)

	// The connection stays open for the next request until the idle
	// timeout ends it.
	_, err = readUntilClosed(conn, waitFor)
	assert.False(t, isTimeout(err), "the coordinator kept an idle connection: %v", err)
}

// The HTTP server's timeouts end at the WebSocket upgrade: a worker
// session outlives several of them and still gets assignments.
func TestWorkerSessionOutlivesHTTPTimeouts(t *testing.T) {
	cfg := testConfig(t, "")
	cfg.HTTPReadHeaderTimeout = 100 * time.Millisecond
	cfg.HTTPReadTimeout = 200 * time.Millisecond
	cfg.HTTPIdleTimeout = 200 * time.Millisecond
	ts := startServer(t, cfg)
	w, _ := connectSynced(t, ts, "w-1", []string{"command"})

	// The property is that nothing happens, so the test watches the
	// connection for five read timeouts instead of waiting for a condition.
	select {
	case <-w.done:
		t.Fatal("the coordinator closed a worker connection at an HTTP timeout")
	case <-time.After(5 * cfg.HTTPReadTimeout):
	}

	submit(t, ts, commandSpec())
	assign := w.expect("assign").GetAssign()
	assert.NotEmpty(t, assign.GetRef().GetTaskId())
}
