package store

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func testCredential(workerID, id string, created time.Time) Credential {
	return Credential{
		WorkerID: workerID, CredentialID: id, Salt: []byte("salt"), Iterations: 4096,
		StoredKey: []byte("stored"), ServerKey: []byte("server"), Created: created,
	}
}

func TestCredentialsLifecycle(t *testing.T) {
	st := openTestStore(t, filepath.Join(t.TempDir(), "store.db"))
	ctx := context.Background()
	now := time.UnixMilli(1_700_000_000_000)

	has, err := st.HasCredentials(ctx, "w1")
	require.NoError(t, err)
	assert.False(t, has)

	require.NoError(t, st.CreateCredential(ctx, testCredential("w1", "dtfc_a", now)))
	require.NoError(t, st.CreateCredential(ctx, testCredential("w1", "dtfc_b", now.Add(time.Second))))
	require.NoError(t, st.CreateCredential(ctx, testCredential("w2", "dtfc_c", now)))
	assert.Error(t, st.CreateCredential(ctx, testCredential("w1", "dtfc_a", now)), "duplicate id accepted")

	got, err := st.GetCredential(ctx, "w1", "dtfc_a")
	require.NoError(t, err)
	assert.Equal(t, []byte("stored"), got.StoredKey)
	assert.Equal(t, 4096, got.Iterations)
	_, err = st.GetCredential(ctx, "w2", "dtfc_a")
	assert.ErrorIs(t, err, ErrCredentialNotFound, "credential of another worker returned")

	// Rotation: dtfc_a expires in an hour, dtfc_b stays.
	changed, err := st.ExpireCredentials(ctx, "w1", "dtfc_b", now.Add(time.Hour))
	require.NoError(t, err)
	assert.Equal(t, []string{"dtfc_a"}, changed)
	active, err := st.ActiveCredentials(ctx, "w1", now.Add(time.Minute))
	require.NoError(t, err)
	assert.Len(t, active, 2)
	active, err = st.ActiveCredentials(ctx, "w1", now.Add(time.Hour))
	require.NoError(t, err)
	require.Len(t, active, 1)
	assert.Equal(t, "dtfc_b", active[0].CredentialID)

	ended, err := st.EndedCredentials(ctx, now, now.Add(time.Hour))
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"dtfc_a": "expired"}, ended)

	revoked, err := st.RevokeCredentials(ctx, "w1", "", now.Add(2*time.Hour))
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{"dtfc_a", "dtfc_b"}, revoked)
	_, err = st.RevokeCredentials(ctx, "w1", "", now.Add(3*time.Hour))
	assert.ErrorIs(t, err, ErrCredentialNotFound)
	active, err = st.ActiveCredentials(ctx, "w1", now.Add(2*time.Hour))
	require.NoError(t, err)
	assert.Empty(t, active)
	has, err = st.HasCredentials(ctx, "w1")
	require.NoError(t, err)
	assert.True(t, has, "revoked credentials must still count, so the worker cannot fall back to the token")

	ended, err = st.EndedCredentials(ctx, now.Add(time.Hour), now.Add(2*time.Hour))
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"dtfc_a": "revoked", "dtfc_b": "revoked"}, ended)

	all, err := st.ListCredentials(ctx, "")
	require.NoError(t, err)
	assert.Len(t, all, 3)
}
