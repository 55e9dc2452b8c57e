package host

import (
	"math/rand/v2"
	"time"
)

// A plugin that ran for restartHealthyAfter before it crashed counts as
// healthy again, so its next restart waits only the base delay.
const restartHealthyAfter = time.Minute

// A plugin restarted restartWarnCount times within restartWarnWindow is
// crash looping: the host logs one more warning that reports it, and then
// again only after the count has dropped below the threshold. The host
// never gives up on a plugin, because the fault may be outside it, such as
// a full disk.
const (
	restartWarnCount  = 5
	restartWarnWindow = 5 * time.Minute
)

// restartBackoff is the restart state of one plugin: the number of crashes
// since it was last healthy, which sets the next delay, and the times of
// recent crashes, which detect a crash loop.
type restartBackoff struct {
	base, limit time.Duration
	failures    int
	recent      []time.Time
	looping     bool
}

func newRestartBackoff(base, limit time.Duration) *restartBackoff {
	return &restartBackoff{base: base, limit: limit}
}

// crashed records a crash at now of a plugin that had run for ran, and
// returns the delay before the next launch and the number of crashes
// within restartWarnWindow. looping is true the first time that number
// reaches restartWarnCount.
func (b *restartBackoff) crashed(now time.Time, ran time.Duration) (delay time.Duration, recent int, looping bool) {
	if ran >= restartHealthyAfter {
		b.failures = 0
	}
	b.failures++

	kept := b.recent[:0]
	for _, at := range b.recent {
		if now.Sub(at) < restartWarnWindow {
			kept = append(kept, at)
		}
	}
	b.recent = append(kept, now)
	if len(b.recent) < restartWarnCount {
		b.looping = false
	} else if !b.looping {
		b.looping = true
		looping = true
	}
	return restartDelay(b.failures, b.base, b.limit), len(b.recent), looping
}

// restartDelay returns a delay with full jitter: random in (0, d], where d
// is base doubled per earlier failure, at most limit.
func restartDelay(failures int, base, limit time.Duration) time.Duration {
	delay := base
	for i := 1; i < failures && delay < limit; i++ {
		delay *= 2
	}
	delay = min(delay, limit)
	return time.Duration(rand.Int64N(int64(delay)) + 1)
}
