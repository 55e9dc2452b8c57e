package coordinator

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/coordinator/api"
)

// browserPath returns the path of Chromium, or skips the test unless
// DTF_REQUIRE_BROWSER=1 requires it.
func browserPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	msg := "no chromium or chromium-browser binary in PATH; install it with apt-get install -y chromium"
	if os.Getenv("DTF_REQUIRE_BROWSER") == "1" {
		t.Fatal(msg + " (DTF_REQUIRE_BROWSER=1 requires the browser tests)")
	}
	t.Skip(msg)
	return ""
}

// queued returns the number of events waiting in the buffers of the open
// streams.
func (h *streamHub) queued() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for c := range h.clients {
		n += len(c.events)
	}
	return n
}

// evalUntil evaluates expr on the page until it returns true, within
// waitFor.
func evalUntil(t *testing.T, ctx context.Context, what, expr string) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still false after %s (last error: %v)", what, waitFor, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A burst of worker events, as when hundreds of workers connect or resume
// at once, is drawn in a few renders instead of one render per event,
// which kept the page busy for seconds.
func TestDashboardCoalescesEventBurst(t *testing.T) {
	browser := browserPath(t)
	ts := startServer(t, testConfig(t, ""))

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser),
		chromedp.UserDataDir(t.TempDir()),
		// Chromium's sandbox needs user namespaces, which containers and
		// root users often lack. The page is the test's own dashboard.
		chromedp.NoSandbox,
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
	})
	_, err := chromedp.Run(ctx, chromedp.Navigate(ts.url+"/ui/"))
	require.NoError(t, err)
	evalUntil(t, ctx, "stream live", `document.getElementById('stream-status').dataset.status === 'live'`)

	record := func(state string) {
		ts.fleet.record("w-burst", api.WorkerEvent{Time: time.Now(), State: state, SessionID: "s-1"},
			state == api.WorkerConnected)
	}
	record(api.WorkerConnected)
	evalUntil(t, ctx, "timeline row drawn", `!!document.querySelector('#timeline g[data-worker="w-burst"]')`)

	// The observer counts each replacement of the timeline's drawing.
	_, err = chromedp.Run(ctx, chromedp.Evaluate[bool](`(() => {
		window.timelineRenders = 0;
		new MutationObserver((records) => { window.timelineRenders += records.length; })
			.observe(document.getElementById('timeline'), { childList: true });
		return true;
	})()`))
	require.NoError(t, err)

	// The events go out in batches smaller than a stream's buffer, so
	// that the hub does not drop the page's stream for falling behind.
	const burst = 300
	for i := range burst {
		if i%2 == 0 {
			record(api.WorkerDisconnected)
		} else {
			record(api.WorkerConnected)
		}
		if i%(streamBuffer/2) == 0 {
			require.Eventually(t, func() bool { return ts.streams.queued() == 0 }, waitFor, time.Millisecond,
				"the page's stream did not take its events")
		}
	}
	record(api.WorkerDrained)
	evalUntil(t, ctx, "last event drawn",
		`!!document.querySelector('#timeline g[data-worker="w-burst"] rect[data-state="drained"]')`)

	renders, err := chromedp.Run(ctx, chromedp.Evaluate[int](`window.timelineRenders`))
	require.NoError(t, err)
	assert.Less(t, renders, burst/10, fmt.Sprintf("%d events caused %d renders of the timeline", burst+1, renders))
}
