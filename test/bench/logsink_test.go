package bench

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// logEvent is one log call of the coordinator that a watch matched, with
// the time the sink received it.
type logEvent struct {
	at   time.Time
	args map[string]string
}

// logWatch passes the log calls with one message to its channel. A full
// channel drops the event and counts it, so a log call never blocks.
type logWatch struct {
	message string
	events  chan logEvent
	dropped atomic.Int64
}

// logSink is an hclog.SinkAdapter that passes selected log calls of the
// coordinator to the benchmark. hclog's intercept logger calls it for every
// log call at any level, before any formatting.
type logSink struct {
	mu      sync.Mutex
	watches []*logWatch
}

// watch returns a watch for the log calls whose message is message.
//
// NOTE: a watch depends on the wording of a coordinator log message. When
// that wording changes, the benchmark that waits on it fails at waitLimit
// with the message it waited for.
func (s *logSink) watch(message string) *logWatch {
	w := &logWatch{message: message, events: make(chan logEvent, 256)}
	s.mu.Lock()
	s.watches = append(s.watches, w)
	s.mu.Unlock()
	return w
}

// Accept implements hclog.SinkAdapter.
func (s *logSink) Accept(_ string, _ hclog.Level, msg string, args ...any) {
	at := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, w := range s.watches {
		if w.message != msg {
			continue
		}
		event := logEvent{at: at, args: make(map[string]string, len(args)/2)}
		for i := 0; i+1 < len(args); i += 2 {
			event.args[fmt.Sprint(args[i])] = fmt.Sprint(args[i+1])
		}
		select {
		case w.events <- event:
		default:
			w.dropped.Add(1)
		}
	}
}

// next returns the next event whose key has the value want, skipping
// others.
func (w *logWatch) next(b *testing.B, key, want string) logEvent {
	b.Helper()
	deadline := time.NewTimer(waitLimit)
	defer deadline.Stop()
	for {
		select {
		case event := <-w.events:
			if event.args[key] == want {
				return event
			}
		case <-deadline.C:
			b.Fatalf("no coordinator log %q with %s=%q within %s (%d events dropped on a full channel)",
				w.message, key, want, waitLimit, w.dropped.Load())
		}
	}
}
