package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"time"
)

// stormWindow is the width of one bucket of the reconnection histogram.
const stormWindow = 100 * time.Millisecond

// startFleet starts o.workers simulated workers at o.connectRate per second
// and returns the fleet and a function that stops the workers and waits
// for them.
func startFleet(ctx context.Context, o *options) (*fleet, func()) {
	f := newFleet(o.workers)
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	interval := time.Second / time.Duration(o.connectRate)
	wg.Add(1)
	go func() {
		defer wg.Done()
		ticker := time.NewTicker(max(interval, time.Microsecond))
		defer ticker.Stop()
		for i := 0; i < o.workers; i++ {
			w := newSimWorker(i, &o.workerSettings, f)
			wg.Add(1)
			go func() {
				defer wg.Done()
				w.run(ctx)
			}()
			select {
			case <-ctx.Done():
				return
			case <-ticker.C:
			}
		}
	}()
	return f, func() {
		cancel()
		wg.Wait()
	}
}

// waitUntil waits until check returns true, ctx ends or limit passes.
func waitUntil(ctx context.Context, f *fleet, limit time.Duration, what string, check func() bool) error {
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	for {
		changed := f.watch()
		if check() {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-deadline.C:
			return fmt.Errorf("waiting for %s: not reached within %s", what, limit)
		}
	}
}

// connectAll starts the fleet and waits until every worker finished its
// state sync, bounded by ctx.
func connectAll(ctx context.Context, o *options, r *report) (*fleet, func(), error) {
	started := time.Now()
	f, stop := startFleet(ctx, o)
	err := waitUntil(ctx, f, o.timeout, "all workers synced", func() bool {
		return f.synced.Load() == int64(o.workers)
	})
	r.add("workers", o.workers)
	r.add("connected_synced", fmt.Sprintf("%d of %d in %s (connect rate %d/s)",
		f.synced.Load(), o.workers, time.Since(started).Round(time.Millisecond), o.connectRate))
	return f, stop, err
}

// runIdle connects the fleet, holds it for o.duration and reports the
// coordinator's resident memory per idle worker.
func runIdle(ctx context.Context, o *options, r *report) error {
	var before int64
	if o.coordinatorPID > 0 {
		var err error
		if before, err = vmRSS(o.coordinatorPID); err != nil {
			return fmt.Errorf("read VmRSS of coordinator pid %d: %w", o.coordinatorPID, err)
		}
	}
	f, stop, err := connectAll(ctx, o, r)
	defer stop()
	if err != nil {
		return err
	}

	// Hold, so heartbeats run and the coordinator's memory settles.
	sentBefore, receivedBefore := f.framesSent.Load(), f.framesReceived.Load()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(o.duration):
	}
	r.add("held_for", o.duration)
	r.add("still_connected", f.connected.Load())
	r.add("frames_per_s_idle", fmt.Sprintf("%.0f sent, %.0f received",
		float64(f.framesSent.Load()-sentBefore)/o.duration.Seconds(),
		float64(f.framesReceived.Load()-receivedBefore)/o.duration.Seconds()))
	if o.coordinatorPID == 0 {
		r.add("coordinator_rss", "not measured; pass -coordinator-pid")
		return nil
	}
	after, err := vmRSS(o.coordinatorPID)
	if err != nil {
		return fmt.Errorf("read VmRSS of coordinator pid %d: %w", o.coordinatorPID, err)
	}
	r.add("coordinator_rss", fmt.Sprintf("%d KiB before, %d KiB after", before, after))
	r.add("rss_per_idle_worker", fmt.Sprintf("%.1f KiB", float64(after-before)/float64(o.workers)))
	return nil
}

// runStorm connects the fleet, waits for the coordinator to go away and
// come back, and measures how the workers return. With -restart-cmd the
// command restarts the coordinator, and without it the user does.
func runStorm(ctx context.Context, o *options, r *report) error {
	restart := func(context.Context) error {
		fmt.Fprintf(os.Stderr, "dtf-load: %d workers connected; restart the coordinator within %s\n",
			o.workers, o.duration)
		return nil
	}
	if o.restartCmd != "" {
		restart = func(ctx context.Context) error { return runRestart(ctx, o.restartCmd, r) }
	}
	_, err := measureStorm(ctx, o, r, restart)
	return err
}

// stormResult is what the fleet observed from the first disconnect of a
// storm until every worker was back.
type stormResult struct {
	// start is the first disconnect after the whole fleet was synced.
	start time.Time
	// returned and resumed count the workers with a welcome after start,
	// and those whose first such welcome resumed their session.
	returned int
	resumed  int
	// lastBack is the time from start to the last of those welcomes.
	lastBack time.Duration
	// attempts counts the dials from start on, and buckets counts them per
	// stormWindow, keyed by the window's index from start.
	attempts int
	buckets  map[int]int
}

// maxWindow returns the largest count of dials in one window.
func (s stormResult) maxWindow() int {
	largest := 0
	for _, n := range s.buckets {
		largest = max(largest, n)
	}
	return largest
}

// maxWindowShare returns the share of the dials, from 0 to 1, that fell
// into the busiest window, or 0 when there were none.
func (s stormResult) maxWindowShare() float64 {
	if s.attempts == 0 {
		return 0
	}
	return float64(s.maxWindow()) / float64(s.attempts)
}

// measureStorm connects the fleet, calls restart in its own goroutine and
// waits until every worker has a new welcome and is synced again. Each wait
// is bounded by o.duration. restart is expected to make the coordinator drop
// every worker and to return once it serves again. measureStorm adds the
// measured values to r and returns them, also when the wait for the
// workers' return timed out.
func measureStorm(ctx context.Context, o *options, r *report,
	restart func(context.Context) error) (stormResult, error) {
	f, stop, err := connectAll(ctx, o, r)
	defer stop()
	if err != nil {
		return stormResult{}, err
	}
	r.add("backoff", fmt.Sprintf("base %s, multiplier 2, cap %s, full jitter", o.workerSettings.backoffBase,
		o.workerSettings.backoffCap))
	_, disconnects, _ := f.snapshot()
	mark := len(disconnects)

	// A failed restart ends the waits below at once instead of after
	// o.duration.
	waitCtx, cancelWait := context.WithCancelCause(ctx)
	defer cancelWait(nil)
	restartDone := make(chan error, 1)
	go func() {
		err := restart(ctx)
		if err != nil {
			cancelWait(err)
		}
		restartDone <- err
	}()
	restartResult := func() error {
		select {
		case err := <-restartDone:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}

	// The storm starts at the first disconnect after the fleet was up.
	err = waitUntil(waitCtx, f, o.duration, "the coordinator to drop the workers", func() bool {
		_, d, _ := f.snapshot()
		return len(d) > mark
	})
	if err != nil {
		return stormResult{}, errors.Join(restartResult(), err)
	}
	_, disconnects, _ = f.snapshot()
	stormStart := disconnects[mark]

	err = waitUntil(waitCtx, f, o.duration, "all workers back", func() bool {
		return len(returned(f, stormStart)) == o.workers && f.synced.Load() == int64(o.workers)
	})
	if restartErr := restartResult(); restartErr != nil {
		return stormResult{}, restartErr
	}
	result := collectStorm(f, stormStart)
	reportStorm(result, f, r)
	return result, err
}

// returned maps each worker with a welcome after start to its first one.
func returned(f *fleet, start time.Time) map[int]welcomeEvent {
	_, _, welcomes := f.snapshot()
	first := map[int]welcomeEvent{}
	for _, w := range welcomes {
		if w.at.Before(start) {
			continue
		}
		if _, seen := first[w.worker]; !seen {
			first[w.worker] = w
		}
	}
	return first
}

// collectStorm counts the returns and the dials of the fleet from start.
func collectStorm(f *fleet, start time.Time) stormResult {
	s := stormResult{start: start, buckets: map[int]int{}}
	for _, w := range returned(f, start) {
		s.returned++
		s.lastBack = max(s.lastBack, w.at.Sub(start))
		if w.resumed {
			s.resumed++
		}
	}
	attempts, _, _ := f.snapshot()
	for _, at := range attempts {
		if at.Before(start) {
			continue
		}
		s.buckets[int(at.Sub(start)/stormWindow)]++
		s.attempts++
	}
	return s
}

func reportStorm(s stormResult, f *fleet, r *report) {
	r.add("returned", fmt.Sprintf("%d of %d", s.returned, f.size))
	r.add("all_back_after", fmt.Sprintf("%s after the first disconnect", s.lastBack.Round(time.Millisecond)))
	r.add("resumed", fmt.Sprintf("%d resumed, %d new sessions", s.resumed, s.returned-s.resumed))
	r.add("rejects", f.rejects.Load())
	r.add("reconnect_attempts", s.attempts)
	if s.attempts > 0 {
		r.add("max_window_share", fmt.Sprintf("%.1f %% (%d of %d attempts in one %s window)",
			100*s.maxWindowShare(), s.maxWindow(), s.attempts, stormWindow))
	}
	keys := make([]int, 0, len(s.buckets))
	for k := range s.buckets {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	var hist strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&hist, " %d:%d", k*int(stormWindow/time.Millisecond), s.buckets[k])
	}
	r.add("attempts_per_100ms", "ms:count"+hist.String())
}

// runRestart runs the restart command with its output on stderr.
func runRestart(ctx context.Context, command string, r *report) error {
	started := time.Now()
	cmd := exec.CommandContext(ctx, "sh", "-c", command)
	cmd.Stdout = os.Stderr
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("restart command %q: %w", command, err)
	}
	r.add("restart_cmd_took", time.Since(started).Round(time.Millisecond))
	return nil
}
