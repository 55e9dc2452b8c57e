package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/dtf-io/dtf/coordinator/api"
)

// submitFlags are the flags that submit and run share.
type submitFlags struct {
	addr        *string
	file        *string
	batch       *string
	taskType    *string
	name        *string
	timeout     *string
	maxAttempts *int
	payload     *string
	dir         *string
	labels      labelFlag
}

// labelFlag collects repeated -label name=value flags.
type labelFlag map[string]string

func (l labelFlag) String() string { return formatLabels(l) }

func (l labelFlag) Set(text string) error {
	name, value, ok := strings.Cut(text, "=")
	if !ok || name == "" {
		return fmt.Errorf("label %q is not name=value, such as gpu=true", text)
	}
	if _, dup := l[name]; dup {
		return fmt.Errorf("label %q is given twice; give each label once", name)
	}
	l[name] = value
	return nil
}

const submitUsage = "[-batch ID] -f FILE\n" +
	"       dtf %[1]s [-batch ID] -type TYPE [-name NAME] [-timeout D] [-label NAME=VALUE]... [-payload JSON] " +
	"[-dir DIR] [-- ARGS...]\n\n" +
	"A task file is HCL with task \"NAME\" { type = ... payload = { ... } timeout = \"5m\" max_attempts = 3\n" +
	"labels = { gpu = \"true\" } }\n" +
	"blocks, or a JSON submit request. With -type command, ARGS are the argv of the command;\n" +
	"with -type gotest, ARGS are the packages to test."

func (a *App) addSubmitFlags(fs *flag.FlagSet) *submitFlags {
	labels := labelFlag{}
	fs.Var(labels, "label", "worker label NAME=VALUE the task given by flags requires; repeat for several")
	return &submitFlags{
		labels:      labels,
		addr:        a.addrFlag(fs),
		file:        fs.String("f", "", "task file in HCL or JSON; - reads standard input"),
		batch:       fs.String("batch", "", "batch id that groups the tasks (default: chosen by the coordinator)"),
		taskType:    fs.String("type", "", "task type of a single task given by flags, such as command or gotest"),
		name:        fs.String("name", "", "name of the task given by flags"),
		timeout:     fs.String("timeout", "", "time limit of the task given by flags, such as 90s or 5m"),
		maxAttempts: fs.Int("max-attempts", 0, "most attempts of the task given by flags (default: coordinator's)"),
		payload:     fs.String("payload", "", "payload of the task given by flags, as a JSON object"),
		dir:         fs.String("dir", "", "sets payload.dir, made absolute against the current directory"),
	}
}

// request builds the submission from a task file or from the flags and the
// positional arguments.
func (f *submitFlags) request(a *App, args []string) (api.SubmitRequest, error) {
	if *f.file != "" {
		if *f.taskType != "" || *f.payload != "" || *f.dir != "" || len(f.labels) > 0 || len(args) > 0 {
			return api.SubmitRequest{}, fmt.Errorf("-f cannot be combined with -type, -payload, " +
				"-dir, -label or arguments; put the tasks in the file")
		}
		req, err := ReadTaskFile(*f.file, a.Stdin)
		if err != nil {
			return req, err
		}
		if *f.batch != "" {
			req.Batch = *f.batch
		}
		return req, nil
	}

	if *f.taskType == "" {
		return api.SubmitRequest{}, fmt.Errorf("give a task file with -f FILE or a task with -type TYPE")
	}
	payload, err := f.buildPayload(args)
	if err != nil {
		return api.SubmitRequest{}, err
	}
	spec := api.TaskSpec{
		Name:        *f.name,
		Type:        *f.taskType,
		Payload:     payload,
		Timeout:     *f.timeout,
		MaxAttempts: *f.maxAttempts,
	}
	if len(f.labels) > 0 {
		spec.Labels = f.labels
	}
	if err := checkSpec(spec); err != nil {
		return api.SubmitRequest{}, fmt.Errorf("invalid task: %w", err)
	}
	return api.SubmitRequest{Batch: *f.batch, Tasks: []api.TaskSpec{spec}}, nil
}

// buildPayload merges -payload, -dir and the arguments into one JSON object.
func (f *submitFlags) buildPayload(args []string) (json.RawMessage, error) {
	payload := map[string]any{}
	if *f.payload != "" {
		if err := json.Unmarshal([]byte(*f.payload), &payload); err != nil {
			return nil, fmt.Errorf("invalid -payload: %w; give a JSON object such as "+
				`'{"argv": ["make", "test"]}'`, err)
		}
	}
	if *f.dir != "" {
		dir, err := filepath.Abs(*f.dir)
		if err != nil {
			return nil, fmt.Errorf("resolve -dir %q: %w", *f.dir, err)
		}
		payload["dir"] = dir
	}

	if len(args) > 0 {
		switch *f.taskType {
		case "command":
			payload["argv"] = args
		case "gotest":
			payload["packages"] = args
		default:
			return nil, fmt.Errorf("arguments %q are only taken by -type command (argv) and "+
				"-type gotest (packages); for type %q put them in -payload", args, *f.taskType)
		}
	}
	if *f.taskType == "command" {
		if _, ok := payload["argv"]; !ok {
			return nil, fmt.Errorf("a command task needs its argv: dtf submit -type command -- make test")
		}
	}
	return json.Marshal(payload)
}

// submit sends the request and prints the batch and its tasks as a table,
// as JSON, or not at all with output "none".
func (a *App) submit(ctx context.Context, client *api.Client, req api.SubmitRequest, output string) (
	*api.SubmitResponse,
	bool,
) {
	resp, err := client.Submit(ctx, req)
	if err != nil {
		a.errorf("submit: %s", requestError(client, err))
		return nil, false
	}
	if output == "none" {
		return resp, true
	}
	if output == "json" {
		if err := writeJSON(a.Stdout, resp); err != nil {
			a.errorf("write output: %v", err)
			return nil, false
		}
		return resp, true
	}

	fmt.Fprintf(a.Stdout, "submitted %d tasks in batch %s\n", len(resp.Tasks), resp.Batch)
	tw := newTable(a.Stdout)
	fmt.Fprintln(tw, "ID\tNAME\tTYPE\tSTATE")
	for _, t := range resp.Tasks {
		row(tw, t.ID, t.Name, t.Type, t.State)
	}
	if err := tw.Flush(); err != nil {
		a.errorf("write output: %v", err)
		return nil, false
	}
	return resp, true
}

func (a *App) runSubmit(ctx context.Context, args []string) int {
	fs := a.newFlagSet("submit", fmt.Sprintf(submitUsage, "submit"))
	flags := a.addSubmitFlags(fs)
	output := outputFlag(fs)
	if err := fs.Parse(args); err != nil {
		return helpOrUsageError(err)
	}
	if err := checkOutput(*output); err != nil {
		return a.errorf("%v", err)
	}
	req, err := flags.request(a, fs.Args())
	if err != nil {
		return a.errorf("%v", err)
	}
	client, err := a.client(*flags.addr)
	if err != nil {
		return a.errorf("%v", err)
	}
	if _, ok := a.submit(ctx, client, req, *output); !ok {
		return ExitError
	}
	return ExitOK
}

func (a *App) runRun(ctx context.Context, args []string) int {
	fs := a.newFlagSet("run", fmt.Sprintf(submitUsage, "run"))
	flags := a.addSubmitFlags(fs)
	watch := addWatchFlags(fs)
	if err := fs.Parse(args); err != nil {
		return helpOrUsageError(err)
	}
	if err := watch.check(); err != nil {
		return a.errorf("%v", err)
	}
	req, err := flags.request(a, fs.Args())
	if err != nil {
		return a.errorf("%v", err)
	}
	client, err := a.client(*flags.addr)
	if err != nil {
		return a.errorf("%v", err)
	}
	// With -output json, run prints only the summary at the end, so that
	// its output is one JSON object.
	submitOutput := "table"
	if *watch.output == "json" {
		submitOutput = "none"
	}
	resp, ok := a.submit(ctx, client, req, submitOutput)
	if !ok {
		return ExitError
	}
	return a.watch(ctx, client, resp.Batch, watch)
}
