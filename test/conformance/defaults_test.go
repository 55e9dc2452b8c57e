package conformance

import (
	"testing"

	"github.com/stretchr/testify/assert"

	coordconfig "github.com/dtf-io/dtf/coordinator/config"
	"github.com/dtf-io/dtf/plugins/reconnection/connector"
)

// With the default settings, a worker whose coordinator comes back dials
// again before the coordinator requeues the worker's running attempts. Its
// longest wait is the backoff cap, or the breaker's cooldown plus up to a
// fifth of jitter. Both stay below reassign_after with room for a dial.
func TestDefaultWorkerWaitBelowReassignAfter(t *testing.T) {
	const dialRoom = 5 // seconds left for the dial and the handshake
	reassign := coordconfig.DefaultReassignAfter.Seconds()
	assert.Less(t, connector.DefaultBackoffCap.Seconds()+dialRoom, reassign, "backoff_cap")
	assert.Less(t, connector.DefaultCircuitCooldown.Seconds()*6/5+dialRoom, reassign, "circuit_cooldown")
}
