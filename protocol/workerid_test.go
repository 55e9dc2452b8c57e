package protocol

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCheckWorkerID(t *testing.T) {
	for _, id := range []string{"worker-1", "w", "build.example.com", "ci_runner:3", "alice@gpu-7",
		strings.Repeat("a", MaxWorkerIDBytes)} {
		assert.NoError(t, CheckWorkerID(id), id)
	}
	for _, tc := range []struct{ id, want string }{
		{"", "empty"},
		{strings.Repeat("a", MaxWorkerIDBytes+1), "over the limit of 128"},
		{"worker\n1", `character '\n' at byte 6`},
		{"worker 1", "character ' ' at byte 6"},
		{"wörker", "non-ASCII character at byte 1"},
		{"a=b", "character '=' at byte 1"},
	} {
		err := CheckWorkerID(tc.id)
		require.Error(t, err, "%q", tc.id)
		assert.Contains(t, err.Error(), tc.want)
	}
}
