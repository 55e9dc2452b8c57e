package connector

import (
	"fmt"
	"sync"

	"github.com/dtf-io/dtf/plugin/pb"
)

// Connection states reported in StateChange.state.
const (
	// StateConnecting is a dial and handshake that starts a new session.
	StateConnecting = "connecting"
	// StateResuming is a dial and handshake that names the previous
	// session, so both sides can replay what the other missed.
	StateResuming = "resuming"
	// StateConnected is a welcomed session; StateChange.resumed tells
	// whether the previous session continued.
	StateConnected = "connected"
	// StateBackingOff is the wait before the next attempt.
	StateBackingOff = "backing_off"
	// StateCircuitOpen is the circuit breaker's cooldown, during which no
	// dial happens.
	StateCircuitOpen = "circuit_open"
	// StateDraining is a stop in progress: queued frames are written and
	// the connection is closed normally.
	StateDraining = "draining"
	// StateClosed is final: stopped, or given up for good.
	StateClosed = "closed"
)

// transitions lists, per state, the states it may move to. The empty state
// is the start before the first attempt.
var transitions = map[string][]string{
	"":               {StateConnecting, StateResuming, StateClosed},
	StateConnecting:  {StateConnected, StateBackingOff, StateCircuitOpen, StateDraining, StateClosed},
	StateResuming:    {StateConnected, StateBackingOff, StateCircuitOpen, StateDraining, StateClosed},
	StateConnected:   {StateBackingOff, StateCircuitOpen, StateDraining, StateClosed},
	StateBackingOff:  {StateConnecting, StateResuming, StateCircuitOpen, StateDraining, StateClosed},
	StateCircuitOpen: {StateConnecting, StateResuming, StateDraining, StateClosed},
	StateDraining:    {StateClosed},
	StateClosed:      {},
}

// canTransition reports whether the state machine allows from -> to.
func canTransition(from, to string) bool {
	for _, next := range transitions[from] {
		if next == to {
			return true
		}
	}
	return false
}

// stateMachine tracks the connection state of one Events stream and emits
// a StateChange for each transition. It is safe for concurrent use.
type stateMachine struct {
	mu      sync.Mutex
	current string
	emit    func(*pb.StateChange)
}

func newStateMachine(emit func(*pb.StateChange)) *stateMachine {
	return &stateMachine{emit: emit}
}

// Transition moves to change.State and emits change. A transition that the
// table does not allow is not made and returns an error.
func (m *stateMachine) Transition(change *pb.StateChange) error {
	m.mu.Lock()
	from := m.current
	if !canTransition(from, change.GetState()) {
		m.mu.Unlock()
		return fmt.Errorf("invalid connection state transition from %q to %q", from, change.GetState())
	}
	m.current = change.GetState()
	m.mu.Unlock()
	m.emit(change)
	return nil
}

// Current returns the current state.
func (m *stateMachine) Current() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.current
}
