package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/coordinator/api"
	"github.com/dtf-io/dtf/test/cluster"
)

// requireBrowserEnv makes the dashboard test fail instead of skip when no
// Chromium binary is found, as in CI.
const requireBrowserEnv = "DTF_REQUIRE_BROWSER"

// dashboardWorker is the worker whose row and timeline the test follows.
const dashboardWorker = "worker-ui"

// The dashboard at /ui/, in a real Chromium, shows a worker's row go from
// connected to disconnected while the fault proxy keeps it cut off, and
// back once the link returns. The timeline gains a gap, the charts draw
// the samples and the task view shows a finished task's output. The API
// requires a token, which the page's token form takes.
func TestDashboardFollowsCutAndReturn(t *testing.T) {
	browser := findChromium(t)
	e := newEnvWith(t, func(c *cluster.CoordinatorConfig) {
		c.Extra = "api {\n  auth = \"token\"\n}\n"
	})
	// The page gets a read token, and the test's client a submit token
	// for its task.
	readToken := createToken(t, e.coordConfig, "read")
	e.client.Token = createToken(t, e.coordConfig, "submit")
	e.startWorker(dashboardWorker, 1)
	e.waitConnected(dashboardWorker)

	page := newPage(t, browser)
	require.NoError(t, chromedp.Do(page.ctx, chromedp.Navigate("http://"+e.addr+"/ui/")))

	// The page shows its token form, because the stream got 401.
	page.waitTrue("the token form shows", `!document.getElementById('token-form').hidden`)
	require.NoError(t, chromedp.Do(page.ctx,
		chromedp.SendKeys(chromedp.ID("token-input"), readToken),
		chromedp.Click(chromedp.CSS("#token-form button[type=submit]")),
	))
	page.waitTrue("the stream is live", `document.getElementById('stream-status').dataset.status === 'live'`)
	page.waitRowState(api.WorkerConnected)
	assert.Equal(t, 0, page.gaps(), "timeline gaps before the cut")

	// Cut the worker off and keep it out.
	e.proxy.Refuse(true)
	e.proxy.Cut()
	page.waitRowState(api.WorkerDisconnected)
	page.waitTrue("the timeline shows the gap while the worker is away", gapsAtLeast(1))
	page.waitTrue("the downtime counts while the worker is away", fmt.Sprintf(
		`parseFloat(document.querySelector(%q)?.textContent) >= 1`, rowCell("downtime")))

	// Let it back in.
	e.proxy.Refuse(false)
	e.waitConnected(dashboardWorker)
	page.waitRowState(api.WorkerConnected)
	assert.Equal(t, 1, page.gaps(), "timeline gaps after the worker returned")
	assert.Equal(t, "1", page.text(rowCell("reconnects")), "reconnects cell")
	assert.NotEqual(t, "0.0s", page.text(rowCell("downtime")), "downtime cell")

	// The API agrees with the page.
	timeline, err := e.client.WorkerTimeline(context.Background(), dashboardWorker)
	require.NoError(t, err)
	assert.Equal(t, []string{api.WorkerConnected, api.WorkerDisconnected, api.WorkerConnected},
		eventStates(timeline.Events), "timeline states")
	assert.Equal(t, 1, timeline.Reconnects)
	assert.GreaterOrEqual(t, timeline.DowntimeMs, int64(1000), "downtime of a cut that the page saw last 1 s")

	// A task shows in the task view with its output.
	batch := e.submitCommands([]string{"sh", "-c", "echo dashboard-line-1; echo dashboard-line-2"})
	tasks := e.waitTerminal(batch, time.Minute)
	require.Len(t, tasks, 1)
	taskRow := fmt.Sprintf(`#tasks tr[data-task=%q]`, tasks[0].ID)
	page.waitTrue("the task row shows succeeded", fmt.Sprintf(
		`document.querySelector(%q)?.dataset.state === 'succeeded'`, taskRow))
	require.NoError(t, chromedp.Do(page.ctx, chromedp.Click(chromedp.CSS(taskRow))))
	page.waitTrue("the task output shows", `document.getElementById('task-output').textContent.includes('dashboard-line-2')`)

	// The charts draw once the coordinator has taken two samples.
	page.waitTrue("the round-trip chart draws", `document.querySelector('#chart-rtt path.series') !== null`)
	page.waitTrue("the reconnect chart draws", `document.querySelector('#chart-reconnects path.series') !== null`)

	png, err := chromedp.Run(page.ctx, chromedp.CaptureScreenshot())
	require.NoError(t, err)
	shot := filepath.Join(t.ArtifactDir(), "dashboard.png")
	require.NoError(t, os.WriteFile(shot, png, 0o644))
	t.Logf("screenshot: %s (%d bytes)", shot, len(png))
	assert.Empty(t, page.exceptions(), "script exceptions on the page")
}

// findChromium returns the path of Debian's chromium, or skips the test,
// or fails it when DTF_REQUIRE_BROWSER=1.
func findChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	msg := "no chromium or chromium-browser binary in PATH; install it with apt-get install -y chromium"
	if os.Getenv(requireBrowserEnv) == "1" {
		t.Fatalf("%s (%s=1 requires the browser test)", msg, requireBrowserEnv)
	}
	t.Skip(msg)
	return ""
}

// createToken runs dtf tokens create with role and returns the printed
// token.
func createToken(t *testing.T, coordConfig, role string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin.Path("dtf"), "tokens", "create", "-config", coordConfig,
		"-role", role).CombinedOutput()
	require.NoError(t, err, "%s", out)
	token := regexp.MustCompile(`dtfa_[A-Za-z0-9_-]+`).Find(out)
	require.NotNil(t, token, "no token in %s", out)
	return string(token)
}

// page is one browser tab on the dashboard.
type page struct {
	t   *testing.T
	ctx context.Context

	mu sync.Mutex
	// thrown holds the page's uncaught script exceptions, at most 20.
	thrown []string
}

// newPage starts a headless Chromium with one tab and stops it when the
// test ends.
func newPage(t *testing.T, browser string) *page {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 1100),
		// Chromium's sandbox needs user namespaces, which containers and
		// root users often lack. The page is the test's own dashboard on
		// 127.0.0.1.
		chromedp.NoSandbox,
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
	})
	p := &page{t: t, ctx: ctx}
	// The first Run starts the browser; exceptions are collected from then
	// on.
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate("about:blank")))
	events := chromedp.Events(ctx, runtime.ExceptionThrown)
	go func() {
		for ev, err := range events {
			if err != nil {
				return
			}
			p.mu.Lock()
			if len(p.thrown) < 20 {
				p.thrown = append(p.thrown, (&chromedp.ExceptionError{ExceptionDetails: ev.ExceptionDetails}).Error())
			}
			p.mu.Unlock()
		}
	}()
	return p
}

func (p *page) exceptions() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.thrown...)
}

// waitTrue polls a JavaScript expression until it is true, for up to 30 s.
func (p *page) waitTrue(what, expr string) {
	p.t.Helper()
	var last error
	err := cluster.Poll(context.Background(), 30*time.Second, 100*time.Millisecond, func() (bool, error) {
		ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
		defer cancel()
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
		last = err
		return err == nil && ok, nil
	})
	require.NoError(p.t, err, "waiting until %s (%s); last error: %v; page exceptions: %v; worker row: %s",
		what, expr, last, p.exceptions(), p.text(`#workers tr[data-worker="`+dashboardWorker+`"]`))
}

// waitRowState waits until the worker's row shows state.
func (p *page) waitRowState(state string) {
	p.t.Helper()
	p.waitTrue("the worker row shows "+state, fmt.Sprintf(
		`document.querySelector('#workers tr[data-worker=%q]')?.dataset.state === %q`, dashboardWorker, state))
}

// gaps returns the number of gaps in the worker's timeline row.
func (p *page) gaps() int {
	p.t.Helper()
	text := p.evalString(fmt.Sprintf(
		`document.querySelector('#timeline g[data-worker=%q]')?.dataset.gaps ?? ''`, dashboardWorker))
	n, err := strconv.Atoi(text)
	require.NoError(p.t, err, "timeline row of %s has no gap count", dashboardWorker)
	return n
}

func gapsAtLeast(n int) string {
	return fmt.Sprintf(`Number(document.querySelector('#timeline g[data-worker=%q]')?.dataset.gaps) >= %d`,
		dashboardWorker, n)
}

// text returns the text of the first element that matches the CSS
// selector, or "" when none does.
func (p *page) text(selector string) string {
	return p.evalString(fmt.Sprintf(`document.querySelector(%q)?.textContent ?? ''`, selector))
}

func (p *page) evalString(expr string) string {
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
	if err != nil {
		return "evaluate failed: " + err.Error()
	}
	return strings.TrimSpace(s)
}

// rowCell returns the selector of a cell of the worker's row.
func rowCell(col string) string {
	return fmt.Sprintf(`#workers tr[data-worker=%q] td[data-col=%q]`, dashboardWorker, col)
}

func eventStates(events []api.WorkerEvent) []string {
	states := make([]string, 0, len(events))
	for _, ev := range events {
		states = append(states, ev.State)
	}
	return states
}

// createReadToken returns a new token with the read role.
func createReadToken(t *testing.T, coordConfig string) string {
	t.Helper()
	return createToken(t, coordConfig, "read")
}
