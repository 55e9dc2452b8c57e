package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/dtf-io/dtf/coordinator/api"
)

// noopPayload is the payload of every submitted task. The simulated
// workers never run it; a real command executor would run true(1).
var noopPayload = json.RawMessage(`{"argv":["true"]}`)

// runThroughput submits o.tasks no-op tasks in batches of o.batch and
// measures how fast the fleet completes them, from the first submit to the
// last acknowledged outcome.
func runThroughput(ctx context.Context, o *options, r *report) error {
	f, stop, err := connectAll(ctx, o, r)
	defer stop()
	if err != nil {
		return err
	}
	client, err := api.NewClient("http://" + o.addr)
	if err != nil {
		return err
	}

	ackedBefore := f.outcomesAcked.Load()
	sentBefore, receivedBefore := f.framesSent.Load(), f.framesReceived.Load()
	started := time.Now()
	batch := fmt.Sprintf("load-%d", started.UnixNano())
	for submitted := 0; submitted < o.tasks; {
		n := min(o.batch, o.tasks-submitted)
		specs := make([]api.TaskSpec, n)
		for i := range specs {
			specs[i] = api.TaskSpec{
				Name:    fmt.Sprintf("noop-%d", submitted+i+1),
				Type:    o.workerSettings.taskType,
				Payload: noopPayload,
			}
		}
		if _, err := client.Submit(ctx, api.SubmitRequest{Batch: batch, Tasks: specs}); err != nil {
			return fmt.Errorf("submit tasks %d to %d: %w", submitted+1, submitted+n, err)
		}
		submitted += n
	}
	submitTook := time.Since(started)

	want := ackedBefore + uint64(o.tasks)
	err = waitUntil(ctx, f, o.duration, "all outcomes acknowledged", func() bool {
		return f.outcomesAcked.Load() >= want
	})
	elapsed := time.Since(started)
	done := f.outcomesAcked.Load() - ackedBefore
	frames := f.framesSent.Load() - sentBefore + f.framesReceived.Load() - receivedBefore

	r.add("slots_per_worker", o.workerSettings.slots)
	r.add("tasks", fmt.Sprintf("%d submitted in batches of %d, %d completed", o.tasks, o.batch, done))
	r.add("submit_took", submitTook.Round(time.Millisecond))
	r.add("elapsed", fmt.Sprintf("%s from first submit to last outcome_ack", elapsed.Round(time.Millisecond)))
	r.add("tasks_per_s", fmt.Sprintf("%.0f", float64(done)/elapsed.Seconds()))
	r.add("frames_per_s", fmt.Sprintf("%.0f (sent plus received by the workers)", float64(frames)/elapsed.Seconds()))
	r.add("stale_outcome_acks", f.outcomesStale.Load())
	r.add("reconnects", len(returned(f, started)))
	r.add("replay_buffer_full", f.replayFull.Load())
	return err
}
