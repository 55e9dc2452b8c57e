package coordinator

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/go-hclog"
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

func TestEmptyStoreFileIsReported(t *testing.T) {
	for _, tc := range []struct {
		name    string
		prepare func(dir string)
		want    string
	}{
		{"missing", func(string) {}, "created a new store"},
		{"empty", func(dir string) {
			require.NoError(t, os.WriteFile(filepath.Join(dir, StoreFile), nil, 0o600))
		}, "store file was empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.prepare(dir)
			var buf bytes.Buffer
			srv, err := New(config.Default("127.0.0.1:0", dir), hclog.New(&hclog.LoggerOptions{Output: &buf}))
			require.NoError(t, err)
			t.Cleanup(func() {
				srv.dataDirLock.Close()
				srv.store.Close()
				srv.listener.Close()
			})
			assert.Contains(t, buf.String(), tc.want)
		})
	}
}
