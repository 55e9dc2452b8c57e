// Package ratelog limits repeated log lines. A Limiter logs the first
// occurrence of a key, then at most one line per interval for that key, and
// that line carries the number of repeats suppressed since the previous
// one. The coordinator and the worker host use it for lines that a peer
// can trigger at will, such as rejected connections and failed handshakes.
package ratelog

import (
	"bytes"
	"io"
	"log"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// SuppressedKey is the log key that carries the number of repeats
// suppressed since the previous line of the same key.
const SuppressedKey = "suppressed"

// DefaultMaxKeys bounds the keys that a Limiter tracks when New is used.
const DefaultMaxKeys = 4096

// overflowKey is shared by the new keys that arrive while a Limiter tracks
// its maximum number of keys, so that a flood of distinct keys is still
// limited, as one key.
const overflowKey = "\x00ratelog-overflow"

// Limiter rate-limits log lines by key. Its methods are safe for
// concurrent use.
type Limiter struct {
	interval time.Duration
	maxKeys  int
	now      func() time.Time

	mu   sync.Mutex
	keys map[string]*window
}

// window is the state of one key: when its last line was logged and the
// call that was suppressed last, which Flush logs.
type window struct {
	logged     time.Time
	suppressed uint64
	pending    *call
}

// call is one suppressed log call, kept so that Flush can log its count.
type call struct {
	logger hclog.Logger
	level  hclog.Level
	msg    string
	args   []any
}

// New returns a Limiter that logs each key at most once per interval and
// tracks up to DefaultMaxKeys keys. It panics if interval is not positive.
func New(interval time.Duration) *Limiter {
	return NewWithMaxKeys(interval, DefaultMaxKeys)
}

// NewWithMaxKeys is New with a bound on the tracked keys. Beyond the bound,
// keys whose interval has passed are dropped first. If every tracked key is
// still within its interval, new keys share one window, so a flood of
// distinct keys logs one line per interval in total. It panics if interval
// or maxKeys is not positive, because that is a programming error.
func NewWithMaxKeys(interval time.Duration, maxKeys int) *Limiter {
	if interval <= 0 {
		panic("ratelog: interval must be positive")
	}
	if maxKeys <= 0 {
		panic("ratelog: maxKeys must be positive")
	}
	return &Limiter{
		interval: interval,
		maxKeys:  maxKeys,
		now:      time.Now,
		keys:     map[string]*window{},
	}
}

// Allow records one occurrence of key. It returns true when the caller is
// to log it, with the number of occurrences suppressed since the previous
// line of key. It returns false while key is within its interval.
func (l *Limiter) Allow(key string) (suppressed uint64, ok bool) {
	return l.record(key, nil)
}

// Log logs msg with args at level through logger unless key was logged
// within the interval. A line that follows suppressed repeats carries their
// count under SuppressedKey. It reports whether it logged.
func (l *Limiter) Log(logger hclog.Logger, level hclog.Level, key, msg string, args ...any) bool {
	suppressed, ok := l.record(key, &call{logger: logger, level: level, msg: msg, args: args})
	if !ok {
		return false
	}
	if suppressed > 0 {
		args = append(args[:len(args):len(args)], SuppressedKey, suppressed)
	}
	logger.Log(level, msg, args...)
	return true
}

// Info is Log at hclog.Info.
func (l *Limiter) Info(logger hclog.Logger, key, msg string, args ...any) bool {
	return l.Log(logger, hclog.Info, key, msg, args...)
}

// Warn is Log at hclog.Warn.
func (l *Limiter) Warn(logger hclog.Logger, key, msg string, args ...any) bool {
	return l.Log(logger, hclog.Warn, key, msg, args...)
}

// Error is Log at hclog.Error.
func (l *Limiter) Error(logger hclog.Logger, key, msg string, args ...any) bool {
	return l.Log(logger, hclog.Error, key, msg, args...)
}

// Flush logs, for each key whose interval has passed since its last line
// and that has suppressed repeats from Log, the last suppressed call with
// the count under SuppressedKey. Without Flush, the repeats at the end of a
// burst are reported only when the key occurs again. Call it from a
// periodic loop, at about the interval. Repeats counted through Allow alone
// have no message to log and wait for the next occurrence.
func (l *Limiter) Flush() {
	type line struct {
		c     *call
		count uint64
	}
	var lines []line

	l.mu.Lock()
	now := l.now()
	for _, w := range l.keys {
		if w.pending == nil || now.Sub(w.logged) < l.interval {
			continue
		}
		lines = append(lines, line{c: w.pending, count: w.suppressed})
		w.logged = now
		w.suppressed = 0
		w.pending = nil
	}
	l.mu.Unlock()

	// Log outside the lock, because a logger may block on its output.
	for _, ln := range lines {
		args := append(ln.c.args[:len(ln.c.args):len(ln.c.args)], SuppressedKey, ln.count)
		ln.c.logger.Log(ln.c.level, ln.c.msg, args...)
	}
}

// Tracked returns the number of keys the Limiter holds state for.
func (l *Limiter) Tracked() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.keys)
}

// record counts one occurrence of key at the current time. A suppressed
// occurrence stores c, when not nil, for Flush.
func (l *Limiter) record(key string, c *call) (uint64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	w := l.keys[key]
	if w == nil {
		if len(l.keys) >= l.maxKeys && !l.sweepLocked(now) {
			key = overflowKey
			w = l.keys[key]
		}
	}
	if w == nil {
		l.keys[key] = &window{logged: now}
		return 0, true
	}
	if now.Sub(w.logged) < l.interval {
		w.suppressed++
		if c != nil {
			w.pending = c
		}
		return 0, false
	}
	n := w.suppressed
	w.logged = now
	w.suppressed = 0
	w.pending = nil
	return n, true
}

// sweepLocked drops the keys whose interval has passed and that have no
// suppressed repeats left to report, and reports whether that made room.
// The caller holds l.mu. The overflow window may take the last free slot,
// so the map holds at most maxKeys+1 entries.
func (l *Limiter) sweepLocked(now time.Time) bool {
	for key, w := range l.keys {
		if w.suppressed == 0 && now.Sub(w.logged) >= l.interval {
			delete(l.keys, key)
		}
	}
	return len(l.keys) < l.maxKeys
}

// StandardLogger returns a *log.Logger, such as http.Server.ErrorLog, whose
// lines go through l to logger at level. keyOf maps a line, without its
// trailing newline, to its rate-limit key. It should drop the parts that
// vary between repeats, such as a remote address, so that those repeats
// share one key. The line is logged as the message.
func (l *Limiter) StandardLogger(
	logger hclog.Logger,
	level hclog.Level,
	keyOf func(line string) string,
) *log.Logger {
	return log.New(&lineWriter{limiter: l, logger: logger, level: level, keyOf: keyOf}, "", 0)
}

// lineWriter is the io.Writer behind StandardLogger. A *log.Logger calls
// Write once per line.
type lineWriter struct {
	limiter *Limiter
	logger  hclog.Logger
	level   hclog.Level
	keyOf   func(string) string
}

var _ io.Writer = (*lineWriter)(nil)

func (w *lineWriter) Write(p []byte) (int, error) {
	line := string(bytes.TrimRight(p, "\r\n"))
	w.limiter.Log(w.logger, w.level, w.keyOf(line), line)
	return len(p), nil
}
