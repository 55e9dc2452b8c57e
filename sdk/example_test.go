package sdk_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/dtf-io/dtf/sdk"
)

// upper runs "upper" tasks: it returns the payload's text in upper case.
type upper struct{}

func (upper) Info() sdk.Info {
	return sdk.Info{Name: "dtf-exec-upper", Version: "1.0.0", TaskTypes: []string{"upper"}}
}

func (upper) Configure(json.RawMessage) error { return nil }

func (upper) Execute(_ context.Context, task sdk.Task, r sdk.Reporter) (sdk.Result, error) {
	var p struct{ Text string }
	if err := json.Unmarshal(task.Payload, &p); err != nil {
		return sdk.Result{}, fmt.Errorf(`invalid upper payload %s: %w; use {"text": "..."}`, task.Payload, err)
	}
	r.Progress(1, "done")
	return sdk.Result{Status: sdk.StatusSucceeded, Output: []byte(strings.ToUpper(p.Text))}, nil
}

// A plugin's main function hands its executor to ServeExecutor, which
// serves it to the worker host until the host stops the plugin. Run by
// hand with -version, the binary prints its version line instead.
func Example() {
	logger := sdk.NewLogger("upper")
	sdk.ServeExecutor(upper{}, sdk.WithLogger(logger))
}

// counter counts to 10 and resumes from its newest checkpoint.
type counter struct{ upper }

// Execute saves a checkpoint after each step, so that a retried attempt
// starts after the last step that a checkpoint recorded.
func (counter) Execute(ctx context.Context, task sdk.Task, r sdk.Reporter) (sdk.Result, error) {
	step := 0
	if task.Checkpoint != nil {
		n, err := strconv.Atoi(string(task.Checkpoint.Data))
		if err != nil {
			return sdk.Result{}, fmt.Errorf("invalid checkpoint %q: %w", task.Checkpoint.Data, err)
		}
		step = n
	}
	for step < 10 {
		if err := ctx.Err(); err != nil {
			return sdk.Result{}, err
		}
		step++
		if err := r.Checkpoint([]byte(strconv.Itoa(step)), float64(step)/10, "step "+strconv.Itoa(step)); err != nil {
			return sdk.Result{}, err
		}
	}
	return sdk.Result{Status: sdk.StatusSucceeded}, nil
}

// An executor that checkpoints reads task.Checkpoint to resume and saves
// each step with Reporter.Checkpoint.
func Example_checkpoint() {
	sdk.ServeExecutor(counter{})
}
