package main

import (
	"sync"
	"sync/atomic"
	"time"
)

// fleet collects what the simulated workers of one run observe: frame
// counters, connection state and the timestamps a storm measurement needs.
// Its methods are safe for concurrent use.
type fleet struct {
	size int

	framesSent     atomic.Uint64
	framesReceived atomic.Uint64
	connected      atomic.Int64
	synced         atomic.Int64
	outcomesAcked  atomic.Uint64
	outcomesStale  atomic.Uint64
	rejects        atomic.Uint64
	replayFull     atomic.Uint64
	unknownFrames  atomic.Uint64

	mu sync.Mutex
	// attempts are the start times of every dial.
	attempts []time.Time
	// disconnects are the times sessions ended, in order.
	disconnects []time.Time
	// welcomes are the successful handshakes, in order.
	welcomes []welcomeEvent
	// changed is closed and replaced on every connect, disconnect and
	// acknowledged outcome, so waiters need not poll.
	changed chan struct{}
}

// welcomeEvent is one successful handshake of one worker.
type welcomeEvent struct {
	worker  int
	at      time.Time
	resumed bool
}

func newFleet(size int) *fleet {
	return &fleet{size: size, changed: make(chan struct{})}
}

func (f *fleet) notifyLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// watch returns a channel that is closed at the next change.
func (f *fleet) watch() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

func (f *fleet) recordAttempt(at time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.attempts = append(f.attempts, at)
}

func (f *fleet) recordWelcome(worker int, resumed bool) {
	f.connected.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.welcomes = append(f.welcomes, welcomeEvent{worker: worker, at: time.Now(), resumed: resumed})
	f.notifyLocked()
}

func (f *fleet) recordDisconnect(wasSynced bool) {
	f.connected.Add(-1)
	if wasSynced {
		f.synced.Add(-1)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.disconnects = append(f.disconnects, time.Now())
	f.notifyLocked()
}

func (f *fleet) recordSynced() {
	f.synced.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.notifyLocked()
}

func (f *fleet) recordOutcomeAck(applied bool) {
	if !applied {
		f.outcomesStale.Add(1)
		return
	}
	f.outcomesAcked.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.notifyLocked()
}

// snapshot copies the event lists.
func (f *fleet) snapshot() (attempts, disconnects []time.Time, welcomes []welcomeEvent) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.attempts...),
		append([]time.Time(nil), f.disconnects...),
		append([]welcomeEvent(nil), f.welcomes...)
}
