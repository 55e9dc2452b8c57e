package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/dtf-io/dtf/coordinator/api"
)

// Bounds of the watch poll interval: faster polling only loads the
// coordinator, slower polling makes the view stale.
const (
	minPollInterval = 100 * time.Millisecond
	maxPollInterval = time.Minute
	// maxOutcomeFetches bounds the GetTask calls for the summary of a batch
	// with many unsuccessful tasks.
	maxOutcomeFetches = 50
	barWidth          = 30
)

// watchFlags are the flags that watch and run share.
type watchFlags struct {
	interval *time.Duration
	retryFor *time.Duration
	output   *string
}

func addWatchFlags(fs *flag.FlagSet) *watchFlags {
	return &watchFlags{
		interval: fs.Duration("interval", time.Second, "time between two polls of the coordinator, 100ms to 1m"),
		retryFor: fs.Duration("retry-for", 2*time.Minute, "how long to keep polling while the coordinator "+
			"is unreachable, for example during a restart"),
		output: fs.String("output", "table", "output format: table, or json for one JSON object with "+
			"every task and its result when the batch ends, and no progress output"),
	}
}

func (w *watchFlags) check() error {
	if err := checkOutput(*w.output); err != nil {
		return err
	}
	if *w.interval < minPollInterval || *w.interval > maxPollInterval {
		return fmt.Errorf("invalid -interval %s; use a duration from %s to %s",
			*w.interval, minPollInterval, maxPollInterval)
	}
	if *w.retryFor < 0 {
		return fmt.Errorf("invalid -retry-for %s; use zero or a positive duration", *w.retryFor)
	}
	return nil
}

func (a *App) runWatch(ctx context.Context, args []string) int {
	fs := a.newFlagSet("watch", "-batch ID [-interval D] [-output table|json]")
	addr := a.addrFlag(fs)
	batch := fs.String("batch", "", "batch to watch, as printed by dtf submit (required)")
	flags := addWatchFlags(fs)
	if err := fs.Parse(args); err != nil {
		return helpOrUsageError(err)
	}
	if !a.noArgs(fs) {
		return ExitError
	}
	if *batch == "" {
		return a.errorf("watch needs -batch ID; dtf submit prints the batch id")
	}
	if err := flags.check(); err != nil {
		return a.errorf("%v", err)
	}
	client, err := a.client(*addr)
	if err != nil {
		return a.errorf("%v", err)
	}
	return a.watch(ctx, client, *batch, flags)
}

// watcher follows one batch and renders its progress.
type watcher struct {
	app   *App
	batch string
	// json suppresses the progress output, and finish prints the summary
	// as one JSON object.
	json   bool
	states map[string]string // last seen state by task id
	// lastLine is the last plain progress line, printed again only when it
	// changes.
	lastLine string
	barShown bool
	eta      etaEstimator
}

// etaEstimator estimates the time left from the rate at which tasks became
// terminal since the first poll. A batch whose tasks run in waves gets a
// rough estimate at first, which improves as more tasks end.
type etaEstimator struct {
	start     time.Time
	startDone int
	started   bool
}

// estimate records a poll at now with done of total tasks terminal, and
// returns the time left. It returns false until a task has ended since the
// first poll.
func (e *etaEstimator) estimate(now time.Time, done, total int) (time.Duration, bool) {
	if !e.started {
		e.start, e.startDone, e.started = now, done, true
		return 0, false
	}
	ended := done - e.startDone
	elapsed := now.Sub(e.start)
	if ended <= 0 || elapsed <= 0 {
		return 0, false
	}
	return elapsed * time.Duration(total-done) / time.Duration(ended), true
}

// formatETA shows a time left rounded to a second, or to a minute past an
// hour.
func formatETA(d time.Duration) string {
	switch {
	case d < time.Second:
		return "ETA <1s"
	case d < time.Hour:
		return "ETA " + d.Round(time.Second).String()
	}
	return "ETA " + strings.TrimSuffix(d.Round(time.Minute).String(), "0s")
}

// watch polls the batch until every task is terminal, then prints a summary.
// It returns ExitOK when all tasks succeeded, ExitTasksFailed when any did
// not, and ExitError when it had to stop watching.
func (a *App) watch(ctx context.Context, client *api.Client, batch string, flags *watchFlags) int {
	w := &watcher{app: a, batch: batch, json: *flags.output == "json", states: map[string]string{}}
	var unreachableSince time.Time

	for {
		tasks, err := client.ListTasks(ctx, batch, "")
		switch {
		case ctx.Err() != nil:
			w.clearBar()
			return a.errorf("stopped watching batch %s; its tasks keep running; "+
				"resume with dtf watch -batch %s", batch, batch)
		case err != nil:
			var respErr *api.ResponseError
			if errors.As(err, &respErr) {
				w.clearBar()
				return a.errorf("watch batch %s: %s", batch, requestError(client, err))
			}
			if unreachableSince.IsZero() {
				unreachableSince = a.now()
				w.clearBar()
				fmt.Fprintf(a.Stderr, "dtf: %s; retrying for up to %s\n",
					requestError(client, err), *flags.retryFor)
			}
			if a.now().Sub(unreachableSince) >= *flags.retryFor {
				return a.errorf("gave up watching batch %s: the coordinator stayed unreachable "+
					"for %s", batch, *flags.retryFor)
			}
		case len(tasks) == 0:
			w.clearBar()
			return a.errorf("batch %q has no tasks; check the id with dtf tasks", batch)
		default:
			if !unreachableSince.IsZero() {
				unreachableSince = time.Time{}
				fmt.Fprintln(a.Stderr, "dtf: the coordinator is reachable again")
			}
			if w.update(tasks) {
				return w.finish(ctx, client, tasks)
			}
		}

		if !sleepCtx(ctx, *flags.interval) {
			w.clearBar()
			return a.errorf("stopped watching batch %s; its tasks keep running; "+
				"resume with dtf watch -batch %s", batch, batch)
		}
	}
}

// sleepCtx waits for d and returns false if ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}

// update prints the tasks that reached a terminal state since the last poll
// and the progress, and returns whether every task is terminal.
func (w *watcher) update(tasks []api.Task) bool {
	counts := map[string]int{}
	done := 0
	for _, t := range tasks {
		counts[t.State]++
		if api.Terminal(t.State) {
			done++
			if !api.Terminal(w.states[t.ID]) && !w.json {
				w.clearBar()
				fmt.Fprintf(w.app.Stdout, "%s %s %s\n", t.ID, cell(t.Name), t.State)
			}
		}
		w.states[t.ID] = t.State
	}

	line := fmt.Sprintf("%d/%d done  %s", done, len(tasks), formatCounts(counts))
	switch {
	case w.json:
	case w.app.Terminal:
		bar := progressBar(done, len(tasks)) + " " + line
		if left, ok := w.eta.estimate(w.app.now(), done, len(tasks)); ok && done < len(tasks) {
			bar += "  " + formatETA(left)
		}
		fmt.Fprintf(w.app.Stdout, "\r\033[K%s", bar)
		w.barShown = true
	case line != w.lastLine:
		fmt.Fprintf(w.app.Stdout, "%s %s\n", w.app.now().Format("15:04:05"), line)
	}
	w.lastLine = line
	return done == len(tasks)
}

// clearBar erases the progress bar so that a normal line can be printed.
func (w *watcher) clearBar() {
	if w.barShown {
		fmt.Fprint(w.app.Stdout, "\r\033[K")
		w.barShown = false
	}
}

func formatCounts(counts map[string]int) string {
	parts := make([]string, 0, len(taskStates))
	for _, state := range taskStates {
		parts = append(parts, state+" "+strconv.Itoa(counts[state]))
	}
	return strings.Join(parts, "  ")
}

// progressBar draws done out of total as a bar of barWidth cells.
func progressBar(done, total int) string {
	filled := 0
	if total > 0 {
		filled = done * barWidth / total
	}
	return "[" + strings.Repeat("#", filled) + strings.Repeat(".", barWidth-filled) + "]"
}

// finish prints the summary table and returns the exit code of the batch.
func (w *watcher) finish(ctx context.Context, client *api.Client, tasks []api.Task) int {
	if w.barShown {
		fmt.Fprintln(w.app.Stdout)
		w.barShown = false
	}

	results := make([]string, len(tasks))
	fetched := 0
	counts := map[string]int{}
	for i, t := range tasks {
		counts[t.State]++
		if t.State == api.StateSucceeded {
			results[i] = "ok"
			continue
		}
		if fetched >= maxOutcomeFetches {
			continue
		}
		fetched++
		results[i] = outcomeSummary(ctx, client, t)
	}

	failed := len(tasks) - counts[api.StateSucceeded]
	code := ExitOK
	if failed > 0 {
		code = ExitTasksFailed
	}
	if w.json {
		if err := writeJSON(w.app.Stdout, newWatchSummary(w.batch, tasks, results, counts)); err != nil {
			return w.app.errorf("write output: %v", err)
		}
		return code
	}

	fmt.Fprintln(w.app.Stdout)
	tw := newTable(w.app.Stdout)
	fmt.Fprintln(tw, "ID\tNAME\tTYPE\tSTATE\tATTEMPT\tWORKER\tRESULT")
	for i, t := range tasks {
		row(tw, t.ID, t.Name, t.Type, t.State, strconv.Itoa(t.Attempt), t.WorkerID, results[i])
	}
	if err := tw.Flush(); err != nil {
		return w.app.errorf("write output: %v", err)
	}

	fmt.Fprintf(w.app.Stdout, "\nbatch %s: %d tasks, %s\n", w.batch, len(tasks), formatCounts(counts))
	if failed > 0 {
		fmt.Fprintf(w.app.Stdout, "%d of %d tasks did not succeed; see one with dtf tasks -batch %s "+
			"-output json or the coordinator's GET /v1/tasks/ID\n", failed, len(tasks), w.batch)
	}
	return code
}

// watchSummary is the output of watch and run with -output json.
type watchSummary struct {
	Batch string `json:"batch"`
	// Counts has the number of tasks in each state, every state included.
	Counts map[string]int `json:"counts"`
	Tasks  []watchTask    `json:"tasks"`
}

// watchTask is a task of watchSummary with the one-line result that the
// table shows: "ok", the outcome's message, or empty past
// maxOutcomeFetches unsuccessful tasks.
type watchTask struct {
	api.Task
	Result string `json:"result"`
}

func newWatchSummary(batch string, tasks []api.Task, results []string, counts map[string]int) watchSummary {
	summary := watchSummary{Batch: batch, Counts: map[string]int{}, Tasks: make([]watchTask, len(tasks))}
	for _, state := range taskStates {
		summary.Counts[state] = counts[state]
	}
	for i, t := range tasks {
		summary.Tasks[i] = watchTask{Task: t, Result: results[i]}
	}
	return summary
}

// outcomeSummary returns the one-line message of a task's outcome, or why
// there is none.
func outcomeSummary(ctx context.Context, client *api.Client, t api.Task) string {
	full, err := client.GetTask(ctx, t.ID)
	if err != nil {
		return "outcome not available: " + err.Error()
	}
	if full.Outcome == nil {
		if n := len(full.Attempts); n > 0 && full.Attempts[n-1].Reason != "" {
			return full.Attempts[n-1].Reason
		}
		return ""
	}
	msg := full.Outcome.Message
	if msg == "" {
		msg = "exit code " + strconv.Itoa(full.Outcome.ExitCode)
	}
	return msg
}
