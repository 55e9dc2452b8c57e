package connector

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/coordinator/api"
	"github.com/dtf-io/dtf/coordinator/config"
	"github.com/dtf-io/dtf/plugin/pb"
	"github.com/dtf-io/dtf/protocol"
	wirepb "github.com/dtf-io/dtf/protocol/pb"
	"github.com/dtf-io/dtf/test/faultproxy"
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
// is recorded, as the worker host would react to it.
func recordStates(t *testing.T, h *harness, onChange func(*pb.StateChange)) *stateRecorder {
	t.Helper()
	r := &stateRecorder{}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case change := <-h.stream.states:
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

// stressHost plays the worker host in the stress test. It runs each
// assigned task by sending task_started, progress frames and an outcome
// through the connector, syncs its state after every new session, and
// records every frame the connector forwards.
type stressHost struct {
	t         *testing.T
	connector *Connector
	frames    <-chan []byte
	// progressPerTask is the number of progress frames each task sends.
	progressPerTask int

	mu          sync.Mutex
	seqs        []uint64
	assigned    []*wirepb.TaskRef
	acks        []*wirepb.OutcomeAck
	syncResults int
	unexpected  []string
	running     map[string]*wirepb.TaskRef
	// tasks counts the goroutines that run assigned tasks.
	tasks sync.WaitGroup
}

// send encodes frame and passes it to the connector's Send. It runs on
// goroutines other than the test's, so it reports failures with assert.
func (host *stressHost) send(frame *wirepb.Frame) {
	data, err := protocol.Encode(frame)
	if !assert.NoError(host.t, err) {
		return
	}
	_, err = host.connector.Send(context.Background(), &pb.SendRequest{Frame: data})
	assert.NoError(host.t, err, "send %s", protocol.TypeOf(frame))
}

// onState sends the state sync that a new session needs before the
// coordinator assigns anything. A resumed session needs none.
func (host *stressHost) onState(change *pb.StateChange) {
	if change.GetState() != StateConnected || change.GetResumed() {
		return
	}
	host.mu.Lock()
	report := &wirepb.StateSync{}
	for _, ref := range host.running {
		report.Running = append(report.Running, ref)
	}
	host.mu.Unlock()
	host.send(&wirepb.Frame{Body: &wirepb.Frame_StateSync{StateSync: report}})
}

// run handles forwarded frames until stop is closed.
func (host *stressHost) run(stop <-chan struct{}) {
	for {
		select {
		case data := <-host.frames:
			host.handle(data)
		case <-stop:
			return
		}
	}
}

func (host *stressHost) handle(data []byte) {
	frame, err := protocol.Decode(data, protocol.DefaultMaxFrameBytes)
	if !assert.NoError(host.t, err, "forwarded frame") {
		return
	}
	host.mu.Lock()
	defer host.mu.Unlock()
	host.seqs = append(host.seqs, frame.GetSeq())
	switch body := frame.GetBody().(type) {
	case *wirepb.Frame_Assign:
		ref := body.Assign.GetRef()
		host.assigned = append(host.assigned, ref)
		host.running[ref.GetTaskId()] = ref
		host.tasks.Add(1)
		go func() {
			defer host.tasks.Done()
			host.runTask(ref)
		}()
	case *wirepb.Frame_OutcomeAck:
		host.acks = append(host.acks, body.OutcomeAck)
		delete(host.running, body.OutcomeAck.GetRef().GetTaskId())
	case *wirepb.Frame_StateSyncResult:
		host.syncResults++
	default:
		host.unexpected = append(host.unexpected, protocol.TypeOf(frame))
	}
}

func (host *stressHost) runTask(ref *wirepb.TaskRef) {
	host.send(&wirepb.Frame{Body: &wirepb.Frame_TaskStarted{TaskStarted: &wirepb.TaskStarted{Ref: ref}}})
	for step := range host.progressPerTask {
		host.send(&wirepb.Frame{Body: &wirepb.Frame_TaskProgress{TaskProgress: &wirepb.TaskProgress{
			Ref:     ref,
			Message: fmt.Sprintf("step %d", step),
		}}})
	}
	host.send(&wirepb.Frame{Body: &wirepb.Frame_TaskOutcome{TaskOutcome: &wirepb.TaskOutcome{
		Ref:    ref,
		Status: wirepb.Status_STATUS_SUCCEEDED,
		Output: []byte("ok\n"),
	}}})
}

func (host *stressHost) counts() (acks, syncResults int) {
	host.mu.Lock()
	defer host.mu.Unlock()
	return len(host.acks), host.syncResults
}

// injectFaults cuts or resets every proxied connection at random intervals
// of 20 to 120 ms, at most maxFaults times and for at most within, until
// stop is closed. It returns the number of faults injected on done.
func injectFaults(proxy *faultproxy.Proxy, maxFaults int, within time.Duration, stop <-chan struct{}) <-chan int {
	done := make(chan int, 1)
	go func() {
		rng := rand.New(rand.NewPCG(3, 4))
		deadline := time.NewTimer(within)
		defer deadline.Stop()
		injected := 0
		defer func() { done <- injected }()
		for injected < maxFaults {
			pause := time.NewTimer(20*time.Millisecond + time.Duration(rng.Int64N(int64(100*time.Millisecond))))
			select {
			case <-pause.C:
			case <-deadline.C:
				pause.Stop()
				return
			case <-stop:
				pause.Stop()
				return
			}
			if rng.IntN(2) == 0 {
				proxy.Cut()
			} else {
				proxy.Reset()
			}
			injected++
		}
	}()
	return done
}

func TestStressReconnectsExactlyOnce(t *testing.T) {
	const (
		senders         = 4
		perSender       = 150
		sendEvery       = 10 * time.Millisecond
		tasks           = 40
		progressPerTask = 3
		faultsFor       = 3 * time.Second
		maxFaults       = 60
	)
	// The coordinator logs each frame it handles at trace level. That log is
	// the only record of progress frames, which it neither stores nor counts.
	coord := startRealCoordinator(t, hclog.Trace, func(cfg *config.Config) {
		cfg.Workers.HeartbeatInterval = 100 * time.Millisecond
	})
	proxy := startProxy(t, coord.addr())
	// A small send queue makes Send block while the link is down. A high
	// failure_threshold keeps the breaker from pausing the test for a
	// cooldown when handshakes are cut in flight.
	config := `{"heartbeat_interval": "50ms", "heartbeat_timeout": "1s", "backoff_base": "5ms",
		"backoff_cap": "40ms", "send_queue_frames": 32, "failure_threshold": 1000}`
	h := startConnector(t, "ws://"+proxy.Addr(), config)
	host := &stressHost{
		t:               t,
		connector:       h.connector,
		frames:          h.stream.frames,
		progressPerTask: progressPerTask,
		running:         make(map[string]*wirepb.TaskRef),
	}
	recorder := recordStates(t, h, host.onState)
	stopHost := make(chan struct{})
	hostDone := make(chan struct{})
	go func() {
		defer close(hostDone)
		host.run(stopHost)
	}()
	t.Cleanup(func() {
		close(stopHost)
		<-hostDone
	})

	// The first session syncs before anything else is sent.
	require.Eventually(t, func() bool {
		_, syncs := host.counts()
		return syncs == 1
	}, waitFor, 5*time.Millisecond, "no state_sync_result")

	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	specs := make([]api.TaskSpec, tasks)
	for i := range specs {
		specs[i] = api.TaskSpec{Type: "command", Payload: json.RawMessage(`{"argv":["true"]}`)}
	}
	submitted, err := coord.client.Submit(ctx, api.SubmitRequest{Tasks: specs})
	require.NoError(t, err)

	// Faults, senders and the tasks of the coordinator run together.
	stopFaults := make(chan struct{})
	faultsDone := injectFaults(proxy, maxFaults, faultsFor, stopFaults)
	var wg sync.WaitGroup
	for i := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ticker := time.NewTicker(sendEvery)
			defer ticker.Stop()
			for n := range perSender {
				<-ticker.C
				host.send(&wirepb.Frame{Body: &wirepb.Frame_TaskProgress{TaskProgress: &wirepb.TaskProgress{
					Ref:     &wirepb.TaskRef{TaskId: fmt.Sprintf("sender-%d", i)},
					Message: fmt.Sprintf("step %d", n),
				}}})
			}
		}()
	}
	wg.Wait()
	require.Eventually(t, func() bool {
		acks, _ := host.counts()
		return acks >= tasks
	}, faultsFor+2*waitFor, 10*time.Millisecond, "not every task's outcome was acknowledged")
	close(stopFaults)
	faults := <-faultsDone
	host.tasks.Wait()

	// Every task frame the worker sent reaches the coordinator.
	want := 1 + senders*perSender + tasks*(2+progressPerTask)
	var received []logEntry
	require.Eventually(t, func() bool {
		received = taskFramesReceived(t, coord)
		return len(received) >= want
	}, waitFor, 10*time.Millisecond, "the coordinator received fewer task frames than the worker sent")

	states := recorder.snapshot()
	stats := h.connector.Stats()
	t.Logf("%d faults, %d connections, %d resumes; worker: %d frames replayed, %d duplicates dropped; "+
		"coordinator: %d duplicates dropped", faults, stats.Connections, stats.Resumes, stats.ReplayedFrames,
		stats.DuplicateFrames, coord.server.Stats().DuplicateFrames)
	require.GreaterOrEqual(t, countState(states, StateConnected), 3, "the faults must force reconnects")

	// Every reconnect resumed the first session, so nothing was dropped
	// and nothing had to be synced again.
	for i, s := range states {
		if s.change.GetState() == StateConnected && countState(states[:i], StateConnected) > 0 {
			require.True(t, s.change.GetResumed(), "reconnect did not resume:\n%s", describeStates(states))
		}
	}

	// Worker to coordinator: each task frame was handled once, in sequence
	// order, and each sender's frames in the order it sent them.
	require.Equal(t, want, len(received), "task frames the coordinator handled; more means one was handled twice")
	for i, entry := range received {
		require.Equal(t, int64(i+1), entry.number("seq"), "frame %d handled out of order", i)
	}
	checkProgressOrder(t, coord, senders, perSender, submitted.Tasks, progressPerTask)

	// Coordinator to worker: the connector forwarded each sequenced frame
	// once and in order, and the tasks in the order they were submitted.
	host.mu.Lock()
	defer host.mu.Unlock()
	assert.Empty(t, host.unexpected, "unexpected frames forwarded")
	assert.Equal(t, 1, host.syncResults, "one state_sync_result, for the only new session")
	require.Equal(t, 1+2*tasks, len(host.seqs), "state_sync_result, one assign and one outcome_ack per task")
	for i, seq := range host.seqs {
		require.Equal(t, uint64(i+1), seq, "forwarded frame %d out of sequence", i)
	}
	require.Len(t, host.assigned, tasks)
	for i, ref := range host.assigned {
		assert.Equal(t, submitted.Tasks[i].ID, ref.GetTaskId(), "assign %d", i)
		assert.Equal(t, uint32(1), ref.GetAttempt(), "assign %d", i)
	}
	acked := make(map[string]int)
	for _, ack := range host.acks {
		acked[ack.GetRef().GetTaskId()]++
		assert.True(t, ack.GetApplied(), "outcome of %s not applied: %s", ack.GetRef().GetTaskId(), ack.GetReason())
	}
	for _, task := range submitted.Tasks {
		assert.Equal(t, 1, acked[task.ID], "outcome_ack count of %s", task.ID)
	}

	// The store has one applied outcome per task.
	final, err := coord.client.ListTasks(ctx, submitted.Batch, "")
	require.NoError(t, err)
	require.Len(t, final, tasks)
	for _, task := range final {
		assert.Equal(t, api.StateSucceeded, task.State, "task %s", task.ID)
		assert.Equal(t, 1, task.Attempt, "task %s", task.ID)
	}
}

// taskFramesReceived returns the coordinator's trace entries for the
// sequenced frames it handled, in the order it handled them. The
// coordinator logs a frame only after dropping duplicates.
func taskFramesReceived(t *testing.T, coord *realCoordinator) []logEntry {
	t.Helper()
	entries, invalid := coord.log.withMessage("frame received")
	require.Zero(t, invalid, "coordinator log lines that are not JSON")
	var sequenced []logEntry
	for _, entry := range entries {
		if entry.text("type") != "heartbeat" {
			sequenced = append(sequenced, entry)
		}
	}
	return sequenced
}

// checkProgressOrder checks that the coordinator handled each sender's and
// each task's progress frames exactly once and in the order they were sent.
func checkProgressOrder(
	t *testing.T,
	coord *realCoordinator,
	senders, perSender int,
	tasks []api.Task,
	perTask int,
) {
	t.Helper()
	entries, _ := coord.log.withMessage("task progress")
	byTask := make(map[string][]string)
	for _, entry := range entries {
		id := entry.text("task_id")
		byTask[id] = append(byTask[id], entry.text("message"))
	}
	expect := func(id string, n int) {
		want := make([]string, n)
		for i := range want {
			want[i] = fmt.Sprintf("step %d", i)
		}
		assert.Equal(t, want, byTask[id], "progress frames of %s as the coordinator handled them", id)
	}
	for i := range senders {
		expect(fmt.Sprintf("sender-%d", i), perSender)
	}
	for _, task := range tasks {
		expect(task.ID, perTask)
	}
}
