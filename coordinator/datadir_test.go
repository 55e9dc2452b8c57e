package coordinator

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/coordinator/config"
)

func TestSecondCoordinatorOnSameDataDirFails(t *testing.T) {
	dir := t.TempDir()
	first, err := New(config.Default("127.0.0.1:0", dir), nil)
	require.NoError(t, err)
	t.Cleanup(func() {
		first.dataDirLock.Close()
		first.store.Close()
		first.listener.Close()
	})

	_, err = New(config.Default("127.0.0.1:0", dir), nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "in use by another coordinator")
	assert.Contains(t, err.Error(), "give this one its own data_dir")
	assert.NotContains(t, err.Error(), "PostgreSQL", "no PostgreSQL store exists to point the user to")
}
