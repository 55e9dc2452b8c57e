package connector

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/plugin/pb"
)

// recordedState is a state change and the time the test received it.
type recordedState struct {
	change *pb.StateChange
	at     time.Time
}

// stateRecorder keeps every state change of one harness with its arrival
// time. It replaces harness.nextState for tests that look at the whole
// history instead of one state at a time.
type stateRecorder struct {
	mu     sync.Mutex
	states []recordedState
}

// recordStates reads the harness's state changes until the test ends.
// onChange, when not nil, runs in the reading goroutine after each change
// is recorded, as the worker host would react to it. Every change must
// follow the previous one by the state table and carry a reason.
func recordStates(t *testing.T, h *harness, onChange func(*pb.StateChange)) *stateRecorder {
	t.Helper()
	r := &stateRecorder{}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		previous := ""
		for {
			select {
			case change := <-h.stream.states:
				checkChange(t, previous, change)
				previous = change.GetState()
				r.mu.Lock()
				r.states = append(r.states, recordedState{change: change, at: time.Now()})
				r.mu.Unlock()
				if onChange != nil {
					onChange(change)
				}
			case <-stop:
				return
			}
		}
	}()
	// Registered after startConnector, so it runs before the harness stops
	// and the stop's own state changes stay in the channel's buffer.
	t.Cleanup(func() {
		close(stop)
		<-done
	})
	return r
}

// checkChange checks that the state table allows previous -> change and
// that change carries a reason. It runs outside the test goroutine, so it
// reports with assert.
func checkChange(t *testing.T, previous string, change *pb.StateChange) {
	assert.True(t, canTransition(previous, change.GetState()),
		"reported transition %q -> %q is not in the state table", previous, change.GetState())
	assert.NotEmpty(t, change.GetReason(), "%s change after %q has no reason", change.GetState(), previous)
}

func (r *stateRecorder) snapshot() []recordedState {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]recordedState(nil), r.states...)
}

// waitUntil polls the recorded history until cond holds and returns that
// history, or fails the test after within.
func (r *stateRecorder) waitUntil(
	t *testing.T,
	within time.Duration,
	what string,
	cond func([]recordedState) bool,
) []recordedState {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	poll := time.NewTicker(5 * time.Millisecond)
	defer poll.Stop()
	for {
		states := r.snapshot()
		if cond(states) {
			return states
		}
		select {
		case <-poll.C:
		case <-deadline.C:
			t.Fatalf("timed out after %s waiting for %s; states so far:\n%s", within, what, describeStates(states))
			return nil
		}
	}
}

// describeStates formats the last 40 changes of a history for a failure
// message.
func describeStates(states []recordedState) string {
	const maxShown = 40
	text := ""
	if len(states) > maxShown {
		text = fmt.Sprintf("  (%d earlier changes not shown)\n", len(states)-maxShown)
		states = states[len(states)-maxShown:]
	}
	for _, s := range states {
		text += fmt.Sprintf("  %s %s attempt=%d next_retry=%d resumed=%t reason=%q\n",
			s.at.Format("15:04:05.000"), s.change.GetState(), s.change.GetAttempt(),
			s.change.GetNextRetryUnixMs(), s.change.GetResumed(), s.change.GetReason())
	}
	return text
}

// countState returns how many changes in states are in state.
func countState(states []recordedState, state string) int {
	n := 0
	for _, s := range states {
		if s.change.GetState() == state {
			n++
		}
	}
	return n
}

// nthIndex returns the index of the n-th change in state, counted from 1,
// or -1.
func nthIndex(states []recordedState, state string, n int) int {
	for i, s := range states {
		if s.change.GetState() == state {
			n--
			if n == 0 {
				return i
			}
		}
	}
	return -1
}

// isDial reports whether a change starts a dial.
func isDial(s recordedState) bool {
	return s.change.GetState() == StateConnecting || s.change.GetState() == StateResuming
}

// reportedDelay returns the wait that a backing_off or circuit_open change
// announces, measured from its arrival. The change was made before it
// arrived, so this never exceeds the delay the connector drew, except for
// the truncation of next_retry_unix_ms to whole milliseconds.
func reportedDelay(s recordedState) time.Duration {
	return time.Duration(s.change.GetNextRetryUnixMs()-s.at.UnixMilli()) * time.Millisecond
}

// checkWaits checks every backing_off change in states: its delay stays
// within the backoff ceiling of its attempt number, and the next dial
// arrives no earlier than the announced retry time.
func checkWaits(t *testing.T, policy BackoffPolicy, states []recordedState) {
	t.Helper()
	for i, s := range states {
		if s.change.GetState() != StateBackingOff {
			continue
		}
		ceiling := policy.Ceiling(int(s.change.GetAttempt()))
		assert.LessOrEqual(t, reportedDelay(s), ceiling+time.Millisecond,
			"attempt %d announced a delay above its ceiling", s.change.GetAttempt())
		for _, next := range states[i+1:] {
			if isDial(next) {
				assert.GreaterOrEqual(t, next.at.UnixMilli(), s.change.GetNextRetryUnixMs(),
					"attempt %d dialed before its announced retry time", s.change.GetAttempt())
				break
			}
		}
	}
}

// firstCapAttempt returns the lowest attempt number whose ceiling is the
// cap.
func firstCapAttempt(policy BackoffPolicy) int {
	n := 1
	for policy.Ceiling(n) < policy.Cap {
		n++
	}
	return n
}

func TestFlappingLinkBackoffGrowsThenResets(t *testing.T) {
	const (
		flapEvery = 200 * time.Millisecond
		flapFor   = 30 * time.Second
		// healthyAfter exceeds flapEvery, so no connection made during the
		// flapping counts as healthy.
		healthyAfter = 2 * time.Second
	)
	policy := BackoffPolicy{Base: 50 * time.Millisecond, Multiplier: 2, Cap: 2 * time.Second}
	// A breaker opened by handshakes cut in flight would replace backoff
	// delays by its cooldown. The breaker has tests of its own below.
	config := fmt.Sprintf(`{"heartbeat_interval": "100ms", "heartbeat_timeout": "1s",
		"backoff_base": %q, "backoff_multiplier": %g, "backoff_cap": %q, "healthy_after": %q,
		"dial_timeout": "1s", "handshake_timeout": "1s", "failure_threshold": 1000}`,
		policy.Base, policy.Multiplier, policy.Cap, healthyAfter)

	coord := startRealCoordinator(t, hclog.Info, nil)
	proxy := startProxy(t, coord.addr())
	h := startConnector(t, "ws://"+proxy.Addr(), config)
	recorder := recordStates(t, h, nil)
	recorder.waitUntil(t, waitFor, "the first connection", func(states []recordedState) bool {
		return countState(states, StateConnected) > 0
	})

	// Cut every connection every flapEvery. The loop is bounded by its count.
	flapStart := time.Now()
	acceptedBefore := proxy.Accepted()
	ticker := time.NewTicker(flapEvery)
	for range int(flapFor / flapEvery) {
		<-ticker.C
		proxy.Cut()
	}
	ticker.Stop()
	flapEnd := time.Now()
	dialsDuringFlap := proxy.Accepted() - acceptedBefore

	var flapping []recordedState
	for _, s := range recorder.snapshot() {
		if !s.at.Before(flapStart) && !s.at.After(flapEnd) {
			flapping = append(flapping, s)
		}
	}
	t.Logf("during %s of flapping: %d dials, %d connections, %d backing_off changes",
		flapFor, dialsDuringFlap, countState(flapping, StateConnected), countState(flapping, StateBackingOff))

	// No connection was healthy, so every wait counts one more failure and
	// the attempt numbers run 1, 2, 3, ... without a reset.
	var attempts []uint32
	for _, s := range flapping {
		if s.change.GetState() == StateBackingOff {
			attempts = append(attempts, s.change.GetAttempt())
		}
	}
	require.NotEmpty(t, attempts, "no backing_off change during the flapping:\n%s", describeStates(flapping))
	for i, attempt := range attempts {
		require.Equal(t, uint32(i+1), attempt,
			"backoff attempt numbers must grow by one per wait while no connection is healthy:\n%s",
			describeStates(flapping))
	}
	assert.Zero(t, countState(flapping, StateCircuitOpen))
	assert.GreaterOrEqual(t, countState(flapping, StateConnected), 5,
		"connections must succeed between cuts, so the test shows that short connections do not reset "+
			"the backoff")
	checkWaits(t, policy, flapping)

	// The delays reach the cap. With full jitter, each delay drawn at the
	// cap is below half of it with probability one half, so the largest of
	// n such draws stays below half of it with probability 2^-n. The jitter
	// is seeded, so every run draws the same delays.
	capAttempt := firstCapAttempt(policy)
	require.Greater(t, len(attempts), capAttempt+10, "too few attempts at the cap")
	var largest time.Duration
	for _, s := range flapping {
		if s.change.GetState() == StateBackingOff && int(s.change.GetAttempt()) >= capAttempt {
			largest = max(largest, reportedDelay(s))
		}
	}
	assert.Greater(t, largest, policy.Cap/2, "no delay came near backoff_cap %s", policy.Cap)

	// No tight loop. Once the ceiling is at the cap, the mean delay is
	// Cap/2, so flapFor allows about 2*flapFor/Cap dials after the ramp up.
	// The bound grants half as many again. A connector without backoff
	// would dial at least once per cut, which is flapFor/flapEvery times.
	maxDials := uint64(capAttempt) + uint64(3*flapFor/policy.Cap)
	require.Less(t, maxDials, uint64(flapFor/flapEvery), "the bound must separate backoff from a tight loop")
	assert.LessOrEqual(t, dialsDuringFlap, maxDials, "dials through the proxy during the flapping")
	assert.LessOrEqual(t, uint64(countState(flapping, StateConnecting)+countState(flapping, StateResuming)),
		maxDials, "dial state changes during the flapping")

	// Once the flapping stops, a connection stays up for healthyAfter.
	// The connector resets the backoff when that connection ends, so the
	// next wait is attempt 1 again, within the base delay.
	stable := recorder.waitUntil(t, policy.Cap+healthyAfter+waitFor, "a connection that stays up for healthy_after",
		func(states []recordedState) bool {
			last := states[len(states)-1]
			return last.at.After(flapEnd) && last.change.GetState() == StateConnected &&
				time.Since(last.at) > healthyAfter+100*time.Millisecond
		})
	require.True(t, h.connector.Stats().Connected)
	proxy.Cut()
	after := recorder.waitUntil(t, waitFor, "the wait after the healthy connection ended",
		func(states []recordedState) bool {
			return countState(states[len(stable):], StateBackingOff) > 0
		})
	resetAt := len(stable) + nthIndex(after[len(stable):], StateBackingOff, 1)
	reset := after[resetAt]
	assert.Equal(t, uint32(1), reset.change.GetAttempt(), "the backoff must start again after a healthy connection")
	assert.LessOrEqual(t, reportedDelay(reset), policy.Base+time.Millisecond)
	recorder.waitUntil(t, waitFor, "the reconnection after the reset", func(states []recordedState) bool {
		return countState(states[resetAt:], StateConnected) > 0
	})
}

func TestCloseAfterUpgradeBacksOffToCap(t *testing.T) {
	const attempts = 14
	policy := BackoffPolicy{Base: 10 * time.Millisecond, Multiplier: 2, Cap: 160 * time.Millisecond}
	// A high failure_threshold keeps the breaker closed, because the next
	// test covers it.
	config := fmt.Sprintf(`{"heartbeat_interval": "50ms", "heartbeat_timeout": "400ms",
		"backoff_base": %q, "backoff_multiplier": %g, "backoff_cap": %q, "failure_threshold": 1000}`,
		policy.Base, policy.Multiplier, policy.Cap)

	coord := startRealCoordinator(t, hclog.Info, nil)
	proxy := startProxy(t, coord.addr())
	proxy.CloseAfterUpgrade(true)
	h := startConnector(t, "ws://"+proxy.Addr(), config)
	recorder := recordStates(t, h, nil)

	// Each upgrade succeeds and the connection closes before the welcome.
	states := recorder.waitUntil(t, waitFor, fmt.Sprintf("%d failed attempts", attempts),
		func(states []recordedState) bool {
			return countState(states, StateBackingOff) >= attempts
		})
	accepted := proxy.Accepted()
	assert.Zero(t, countState(states, StateConnected))
	assert.Zero(t, countState(states, StateCircuitOpen))

	// The attempts run 1, 2, 3, ..., each dial followed by one wait.
	var waits []recordedState
	for i, s := range states {
		if s.change.GetState() != StateBackingOff {
			continue
		}
		waits = append(waits, s)
		require.Equal(t, uint32(len(waits)), s.change.GetAttempt(), "states:\n%s", describeStates(states))
		require.True(t, i > 0 && isDial(states[i-1]), "a wait must follow a dial:\n%s", describeStates(states))
		assert.Equal(t, s.change.GetAttempt(), states[i-1].change.GetAttempt())
		assert.NotEmpty(t, s.change.GetReason())
	}
	checkWaits(t, policy, states)
	dials := countState(states, StateConnecting) + countState(states, StateResuming)
	// The proxy may already have accepted the dial that follows the last
	// recorded wait.
	assert.GreaterOrEqual(t, accepted, uint64(dials), "one TCP connection per dial")
	assert.LessOrEqual(t, accepted, uint64(dials)+1, "one TCP connection per dial")

	// The gaps grow up to the cap. Each delay stays within its attempt's
	// ceiling (checkWaits), which doubles until the cap, and some delay
	// drawn at the cap exceeds the second ceiling, Cap/8. The n draws at
	// the cap all stay below Cap/8 with probability 8^-n.
	capAttempt := firstCapAttempt(policy)
	require.Less(t, capAttempt+5, attempts, "too few attempts at the cap")
	var largestAtCap time.Duration
	for _, s := range waits[capAttempt-1:] {
		largestAtCap = max(largestAtCap, reportedDelay(s))
	}
	assert.Greater(t, largestAtCap, policy.Ceiling(2), "delays did not grow towards backoff_cap %s", policy.Cap)

	proxy.CloseAfterUpgrade(false)
	recorder.waitUntil(t, policy.Cap+waitFor, "a connection once upgrades are kept",
		func(states []recordedState) bool {
			return countState(states, StateConnected) > 0
		})
}

func TestCloseAfterUpgradeOpensBreaker(t *testing.T) {
	const (
		failureThreshold = 5
		cooldown         = 600 * time.Millisecond
	)
	policy := BackoffPolicy{Base: 10 * time.Millisecond, Multiplier: 2, Cap: 40 * time.Millisecond}
	config := fmt.Sprintf(`{"heartbeat_interval": "50ms", "heartbeat_timeout": "400ms",
		"backoff_base": %q, "backoff_multiplier": %g, "backoff_cap": %q,
		"failure_threshold": %d, "circuit_cooldown": %q}`,
		policy.Base, policy.Multiplier, policy.Cap, failureThreshold, cooldown)

	coord := startRealCoordinator(t, hclog.Info, nil)
	proxy := startProxy(t, coord.addr())
	proxy.CloseAfterUpgrade(true)
	h := startConnector(t, "ws://"+proxy.Addr(), config)
	recorder := recordStates(t, h, nil)

	// After failureThreshold failures in a row the breaker opens, in place
	// of a backoff wait.
	opened := recorder.waitUntil(t, waitFor, "the circuit breaker to open", func(states []recordedState) bool {
		return countState(states, StateCircuitOpen) > 0
	})
	acceptedAtOpen := proxy.Accepted()
	first := nthIndex(opened, StateCircuitOpen, 1)
	open := opened[first]
	assert.Contains(t, open.change.GetReason(), fmt.Sprintf("%d failed attempts in a row", failureThreshold))
	assert.Equal(t, uint32(failureThreshold), open.change.GetAttempt())
	assert.Equal(t, failureThreshold-1, countState(opened, StateBackingOff))
	assert.Equal(t, uint64(failureThreshold), acceptedAtOpen, "one TCP connection per attempt")
	checkWaits(t, policy, opened)

	// The cooldown, up to a fifth longer at random, replaces the backoff
	// delay.
	assert.Greater(t, reportedDelay(open), policy.Cap, "the cooldown must be longer than any backoff delay")
	assert.LessOrEqual(t, reportedDelay(open), cooldown+cooldown/5+time.Millisecond)

	// No dial happens before the cooldown ends. Then one trial dials, fails
	// and opens the breaker again for a whole cooldown.
	reopened := recorder.waitUntil(t, 2*cooldown+waitFor, "the failed half-open trial",
		func(states []recordedState) bool {
			return countState(states, StateCircuitOpen) > 1
		})
	second := nthIndex(reopened, StateCircuitOpen, 2)
	again := reopened[second]
	trials := reopened[first+1 : second]
	require.Len(t, trials, 1, "one dial between two circuit_open changes; states:\n%s", describeStates(reopened))
	require.True(t, isDial(trials[0]))
	assert.Equal(t, reasonHalfOpenTrial, trials[0].change.GetReason())
	for _, dial := range opened {
		if isDial(dial) {
			assert.NotEqual(t, reasonHalfOpenTrial, dial.change.GetReason(), "dial before the breaker opened")
		}
	}
	assert.GreaterOrEqual(t, trials[0].at.UnixMilli(), open.change.GetNextRetryUnixMs(),
		"the trial dialed before the cooldown ended")
	assert.Equal(t, acceptedAtOpen+1, proxy.Accepted(), "the half-open breaker allows one trial dial")
	// The change arrives within milliseconds of the failed trial, so it
	// announces nearly the whole cooldown. The bound of half a cooldown
	// leaves room for a slow scheduler under the race detector.
	assert.Greater(t, reportedDelay(again), cooldown/2,
		"a failed trial must open the breaker for a new cooldown; states:\n%s", describeStates(reopened))

	// Once the coordinator is reachable, a trial connects and closes the
	// breaker, so the next lost connection waits a backoff delay.
	proxy.CloseAfterUpgrade(false)
	connected := recorder.waitUntil(t, 2*cooldown+waitFor, "a connection after the coordinator recovered",
		func(states []recordedState) bool {
			return countState(states, StateConnected) > 0
		})
	proxy.Cut()
	recorder.waitUntil(t, waitFor, "the wait after the cut", func(states []recordedState) bool {
		return countState(states[len(connected):], StateBackingOff) > 0
	})
	assert.Zero(t, countState(recorder.snapshot()[len(connected):], StateCircuitOpen),
		"a welcomed connection must close the breaker")
}
