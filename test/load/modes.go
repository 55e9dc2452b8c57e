package main

import (
	"context"
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
// come back, and measures how the workers return.
func runStorm(ctx context.Context, o *options, r *report) error {
	f, stop, err := connectAll(ctx, o, r)
	defer stop()
	if err != nil {
		return err
	}
	r.add("backoff", fmt.Sprintf("base %s, multiplier 2, cap %s, full jitter", o.workerSettings.backoffBase,
		o.workerSettings.backoffCap))
	_, disconnects, _ := f.snapshot()
	mark := len(disconnects)

	restartDone := make(chan error, 1)
	if o.restartCmd != "" {
		go func() { restartDone <- runRestart(ctx, o.restartCmd, r) }()
	} else {
		fmt.Fprintf(os.Stderr, "dtf-load: %d workers connected; restart the coordinator within %s\n",
			o.workers, o.duration)
	}

	// The storm starts at the first disconnect after the fleet was up.
	err = waitUntil(ctx, f, o.duration, "the coordinator to drop the workers", func() bool {
		_, d, _ := f.snapshot()
		return len(d) > mark
	})
	if err != nil {
		return err
	}
	_, disconnects, _ = f.snapshot()
	stormStart := disconnects[mark]

	err = waitUntil(ctx, f, o.duration, "all workers back", func() bool {
		return len(returned(f, stormStart)) == o.workers && f.synced.Load() == int64(o.workers)
	})
	if o.restartCmd != "" {
		select {
		case restartErr := <-restartDone:
			if restartErr != nil {
				return restartErr
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	reportStorm(f, stormStart, r)
	return err
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

func reportStorm(f *fleet, start time.Time, r *report) {
	back := returned(f, start)
	var last time.Duration
	resumed := 0
	for _, w := range back {
		last = max(last, w.at.Sub(start))
		if w.resumed {
			resumed++
		}
	}
	r.add("returned", fmt.Sprintf("%d of %d", len(back), f.size))
	r.add("all_back_after", fmt.Sprintf("%s after the first disconnect", last.Round(time.Millisecond)))
	r.add("resumed", fmt.Sprintf("%d resumed, %d new sessions", resumed, len(back)-resumed))
	r.add("rejects", f.rejects.Load())

	attempts, _, _ := f.snapshot()
	buckets := map[int]int{}
	total := 0
	for _, at := range attempts {
		if at.Before(start) {
			continue
		}
		buckets[int(at.Sub(start)/stormWindow)]++
		total++
	}
	keys := make([]int, 0, len(buckets))
	maxCount := 0
	for k, n := range buckets {
		keys = append(keys, k)
		maxCount = max(maxCount, n)
	}
	sort.Ints(keys)
	r.add("reconnect_attempts", total)
	if total > 0 {
		r.add("max_window_share", fmt.Sprintf("%.1f %% (%d of %d attempts in one %s window)",
			100*float64(maxCount)/float64(total), maxCount, total, stormWindow))
	}
	var hist strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&hist, " %d:%d", k*int(stormWindow/time.Millisecond), buckets[k])
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
