package store

import (
	"context"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// Two processes that open a new store at the same moment, as a
// coordinator and `dtf tokens create` may, both succeed: the one that
// finds the file locked by the other's migrations waits instead of
// failing with SQLITE_BUSY.
func TestOpenSQLiteConcurrentlyOnNewFile(t *testing.T) {
	for round := range 20 {
		path := filepath.Join(t.TempDir(), "coordinator.db")
		var wg sync.WaitGroup
		errs := make([]error, 3)
		for i := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				st, err := OpenSQLite(context.Background(), path)
				if err == nil {
					err = st.Close()
				}
				errs[i] = err
			}()
		}
		wg.Wait()
		for i, err := range errs {
			require.NoError(t, err, "round %d, opener %d", round, i)
		}
	}
}
