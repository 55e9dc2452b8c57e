package connector

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/coordinator"
	"github.com/dtf-io/dtf/coordinator/api"
	"github.com/dtf-io/dtf/coordinator/config"
)

// realCoordinator is a coordinator.Server running in this test process on
// 127.0.0.1 with a data directory of its own.
type realCoordinator struct {
	server *coordinator.Server
	// log contains the coordinator's log entries at the level it was
	// started with.
	log *logRecorder
	// client calls the coordinator's HTTP API without keeping idle
	// connections, so no client goroutine outlives the test.
	client *api.Client
}

// startRealCoordinator starts a coordinator that accepts the token of
// connectorConfig, with short heartbeat and scheduling timers. configure,
// when not nil, adjusts the configuration before the start. The test's
// cleanup shuts the coordinator down and checks that Run returned nil.
func startRealCoordinator(
	t *testing.T,
	level hclog.Level,
	configure func(*config.Config),
) *realCoordinator {
	t.Helper()
	cfg := config.Default("127.0.0.1:0", t.TempDir())
	cfg.Workers.Token = "secret"
	cfg.ScheduleInterval = 50 * time.Millisecond
	cfg.ShutdownTimeout = 3 * time.Second
	cfg.Workers.HeartbeatInterval = 200 * time.Millisecond
	cfg.Workers.HeartbeatTimeout = 2 * time.Second
	cfg.Workers.HandshakeTimeout = 2 * time.Second
	if configure != nil {
		configure(cfg)
	}

	recorder := &logRecorder{echo: os.Getenv("DTF_TEST_LOG") != ""}
	logger := hclog.New(&hclog.LoggerOptions{
		Name:       "coordinator-under-test",
		Level:      level,
		JSONFormat: true,
		Output:     recorder,
	})
	server, err := coordinator.New(cfg, logger)
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- server.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err, "coordinator Run")
		case <-time.After(cfg.ShutdownTimeout + waitFor):
			t.Fatal("coordinator did not stop within its shutdown timeout")
		}
	})

	return &realCoordinator{
		server: server,
		log:    recorder,
		client: &api.Client{
			BaseURL: "http://" + server.Addr(),
			HTTP: &http.Client{
				Timeout:   waitFor,
				Transport: &http.Transport{DisableKeepAlives: true},
			},
		},
	}
}

// addr returns the coordinator's listening address as host:port.
func (c *realCoordinator) addr() string { return c.server.Addr() }

// logEntry is one decoded line of hclog's JSON output.
type logEntry map[string]any

// message returns the entry's log message.
func (e logEntry) message() string {
	text, _ := e["@message"].(string)
	return text
}

// text returns the string value of key, or "" when the entry lacks it.
func (e logEntry) text(key string) string {
	text, _ := e[key].(string)
	return text
}

// number returns the numeric value of key, or -1 when the entry lacks it.
// hclog writes integers as JSON numbers, which decode as float64.
func (e logEntry) number(key string) int64 {
	value, ok := e[key].(float64)
	if !ok {
		return -1
	}
	return int64(value)
}

// logRecorder is the output of a JSON hclog logger. It decodes each line
// and keeps the entries in the order they were written. It is safe for
// concurrent use.
type logRecorder struct {
	echo bool

	mu      sync.Mutex
	partial []byte
	entries []logEntry
	// invalid counts lines that did not decode as JSON.
	invalid int
}

// Write decodes every complete line in p and keeps the rest for the next
// call, because a writer may receive a line in several parts.
func (r *logRecorder) Write(p []byte) (int, error) {
	if r.echo {
		_, _ = os.Stderr.Write(p)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.partial = append(r.partial, p...)
	for {
		end := bytes.IndexByte(r.partial, '\n')
		if end < 0 {
			break
		}
		line := r.partial[:end]
		r.partial = r.partial[end+1:]
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var entry logEntry
		if err := json.Unmarshal(line, &entry); err != nil {
			r.invalid++
			continue
		}
		r.entries = append(r.entries, entry)
	}
	return len(p), nil
}

// withMessage returns the entries whose message is message, in the order
// they were logged, and the number of lines that failed to decode.
func (r *logRecorder) withMessage(message string) ([]logEntry, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var matched []logEntry
	for _, entry := range r.entries {
		if entry.message() == message {
			matched = append(matched, entry)
		}
	}
	return matched, r.invalid
}
