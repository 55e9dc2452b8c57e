// Command dtf-exec-hello, from docs/plugins.md, greets payload.name payload.times times.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/dtf-io/dtf/sdk"
)

type hello struct {
	log      hclog.Logger
	greeting string
}

func (h *hello) Info() sdk.Info {
	return sdk.Info{Name: "dtf-exec-hello", Version: "0.1.0", TaskTypes: []string{"hello"}}
}

func (h *hello) Configure(raw json.RawMessage) error {
	cfg := struct{ Greeting string }{Greeting: "Hello"}
	if problems := sdk.DecodeConfig(raw, &cfg); len(problems) > 0 {
		return &sdk.ConfigError{Problems: problems} // each problem is shown at its line
	}
	h.greeting = cfg.Greeting
	return nil
}

func (h *hello) Execute(ctx context.Context, task sdk.Task, r sdk.Reporter) (sdk.Result, error) {
	var p struct {
		Name  string
		Times int
	}
	if err := json.Unmarshal(task.Payload, &p); err != nil || p.Name == "" || p.Times < 1 || p.Times > 100 {
		return sdk.Result{}, fmt.Errorf(`invalid hello payload %s; use {"name": "world", "times": 3}`+
			" with times from 1 to 100", task.Payload)
	}
	h.log.Info("greeting", "task_id", task.ID, "attempt", task.Attempt, "name", p.Name)
	var out []byte
	for i := 1; i <= p.Times; i++ {
		select {
		case <-ctx.Done(): // the task was cancelled or timed out: stop at once
			return sdk.Result{}, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		out = fmt.Appendf(out, "%s, %s!\n", h.greeting, p.Name)
		r.Progress(float64(i)/float64(p.Times), fmt.Sprintf("greeting %d of %d", i, p.Times))
	}
	return sdk.Result{Status: sdk.StatusSucceeded, Message: "greeted " + p.Name, Output: out}, nil
}

func main() {
	log := sdk.NewLogger("hello")
	sdk.ServeExecutor(&hello{log: log}, sdk.WithLogger(log))
}
