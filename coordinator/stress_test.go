package coordinator

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/coordinator/api"
	"github.com/dtf-io/dtf/protocol/pb"
)

// TestResumeUnderForcedReconnects runs assignments, outcomes, heartbeats
// and replays concurrently for 10 s while every worker's connection is cut
// at random. Every task must succeed in its first attempt, and every worker
// must receive exactly one acknowledgement per outcome it sent.
func TestResumeUnderForcedReconnects(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for 10 s")
	}
	cfg := testConfig(t, "")
	cfg.Workers.HeartbeatInterval = 50 * time.Millisecond
	ts := startServer(t, cfg)

	const workers = 4
	stop := make(chan struct{})
	var wg sync.WaitGroup
	acks := make([]map[string]int, workers)
	for i := range workers {
		w := newSeqWorker(t, ts, fmt.Sprintf("w%d", i))
		require.False(t, w.connect().GetWelcome().GetResumed())
		w.sync()
		acks[i] = map[string]int{}
		wg.Add(2)
		go func() {
			defer wg.Done()
			runStressWorker(w, stop, acks[i])
		}()
		go func() {
			defer wg.Done()
			cutAtRandom(t, w, stop)
		}()
	}

	var submitted []string
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, task := range submit(t, ts, commandSpec(), commandSpec()).Tasks {
			submitted = append(submitted, task.ID)
		}
		time.Sleep(20 * time.Millisecond)
	}
	require.Eventually(t, func() bool {
		var list struct{ Tasks []api.Task }
		doJSON(t, http.MethodGet, ts.url+"/v1/tasks?state=succeeded", nil, &list)
		return len(list.Tasks) == len(submitted)
	}, 20*time.Second, 50*time.Millisecond, "every task succeeds")
	close(stop)
	wg.Wait()

	for _, id := range submitted {
		assert.Equal(t, 1, getTask(t, ts, id).Attempt, "task %s needed no second attempt", id)
	}
	total := 0
	for i := range acks {
		for ref, n := range acks[i] {
			assert.Equal(t, 1, n, "worker w%d got %d acknowledgements for %s", i, n, ref)
			total++
		}
	}
	assert.Equal(t, len(submitted), total)
	t.Logf("tasks %d, duplicate frames ignored by the coordinator %d", len(submitted), ts.Stats().DuplicateFrames)
}

// runStressWorker sends an outcome for every assignment and counts the
// acknowledgements it receives per attempt.
func runStressWorker(w *seqWorker, stop chan struct{}, acks map[string]int) {
	for {
		select {
		case <-stop:
			return
		case frame := <-w.frames:
			switch {
			case frame.GetAssign() != nil:
				w.send(outcomeFrame(frame.GetAssign().GetRef(), pb.Status_STATUS_SUCCEEDED))
			case frame.GetOutcomeAck() != nil:
				ref := frame.GetOutcomeAck().GetRef()
				acks[fmt.Sprintf("%s/%d", ref.GetTaskId(), ref.GetAttempt())]++
			}
		}
	}
}

// cutAtRandom cuts the worker's connection every 100 to 400 ms and resumes
// the session at once.
func cutAtRandom(t *testing.T, w *seqWorker, stop chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case <-time.After(time.Duration(100+rand.IntN(300)) * time.Millisecond):
		}
		w.cut()
		if !w.connect().GetWelcome().GetResumed() {
			t.Errorf("worker %s: session not resumed", w.id)
			return
		}
	}
}
