package main

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"time"

	"github.com/chromedp/chromedp"
)

// evaluateTimeout bounds one probe call. A stall longer than this ends the
// run with an error instead of a figure.
const evaluateTimeout = 60 * time.Second

// pageReadyTimeout bounds the wait for the dashboard's event stream.
const pageReadyTimeout = 30 * time.Second

// runDashboard loads the coordinator's dashboard in headless Chromium,
// connects the fleet and, for o.duration from the fleet's start, measures
// how long a trivial Runtime.evaluate takes on the page. The page runs
// scripts on one main thread, so the time of a call that does nothing is
// the time the page was busy redrawing before it could run the call. With
// -workers 0 it connects no workers and only measures, while another
// dtf-load process brings the load.
func runDashboard(ctx context.Context, o *options, r *report) error {
	browser, err := findChromium(o.chromium)
	if err != nil {
		return err
	}
	allocOpts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser),
		// Chromium's sandbox needs user namespaces, which containers and
		// root users often lack. The page is a dtf coordinator that the
		// user started and named with -addr.
		chromedp.NoSandbox,
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx, allocOpts...)
	defer cancelAlloc()
	pageCtx, cancelPage := chromedp.NewContext(allocCtx)
	defer cancelPage()

	url := "http://" + o.addr + "/ui/"
	if err := chromedp.Do(pageCtx, chromedp.Navigate(url)); err != nil {
		return fmt.Errorf("load %s in %s: %w", url, browser, err)
	}
	if err := waitStreamLive(pageCtx, o.dashboardToken); err != nil {
		return fmt.Errorf("dashboard at %s: %w", url, err)
	}
	r.add("browser", browser)
	r.add("probe", fmt.Sprintf("Runtime.evaluate of `1` every %s for %s", o.probeInterval, o.duration))

	var fleetDone <-chan fleetResult
	if o.workers > 0 {
		f, stop := startFleet(ctx, o)
		defer stop()
		fleetDone = watchSynced(ctx, f, o.duration)
	}

	latencies, err := probePage(ctx, pageCtx, o.probeInterval, o.duration)
	r.add("evaluate_calls", len(latencies))
	if len(latencies) > 0 {
		median, p99, maximum := summarize(latencies)
		r.add("evaluate_latency", fmt.Sprintf("median %s, p99 %s, max %s",
			round(median), round(p99), round(maximum)))
	}
	if fleetDone != nil {
		res := <-fleetDone
		r.add("workers", o.workers)
		r.add("connected_synced", res.String(o))
	}
	r.add("worker_rows", countWorkerRows(pageCtx))
	return err
}

// findChromium returns the -chromium path, or the first of chromium and
// chromium-browser on PATH when the flag is empty.
func findChromium(flagValue string) (string, error) {
	if flagValue != "" {
		path, err := exec.LookPath(flagValue)
		if err != nil {
			return "", fmt.Errorf("invalid -chromium %q: %w", flagValue, err)
		}
		return path, nil
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if path, err := exec.LookPath(name); err == nil {
			return path, nil
		}
	}
	return "", errors.New("no chromium or chromium-browser binary in PATH; " +
		"install it with apt-get install -y chromium or pass -chromium")
}

// waitStreamLive waits until the page's event stream is live. When the
// page shows its token form, it submits token, or fails when token is empty.
func waitStreamLive(pageCtx context.Context, token string) error {
	ctx, cancel := context.WithTimeout(pageCtx, pageReadyTimeout)
	defer cancel()
	const stateExpr = `document.getElementById('stream-status')?.dataset.status === 'live' ? 'live' :
		(document.getElementById('token-form')?.hidden === false ? 'token' : 'waiting')`
	tokenSent := false
	for {
		state, err := chromedp.Run(ctx, chromedp.Evaluate[string](stateExpr))
		switch {
		case err != nil:
			return fmt.Errorf("read the event stream status: %w", err)
		case state == "live":
			return nil
		case state == "token" && token == "":
			return errors.New("the dashboard asks for an API token; pass one with the read role as -dashboard-token")
		case state == "token" && !tokenSent:
			err := chromedp.Do(ctx,
				chromedp.SendKeys(chromedp.ID("token-input"), token),
				chromedp.Click(chromedp.CSS("#token-form button[type=submit]")),
			)
			if err != nil {
				return fmt.Errorf("submit the token form: %w", err)
			}
			tokenSent = true
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("timed out after %s waiting for the event stream (last state %s): %w",
				pageReadyTimeout, state, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// probePage calls a trivial evaluate, with a pause of interval after each
// call, until span has passed and returns the time of each call. A call that fails ends the probe with
// the times measured so far.
func probePage(ctx, pageCtx context.Context, interval, span time.Duration) ([]time.Duration, error) {
	var latencies []time.Duration
	deadline := time.Now().Add(span)
	for time.Now().Before(deadline) {
		callCtx, cancel := context.WithTimeout(pageCtx, evaluateTimeout)
		start := time.Now()
		_, err := chromedp.Run(callCtx, chromedp.Evaluate[int](`1`))
		took := time.Since(start)
		cancel()
		if err != nil {
			return latencies, fmt.Errorf("evaluate call %d after %s: %w", len(latencies)+1, round(took), err)
		}
		latencies = append(latencies, took)

		select {
		case <-ctx.Done():
			return latencies, ctx.Err()
		case <-time.After(interval):
		}
	}
	return latencies, nil
}

// summarize returns the median, the 99th percentile and the maximum of
// latencies, which must not be empty. Percentiles use the nearest rank.
func summarize(latencies []time.Duration) (median, p99, maximum time.Duration) {
	sorted := slices.Clone(latencies)
	slices.Sort(sorted)
	return nearestRank(sorted, 50), nearestRank(sorted, 99), sorted[len(sorted)-1]
}

// nearestRank returns the smallest value with at least percent of sorted
// at or below it.
func nearestRank(sorted []time.Duration, percent int) time.Duration {
	rank := (percent*len(sorted) + 99) / 100
	return sorted[max(rank, 1)-1]
}

// fleetResult is the number of workers that finished their state sync and
// the time until all did, or the error that ended the wait.
type fleetResult struct {
	synced int64
	took   time.Duration
	err    error
}

func (res fleetResult) String(o *options) string {
	if res.err != nil {
		return fmt.Sprintf("%d of %d (%v)", res.synced, o.workers, res.err)
	}
	return fmt.Sprintf("%d of %d in %s (connect rate %d/s)", res.synced, o.workers, round(res.took), o.connectRate)
}

// watchSynced waits in the background, up to limit, until every worker of
// f has finished its state sync.
func watchSynced(ctx context.Context, f *fleet, limit time.Duration) <-chan fleetResult {
	done := make(chan fleetResult, 1)
	started := time.Now()
	go func() {
		err := waitUntil(ctx, f, limit, "all workers synced", func() bool {
			return f.synced.Load() == int64(f.size)
		})
		done <- fleetResult{synced: f.synced.Load(), took: time.Since(started), err: err}
	}()
	return done
}

// countWorkerRows returns the number of rows in the page's worker table,
// or an error text when the call returns no result within evaluateTimeout.
func countWorkerRows(pageCtx context.Context) any {
	ctx, cancel := context.WithTimeout(pageCtx, evaluateTimeout)
	defer cancel()
	const expr = `document.querySelectorAll('#workers tr[data-worker]').length`
	n, err := chromedp.Run(ctx, chromedp.Evaluate[int](expr))
	if err != nil {
		return "unknown: " + err.Error()
	}
	return n
}

// round rounds d for display: to the microsecond below 10 ms, else to the
// millisecond.
func round(d time.Duration) time.Duration {
	if d < 10*time.Millisecond {
		return d.Round(time.Microsecond)
	}
	return d.Round(time.Millisecond)
}
