// Package conformance checks rules that span the coordinator, the worker
// host and the reconnection plugin together.
package conformance

import (
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/dtf-io/dtf/coordinator"
	"github.com/dtf-io/dtf/host"
	"github.com/dtf-io/dtf/plugins/reconnection/connector"
	"github.com/dtf-io/dtf/protocol"
)

// Every frame type has a handler on each side that receives it: the
// coordinator for frames to it, and for frames to the worker the plugin
// (session frames) or the host (task frames).
func TestEveryFrameTypeHandled(t *testing.T) {
	coordinatorTypes := coordinator.HandledFrameTypes()
	hostTypes := host.HandledFrameTypes()
	pluginTypes := connector.HandledTypes()

	for _, name := range protocol.Types() {
		t.Run(name, func(t *testing.T) {
			direction, ok := protocol.Directions[name]
			if !assert.True(t, ok, "no direction declared") {
				return
			}
			if direction == protocol.ToCoordinator || direction == protocol.Both {
				assert.Contains(t, coordinatorTypes, name, "coordinator has no handler")
			}
			if direction == protocol.ToWorker || direction == protocol.Both {
				if protocol.SessionTypes[name] {
					assert.True(t, pluginTypes[name], "reconnection plugin has no handler")
				} else {
					assert.True(t, slices.Contains(hostTypes, name), "worker host has no handler")
				}
			}
		})
	}
}
