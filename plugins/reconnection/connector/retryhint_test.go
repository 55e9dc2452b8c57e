package connector

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	wirepb "github.com/dtf-io/dtf/protocol/pb"
)

// TestShutdownRejectRetryAfter plays a coordinator that stops: it welcomes
// the worker, then ends the session with the Reject that a coordinator
// sends to every attached worker on SIGTERM. The worker must not dial again
// before the Reject's retry_after_ms, although its backoff_cap and
// circuit_cooldown are both shorter.
func TestShutdownRejectRetryAfter(t *testing.T) {
	const retryAfter = 300 * time.Millisecond
	shuttingDown := reject(wirepb.Reject_CODE_SHUTTING_DOWN, "coordinator is shutting down", retryAfter)

	t.Run("breaker closed", func(t *testing.T) {
		fake := startFake(t, nil)
		h := startConnector(t, fake.url(), fastConfig)
		recorder := recordStates(t, h, nil)
		recorder.waitUntil(t, waitFor, "the first session", func(states []recordedState) bool {
			return countState(states, StateConnected) == 1
		})

		sentAt := time.Now()
		require.NoError(t, fake.latest().send(shuttingDown))
		states := recorder.waitUntil(t, retryAfter+waitFor, "the session after the shutdown",
			func(states []recordedState) bool {
				return countState(states, StateConnected) == 2
			})

		wait := states[nthIndex(states, StateBackingOff, 1)]
		assert.Contains(t, wait.change.GetReason(), "CODE_SHUTTING_DOWN")
		assert.GreaterOrEqual(t, wait.change.GetNextRetryUnixMs(), sentAt.Add(retryAfter).UnixMilli(),
			"backing_off announced a retry before retry_after_ms; states:\n%s", describeStates(states))
		hellos := fake.helloTimes()
		require.Len(t, hellos, 2)
		assert.GreaterOrEqual(t, hellos[1].Sub(sentAt), retryAfter, "the next hello came before retry_after_ms")
		assert.GreaterOrEqual(t, hellos[1].UnixMilli(), wait.change.GetNextRetryUnixMs(),
			"the next hello came before the announced retry time")
	})

	t.Run("breaker open", func(t *testing.T) {
		// The coordinator that comes back rejects the first Hello with the
		// same hint. With failure_threshold 1 that failed dial opens the
		// breaker, whose 50ms cooldown must not shorten the hint.
		const cooldown = 50 * time.Millisecond
		fake := startFake(t, func(n int, _ *wirepb.Hello) *wirepb.Frame {
			if n == 2 {
				return shuttingDown
			}
			return nil
		})
		config := fmt.Sprintf(`{"heartbeat_interval": "50ms", "heartbeat_timeout": "400ms",
			"backoff_base": "10ms", "backoff_cap": "80ms", "failure_threshold": 1, "circuit_cooldown": %q}`,
			cooldown)
		h := startConnector(t, fake.url(), config)
		recorder := recordStates(t, h, nil)
		recorder.waitUntil(t, waitFor, "the first session", func(states []recordedState) bool {
			return countState(states, StateConnected) == 1
		})

		sentAt := time.Now()
		require.NoError(t, fake.latest().send(shuttingDown))
		states := recorder.waitUntil(t, 2*retryAfter+waitFor, "the session after the breaker closed",
			func(states []recordedState) bool {
				return countState(states, StateConnected) == 2
			})
		hellos := fake.helloTimes()
		require.Len(t, hellos, 3)

		// The session's end is no failed dial, so it waits a backoff delay
		// stretched to the hint.
		require.Equal(t, 1, countState(states, StateBackingOff), "states:\n%s", describeStates(states))
		wait := states[nthIndex(states, StateBackingOff, 1)]
		assert.GreaterOrEqual(t, wait.change.GetNextRetryUnixMs(), sentAt.Add(retryAfter).UnixMilli())
		assert.GreaterOrEqual(t, hellos[1].Sub(sentAt), retryAfter, "the second hello came before retry_after_ms")

		// The rejected Hello opens the breaker, and the hint outlasts the
		// cooldown.
		require.Equal(t, 1, countState(states, StateCircuitOpen), "states:\n%s", describeStates(states))
		openAt := nthIndex(states, StateCircuitOpen, 1)
		open := states[openAt]
		assert.Contains(t, open.change.GetReason(), "CODE_SHUTTING_DOWN")
		assert.GreaterOrEqual(t, open.change.GetNextRetryUnixMs(), hellos[1].Add(retryAfter).UnixMilli(),
			"circuit_open announced the cooldown instead of retry_after_ms; states:\n%s", describeStates(states))
		assert.GreaterOrEqual(t, hellos[2].Sub(hellos[1]), retryAfter, "the third hello came before retry_after_ms")
		assert.GreaterOrEqual(t, hellos[2].UnixMilli(), open.change.GetNextRetryUnixMs(),
			"the third hello came before the announced retry time")
		require.Greater(t, len(states), openAt+1)
		assert.Equal(t, reasonHalfOpenTrial, states[openAt+1].change.GetReason(),
			"the dial after the cooldown is the breaker's trial")
	})
}
