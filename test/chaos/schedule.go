package chaos

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// Kind is a kind of fault.
type Kind string

// The fault kinds of a schedule.
const (
	// Cut closes both sides of every connection of one worker and refuses
	// new ones for the fault's duration.
	Cut Kind = "cut"
	// Blackhole keeps one worker's connections open and forwards nothing.
	Blackhole Kind = "blackhole"
	// Latency delays everything one worker sends and receives.
	Latency Kind = "latency"
	// CoordinatorKill sends SIGKILL to the coordinator and starts it again
	// after the fault's duration.
	CoordinatorKill Kind = "coordinator-kill"
	// HostKill sends SIGKILL to one worker host and starts it again after
	// the fault's duration.
	HostKill Kind = "host-kill"
	// PluginKill sends SIGKILL to one plugin process of one worker.
	PluginKill Kind = "plugin-kill"
)

// Kinds lists every fault kind; each schedule has each at least once when
// it is long enough.
var Kinds = []Kind{Cut, Blackhole, Latency, CoordinatorKill, HostKill, PluginKill}

// Plugins are the plugin binaries that a PluginKill fault may hit.
var Plugins = []string{"dtf-reconnection", "dtf-exec-command", "dtf-exec-checkpoint"}

// Fault is one fault of a schedule.
type Fault struct {
	// At is when the fault starts, from the start of the schedule.
	At   time.Duration
	Kind Kind
	// Worker is the index of the worker it hits; CoordinatorKill ignores it.
	Worker int
	// For is how long the fault lasts before it is healed, or how long a
	// killed process stays down.
	For time.Duration
	// Plugin names the binary that a PluginKill fault kills.
	Plugin string
}

func (f Fault) String() string {
	s := fmt.Sprintf("%6.2fs %s", f.At.Seconds(), f.Kind)
	if f.Kind != CoordinatorKill {
		s += fmt.Sprintf(" worker %d", f.Worker)
	}
	if f.Plugin != "" {
		s += " " + f.Plugin
	}
	if f.For > 0 {
		s += fmt.Sprintf(" for %s", f.For)
	}
	return s
}

// Bounds of a schedule. The first fault waits for the cluster to settle.
// Each later fault starts a gap after the previous one ended, so faults
// never overlap and a run's log is easy to follow.
const (
	firstFaultAt = 3 * time.Second
	minGap       = time.Second
	maxGap       = 4 * time.Second
)

// NewSchedule returns the faults of a run of the given length with the
// given number of workers. The same seed gives the same schedule. The
// first faults take every kind once, in an order the seed picks, and the
// rest are drawn at random.
func NewSchedule(seed int64, length time.Duration, workers int) []Fault {
	if workers < 1 {
		workers = 1
	}
	rng := rand.New(rand.NewPCG(uint64(seed), 0x64746663))
	kinds := append([]Kind(nil), Kinds...)
	rng.Shuffle(len(kinds), func(i, j int) { kinds[i], kinds[j] = kinds[j], kinds[i] })

	var faults []Fault
	at := firstFaultAt
	for i := 0; at < length; i++ {
		kind := Kinds[rng.IntN(len(Kinds))]
		if i < len(kinds) {
			kind = kinds[i]
		}
		f := Fault{At: at, Kind: kind, Worker: rng.IntN(workers)}
		switch kind {
		case Cut:
			f.For = between(rng, 0, 3*time.Second)
		case Blackhole:
			// Up to a little over twice a 2 s heartbeat timeout, so some
			// blackholes end before either side notices and some after.
			f.For = between(rng, 500*time.Millisecond, 5*time.Second)
		case Latency:
			f.For = between(rng, time.Second, 5*time.Second)
		case CoordinatorKill, HostKill:
			f.For = between(rng, 200*time.Millisecond, 3*time.Second)
		case PluginKill:
			f.Plugin = Plugins[rng.IntN(len(Plugins))]
		}
		faults = append(faults, f)
		at += f.For + between(rng, minGap, maxGap)
	}
	return faults
}

// between returns a duration in [low, high), in whole milliseconds.
func between(rng *rand.Rand, low, high time.Duration) time.Duration {
	span := (high - low).Milliseconds()
	if span <= 0 {
		return low
	}
	return low + time.Duration(rng.Int64N(span))*time.Millisecond
}

// MissedKinds returns the fault kinds of the schedule of which no fault
// hit its target, in the order of Kinds. hit[i] is true when faults[i] hit
// its target.
func MissedKinds(faults []Fault, hit []bool) []Kind {
	scheduled := map[Kind]bool{}
	struck := map[Kind]bool{}
	for i, f := range faults {
		scheduled[f.Kind] = true
		if i < len(hit) && hit[i] {
			struck[f.Kind] = true
		}
	}
	var missed []Kind
	for _, kind := range Kinds {
		if scheduled[kind] && !struck[kind] {
			missed = append(missed, kind)
		}
	}
	return missed
}
