package store

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/dtf-io/dtf/coordinator/api"
)

// BenchmarkApplyOutcomeConcurrent applies one succeeded outcome per
// operation from the given number of goroutines, as that many worker
// sessions do, on a store in a fresh file. commits/op is the share of a
// commit, and so of a WAL sync, that one outcome costs.
func BenchmarkApplyOutcomeConcurrent(b *testing.B) {
	for _, senders := range []int{1, 8, 50} {
		b.Run(fmt.Sprintf("senders=%d", senders), func(b *testing.B) {
			st, err := OpenSQLite(context.Background(), filepath.Join(b.TempDir(), "dtf.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			startTasks(b, st, b.N)
			commitsBefore := st.writer.batches.Load()

			var next atomic.Int64
			var failed atomic.Value
			var wg sync.WaitGroup
			b.ResetTimer()
			for range senders {
				wg.Go(func() {
					for {
						i := next.Add(1) - 1
						if i >= int64(b.N) {
							return
						}
						res, err := st.ApplyOutcome(context.Background(), Outcome{TaskID: fmt.Sprintf("t%d", i),
							Attempt: 1, WorkerID: "w1", Status: api.StateSucceeded}, testNow)
						if err == nil && !res.Applied {
							err = fmt.Errorf("outcome of t%d not applied: %s", i, res.Reason)
						}
						if err != nil {
							failed.Store(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			if err, _ := failed.Load().(error); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(st.writer.batches.Load()-commitsBefore)/float64(b.N), "commits/op")
		})
	}
}
