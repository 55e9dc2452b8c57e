package host

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	pb "github.com/dtf-io/dtf/plugin/pb"
	"github.com/dtf-io/dtf/protocol"
	wirepb "github.com/dtf-io/dtf/protocol/pb"
	"github.com/dtf-io/dtf/sdk"
)

// connectedState reports a connected state, resumed or not, as the
// reconnection plugin does after a welcome.
func connectedState(c *fakeConnector, resumed bool) {
	c.events <- &pb.ConnectorEvent{Event: &pb.ConnectorEvent_State{State: &pb.StateChange{
		State: "connected", SessionId: "s-1", Resumed: resumed,
	}}}
}

func TestHostConnectedStateSync(t *testing.T) {
	cases := []struct {
		name    string
		resumed bool
	}{
		{"new session syncs and resends", false},
		{"resumed session skips both", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t, "echo-runner")
			outbox, err := OpenOutbox(filepath.Join(cfg.DataDir, "outbox"))
			require.NoError(t, err)
			require.NoError(t, outbox.Put(&wirepb.TaskOutcome{
				Ref: &wirepb.TaskRef{TaskId: "held", Attempt: 1}, Status: wirepb.Status_STATUS_FAILED,
			}))
			hs := startHost(t, cfg, map[string]sdk.Executor{
				"echo-runner": &testExecutor{name: "e", types: []string{"echo"}},
			})
			c := nextConnector(t, hs)

			connectedState(c, tc.resumed)
			if !tc.resumed {
				sync := expectFrame(t, c, "state_sync").GetStateSync()
				require.Len(t, sync.GetHeldOutcomes(), 1)
				c.frame(t, syncResultFrame())
				resent := expectFrame(t, c, "task_outcome").GetTaskOutcome()
				assert.Equal(t, "held", resent.GetRef().GetTaskId())
				return
			}

			// A resumed session continues with the next assignment. Every
			// frame the host sends until that task's outcome is checked.
			c.frame(t, assignFrame("t1", 1, "echo"))
			deadline := time.After(waitFor)
			for done := false; !done; {
				select {
				case frame := <-c.sent:
					typ := protocol.TypeOf(frame)
					require.NotEqual(t, "state_sync", typ, "a resumed session needs no state sync")
					if typ == "task_outcome" {
						ref := frame.GetTaskOutcome().GetRef()
						require.Equal(t, "t1", ref.GetTaskId(), "the connector replays held outcomes, not the host")
						done = true
					}
				case <-deadline:
					t.Fatal("host sent no outcome for t1")
				}
			}
		})
	}
}
