package cli

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/dtf-io/dtf/coordinator/api"
)

var taskStates = []string{
	api.StateQueued, api.StateRunning, api.StateSucceeded,
	api.StateFailed, api.StateCancelled, api.StateTimedOut,
}

func (a *App) runTasks(ctx context.Context, args []string) int {
	fs := a.newFlagSet("tasks", "[-batch ID] [-state STATE] [-output table|json]")
	addr := a.addrFlag(fs)
	batch := fs.String("batch", "", "list only the tasks of this batch")
	state := fs.String("state", "", "list only tasks in this state: queued, running, succeeded, "+
		"failed, cancelled or timed_out")
	output := outputFlag(fs)
	if err := fs.Parse(args); err != nil {
		return helpOrUsageError(err)
	}
	if !a.noArgs(fs) {
		return ExitError
	}
	if err := checkOutput(*output); err != nil {
		return a.errorf("%v", err)
	}
	if *state != "" && !slices.Contains(taskStates, *state) {
		return a.errorf("invalid -state %q; use one of %v", *state, taskStates)
	}

	client, err := a.client(*addr)
	if err != nil {
		return a.errorf("%v", err)
	}
	tasks, err := client.ListTasks(ctx, *batch, *state)
	if err != nil {
		return a.errorf("list tasks: %s", requestError(client, err))
	}

	if *output == "json" {
		if tasks == nil {
			tasks = []api.Task{}
		}
		err = writeJSON(a.Stdout, map[string]any{"tasks": tasks})
	} else {
		err = writeTaskTable(a.Stdout, tasks)
	}
	if err != nil {
		return a.errorf("write output: %v", err)
	}
	return ExitOK
}

func (a *App) runWorkers(ctx context.Context, args []string) int {
	if len(args) > 0 && args[0] == "forget" {
		return a.runWorkersForget(ctx, args[1:])
	}
	fs := a.newFlagSet("workers", "[-output table|json]\n       dtf workers forget ID...")
	addr := a.addrFlag(fs)
	output := outputFlag(fs)
	if err := fs.Parse(args); err != nil {
		return helpOrUsageError(err)
	}
	if !a.noArgs(fs) {
		return ExitError
	}
	if err := checkOutput(*output); err != nil {
		return a.errorf("%v", err)
	}

	client, err := a.client(*addr)
	if err != nil {
		return a.errorf("%v", err)
	}
	workers, err := client.ListWorkers(ctx)
	if err != nil {
		return a.errorf("list workers: %s", requestError(client, err))
	}

	slices.SortFunc(workers, func(a, b api.Worker) int { return naturalCompare(a.ID, b.ID) })
	if *output == "json" {
		if workers == nil {
			workers = []api.Worker{}
		}
		err = writeJSON(a.Stdout, map[string]any{"workers": workers})
	} else {
		err = writeWorkerTable(a.Stdout, workers, a.now())
	}
	if err != nil {
		return a.errorf("write output: %v", err)
	}
	return ExitOK
}

// runWorkersForget removes each worker in turn from the coordinator's list;
// one failure does not stop the others.
func (a *App) runWorkersForget(ctx context.Context, args []string) int {
	fs := a.newFlagSet("workers forget", "ID...")
	addr := a.addrFlag(fs)
	if err := fs.Parse(args); err != nil {
		return helpOrUsageError(err)
	}
	if fs.NArg() == 0 {
		return a.errorf("workers forget needs at least one worker id; list them with dtf workers")
	}
	client, err := a.client(*addr)
	if err != nil {
		return a.errorf("%v", err)
	}

	code := ExitOK
	for _, id := range fs.Args() {
		if err := client.ForgetWorker(ctx, id); err != nil {
			code = a.errorf("forget worker %s: %s", id, requestError(client, err))
			continue
		}
		fmt.Fprintf(a.Stdout, "forgot worker %s\n", id)
	}
	return code
}

// runCancel cancels each task in turn and reports each result; one failure
// does not stop the others.
func (a *App) runCancel(ctx context.Context, args []string) int {
	fs := a.newFlagSet("cancel", "[-output table|json] ID...")
	addr := a.addrFlag(fs)
	output := outputFlag(fs)
	if err := fs.Parse(args); err != nil {
		return helpOrUsageError(err)
	}
	if fs.NArg() == 0 {
		return a.errorf("cancel needs at least one task id; list them with dtf tasks")
	}
	if err := checkOutput(*output); err != nil {
		return a.errorf("%v", err)
	}

	client, err := a.client(*addr)
	if err != nil {
		return a.errorf("%v", err)
	}
	code := ExitOK
	cancelled := []api.Task{}
	for _, id := range fs.Args() {
		task, err := client.Cancel(ctx, id)
		switch {
		case errors.Is(err, api.ErrConflict):
			code = a.errorf("cancel %s: the task already ended: %s", id, requestError(client, err))
		case errors.Is(err, api.ErrNotFound):
			code = a.errorf("cancel %s: no such task: %s", id, requestError(client, err))
		case err != nil:
			code = a.errorf("cancel %s: %s", id, requestError(client, err))
		case *output == "json":
			cancelled = append(cancelled, *task)
		default:
			fmt.Fprintf(a.Stdout, "%s %s\n", task.ID, task.State)
		}
	}
	if *output == "json" {
		// The tasks that could not be cancelled are reported on stderr.
		if err := writeJSON(a.Stdout, map[string]any{"tasks": cancelled}); err != nil {
			return a.errorf("write output: %v", err)
		}
	}
	return code
}

// formatPlugins shows a worker's plugin processes in the workers table as
// "NAME VERSION/apiN", comma-separated, for example
// "reconnection 1.2.0/api1, hello 0.1.0/api1". The API version is left out
// when the worker did not report it.
func formatPlugins(plugins []api.WorkerPlugin) string {
	parts := make([]string, 0, len(plugins))
	for _, p := range plugins {
		part := p.Name + " " + p.Version
		if p.APIVersion > 0 {
			part += "/api" + strconv.Itoa(p.APIVersion)
		}
		parts = append(parts, part)
	}
	return strings.Join(parts, ", ")
}
