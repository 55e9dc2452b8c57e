package dirlock

import (
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSecondLockFailsUntilFirstIsReleased(t *testing.T) {
	dir := t.TempDir()
	first, err := Lock(dir, "x.lock")
	require.NoError(t, err)

	_, err = Lock(dir, "x.lock")
	assert.ErrorIs(t, err, ErrInUse)

	require.NoError(t, first.Close())
	again, err := Lock(dir, "x.lock")
	require.NoError(t, err)
	require.NoError(t, again.Close())
}

func TestLockNamesMissingDirectory(t *testing.T) {
	_, err := Lock(t.TempDir()+"/missing", "x.lock")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "open lock file")
}

func TestHolderReturnsPIDOfLockHolder(t *testing.T) {
	dir := t.TempDir()
	_, err := Holder(dir, "x.lock")
	assert.ErrorIs(t, err, ErrNotHeld, "missing file")

	f, err := Lock(dir, "x.lock")
	require.NoError(t, err)
	_, err = Holder(dir, "x.lock")
	assert.ErrorContains(t, err, "contains no process id")

	require.NoError(t, WritePID(f))
	pid, err := Holder(dir, "x.lock")
	require.NoError(t, err)
	assert.Equal(t, os.Getpid(), pid)

	require.NoError(t, f.Close())
	_, err = Holder(dir, "x.lock")
	assert.ErrorIs(t, err, ErrNotHeld, "lock released, pid left in the file")
}
