package connector

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/plugin/pb"
)

func TestStateTransitions(t *testing.T) {
	states := []string{"", StateConnecting, StateResuming, StateConnected, StateBackingOff,
		StateCircuitOpen, StateDraining, StateClosed}
	allowed := map[[2]string]bool{
		{"", StateConnecting}:               true,
		{"", StateResuming}:                 true,
		{"", StateClosed}:                   true,
		{StateConnecting, StateConnected}:   true,
		{StateConnecting, StateBackingOff}:  true,
		{StateConnecting, StateCircuitOpen}: true,
		{StateConnecting, StateDraining}:    true,
		{StateConnecting, StateClosed}:      true,
		{StateResuming, StateConnected}:     true,
		{StateResuming, StateBackingOff}:    true,
		{StateResuming, StateCircuitOpen}:   true,
		{StateResuming, StateDraining}:      true,
		{StateResuming, StateClosed}:        true,
		{StateConnected, StateBackingOff}:   true,
		{StateConnected, StateCircuitOpen}:  true,
		{StateConnected, StateDraining}:     true,
		{StateConnected, StateClosed}:       true,
		{StateBackingOff, StateConnecting}:  true,
		{StateBackingOff, StateResuming}:    true,
		{StateBackingOff, StateCircuitOpen}: true,
		{StateBackingOff, StateDraining}:    true,
		{StateBackingOff, StateClosed}:      true,
		{StateCircuitOpen, StateConnecting}: true,
		{StateCircuitOpen, StateResuming}:   true,
		{StateCircuitOpen, StateDraining}:   true,
		{StateCircuitOpen, StateClosed}:     true,
		{StateDraining, StateClosed}:        true,
	}
	for _, from := range states {
		for _, to := range states {
			if to == "" {
				continue
			}
			t.Run(from+"->"+to, func(t *testing.T) {
				assert.Equal(t, allowed[[2]string{from, to}], canTransition(from, to))
			})
		}
	}
}

func TestStateMachineEmitsAndRejects(t *testing.T) {
	var emitted []string
	m := newStateMachine(func(change *pb.StateChange) { emitted = append(emitted, change.GetState()) })
	require.NoError(t, m.Transition(&pb.StateChange{State: StateConnecting}))
	require.NoError(t, m.Transition(&pb.StateChange{State: StateConnected}))
	assert.Error(t, m.Transition(&pb.StateChange{State: StateResuming}), "connected cannot dial again")
	assert.Equal(t, StateConnected, m.Current())
	require.NoError(t, m.Transition(&pb.StateChange{State: StateDraining}))
	require.NoError(t, m.Transition(&pb.StateChange{State: StateClosed}))
	assert.Error(t, m.Transition(&pb.StateChange{State: StateConnecting}), "closed is final")
	assert.Equal(t, []string{StateConnecting, StateConnected, StateDraining, StateClosed}, emitted)
}
