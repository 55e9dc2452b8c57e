package chaos

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestScheduleRepeatsForSeed(t *testing.T) {
	first := NewSchedule(7, time.Minute, 3)
	second := NewSchedule(7, time.Minute, 3)
	other := NewSchedule(8, time.Minute, 3)

	require.Equal(t, first, second, "the same seed must give the same schedule")
	assert.NotEqual(t, first, other, "another seed should give another schedule")
}

func TestScheduleCoversEveryKind(t *testing.T) {
	for seed := range int64(20) {
		faults := NewSchedule(seed, 50*time.Second, 3)
		seen := map[Kind]bool{}
		for _, f := range faults {
			seen[f.Kind] = true
		}
		for _, kind := range Kinds {
			assert.True(t, seen[kind], "seed %d: no %s fault in %v", seed, kind, faults)
		}
	}
}

func TestScheduleFaultsDoNotOverlap(t *testing.T) {
	faults := NewSchedule(3, 2*time.Minute, 4)
	require.NotEmpty(t, faults)

	for i, f := range faults {
		assert.Less(t, f.At, 2*time.Minute, "fault %d starts after the end", i)
		assert.GreaterOrEqual(t, f.Worker, 0)
		assert.Less(t, f.Worker, 4)
		if f.Kind == PluginKill {
			assert.Contains(t, Plugins, f.Plugin)
		}
		if i > 0 {
			previous := faults[i-1]
			assert.GreaterOrEqual(t, f.At, previous.At+previous.For+minGap,
				"fault %d (%s) starts before fault %d (%s) healed", i, f, i-1, previous)
		}
	}
}

func TestMissedKinds(t *testing.T) {
	faults := []Fault{
		{Kind: HostKill, Worker: 0},
		{Kind: Cut, Worker: 1},
		{Kind: HostKill, Worker: 2},
		{Kind: PluginKill, Plugin: "dtf-exec-command"},
	}

	assert.Empty(t, MissedKinds(faults, []bool{true, true, true, true}))
	assert.Empty(t, MissedKinds(faults, []bool{false, true, true, true}),
		"one host kill that hit is enough for its kind")
	assert.Equal(t, []Kind{HostKill, PluginKill}, MissedKinds(faults, []bool{false, true, false, false}))
	assert.Equal(t, []Kind{Cut, HostKill, PluginKill}, MissedKinds(faults, nil),
		"a fault without a result did not hit")
}
