package ratelog

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeClock is a manual clock for a Limiter.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newTestLimiter(interval time.Duration, maxKeys int) (*Limiter, *fakeClock) {
	clock := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	l := NewWithMaxKeys(interval, maxKeys)
	l.now = clock.Now
	return l, clock
}

// jsonLogger returns a logger that writes JSON lines into the returned
// buffer.
func jsonLogger() (hclog.Logger, *bytes.Buffer) {
	var buf bytes.Buffer
	logger := hclog.New(&hclog.LoggerOptions{Output: &buf, JSONFormat: true, Level: hclog.Trace})
	return logger, &buf
}

// logLines decodes the JSON lines in buf.
func logLines(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for _, raw := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if raw == "" {
			continue
		}
		var line map[string]any
		require.NoError(t, json.Unmarshal([]byte(raw), &line), "log line %q", raw)
		lines = append(lines, line)
	}
	return lines
}

func TestAllowFirstThenOncePerInterval(t *testing.T) {
	l, clock := newTestLimiter(time.Second, 16)

	n, ok := l.Allow("a")
	assert.True(t, ok, "first occurrence")
	assert.Zero(t, n)

	for range 5 {
		clock.Advance(100 * time.Millisecond)
		_, ok = l.Allow("a")
		assert.False(t, ok, "repeat within the interval")
	}

	n, ok = l.Allow("b")
	assert.True(t, ok, "another key is limited on its own")
	assert.Zero(t, n)

	clock.Advance(500 * time.Millisecond)
	n, ok = l.Allow("a")
	assert.True(t, ok, "after the interval")
	assert.Equal(t, uint64(5), n, "repeats suppressed since the last line")

	n, ok = l.Allow("a")
	assert.False(t, ok, "interval restarts at the logged line")
	assert.Zero(t, n)
}

func TestLogCarriesSuppressedCount(t *testing.T) {
	l, clock := newTestLimiter(time.Second, 16)
	logger, buf := jsonLogger()

	assert.True(t, l.Warn(logger, "reject", "connection rejected", "worker_id", "w1"))
	assert.False(t, l.Warn(logger, "reject", "connection rejected", "worker_id", "w2"))
	assert.False(t, l.Warn(logger, "reject", "connection rejected", "worker_id", "w3"))
	clock.Advance(time.Second)
	assert.True(t, l.Info(logger, "reject", "connection rejected", "worker_id", "w4"))

	lines := logLines(t, buf)
	require.Len(t, lines, 2)
	assert.Equal(t, "warn", lines[0]["@level"])
	assert.Equal(t, "w1", lines[0]["worker_id"])
	assert.NotContains(t, lines[0], SuppressedKey, "first line has nothing suppressed")
	assert.Equal(t, "info", lines[1]["@level"])
	assert.Equal(t, "w4", lines[1]["worker_id"])
	assert.EqualValues(t, 2, lines[1][SuppressedKey])
}

func TestFlushReportsBurstTail(t *testing.T) {
	l, clock := newTestLimiter(time.Second, 16)
	logger, buf := jsonLogger()

	l.Warn(logger, "k", "handshake failed", "reason", "first")
	l.Warn(logger, "k", "handshake failed", "reason", "second")
	l.Warn(logger, "k", "handshake failed", "reason", "third")

	l.Flush()
	require.Len(t, logLines(t, buf), 1, "flush within the interval logs nothing")

	clock.Advance(time.Second)
	l.Flush()
	lines := logLines(t, buf)
	require.Len(t, lines, 2)
	assert.Equal(t, "third", lines[1]["reason"], "flush logs the last suppressed call")
	assert.EqualValues(t, 2, lines[1][SuppressedKey])

	clock.Advance(time.Second)
	l.Flush()
	assert.Len(t, logLines(t, buf), 2, "nothing left to flush")

	assert.True(t, l.Warn(logger, "k", "handshake failed", "reason", "fourth"))
	lines = logLines(t, buf)
	require.Len(t, lines, 3)
	assert.NotContains(t, lines[2], SuppressedKey, "flushed repeats are not counted twice")
}

func TestMaxKeysBoundsState(t *testing.T) {
	l, clock := newTestLimiter(time.Second, 4)

	for i := range 4 {
		_, ok := l.Allow(fmt.Sprintf("key-%d", i))
		require.True(t, ok)
	}
	_, ok := l.Allow("key-4")
	assert.True(t, ok, "first key beyond the bound opens the overflow window")
	_, ok = l.Allow("key-5")
	assert.False(t, ok, "later new keys share the overflow window")
	assert.Equal(t, 5, l.Tracked(), "four keys and the overflow window")

	clock.Advance(time.Second)
	_, ok = l.Allow("key-6")
	assert.True(t, ok, "expired keys make room")
	assert.LessOrEqual(t, l.Tracked(), 5)
}

func TestSweepKeepsUnreportedRepeats(t *testing.T) {
	l, clock := newTestLimiter(time.Second, 1)

	l.Allow("a")
	l.Allow("a")
	clock.Advance(time.Second)
	l.Allow("b")

	n, ok := l.Allow("a")
	assert.True(t, ok)
	assert.Equal(t, uint64(1), n, "the sweep kept a key with a repeat to report")
}

func TestStandardLoggerKeysLines(t *testing.T) {
	l, clock := newTestLimiter(time.Second, 16)
	logger, buf := jsonLogger()
	keyOf := func(line string) string {
		prefix, _, _ := strings.Cut(line, " from ")
		return prefix
	}
	std := l.StandardLogger(logger, hclog.Warn, keyOf)

	std.Printf("http: TLS handshake error from 127.0.0.1:1000: EOF")
	std.Printf("http: TLS handshake error from 127.0.0.1:1001: EOF")
	std.Printf("http: superfluous response.WriteHeader call")
	clock.Advance(time.Second)
	std.Printf("http: TLS handshake error from 127.0.0.1:1002: EOF")

	lines := logLines(t, buf)
	require.Len(t, lines, 3)
	assert.Equal(t, "http: TLS handshake error from 127.0.0.1:1000: EOF", lines[0]["@message"])
	assert.Equal(t, "http: superfluous response.WriteHeader call", lines[1]["@message"])
	assert.Equal(t, "http: TLS handshake error from 127.0.0.1:1002: EOF", lines[2]["@message"])
	assert.EqualValues(t, 1, lines[2][SuppressedKey])
}

func TestConcurrentUse(t *testing.T) {
	l := New(time.Hour)
	logger, buf := jsonLogger()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 200 {
				l.Warn(logger, "shared", "repeat", "goroutine", g)
			}
		}()
	}
	wg.Wait()
	assert.Len(t, logLines(t, buf), 1, "one line within the interval")

	_, ok := l.Allow("shared")
	assert.False(t, ok)
}

func TestNewRejectsInvalidArguments(t *testing.T) {
	assert.Panics(t, func() { New(0) })
	assert.Panics(t, func() { NewWithMaxKeys(time.Second, 0) })
}
