package host

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/plugin/pb"
	"github.com/dtf-io/dtf/sdk"
)

// The connector reports no session id while it backs off or its circuit
// breaker is open, so the host names the session that was lost.
func TestOfflineWarningsNameLastSession(t *testing.T) {
	hs := startHost(t, testConfig(t, "echo-runner"),
		map[string]sdk.Executor{"echo-runner": &testExecutor{name: "echo", types: []string{"echo"}}})
	c := nextConnector(t, hs)
	c.state("connected", "")
	for _, state := range []string{"backing_off", "circuit_open"} {
		c.events <- &pb.ConnectorEvent{Event: &pb.ConnectorEvent_State{State: &pb.StateChange{
			State: state, Reason: "dial failed",
		}}}
	}

	var backingOff, circuitOpen string
	require.Eventually(t, func() bool {
		for _, line := range strings.Split(hs.logs.String(), "\n") {
			switch {
			case strings.Contains(line, "disconnected from coordinator, backing off"):
				backingOff = line
			case strings.Contains(line, "circuit breaker open"):
				circuitOpen = line
			}
		}
		return backingOff != "" && circuitOpen != ""
	}, waitFor, 10*time.Millisecond)
	assert.Contains(t, backingOff, "session_id=s-1")
	assert.Contains(t, circuitOpen, "session_id=s-1")
}
