package plugin

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestLoggerWritesDurationsAsStrings(t *testing.T) {
	var buf bytes.Buffer
	logger := newDurationLogger(hclog.New(&hclog.LoggerOptions{Output: &buf, JSONFormat: true}))
	logger.With("interval", 2*time.Second).Named("conn").
		Info("connected", "timeout", 1500*time.Millisecond, "attempt", 3)

	var entry map[string]interface{}
	require.NoError(t, json.Unmarshal(buf.Bytes(), &entry), buf.String())
	assert.Equal(t, "2s", entry["interval"])
	assert.Equal(t, "1.5s", entry["timeout"])
	assert.InDelta(t, 3, entry["attempt"], 0, "other values keep their type")
}

func TestDurationsAsStringsLeavesKeysAndOtherArgs(t *testing.T) {
	args := []interface{}{"delay", time.Second, "name", "x"}
	out := durationsAsStrings(args)
	assert.Equal(t, []interface{}{"delay", "1s", "name", "x"}, out)
	assert.Equal(t, time.Second, args[1], "the caller's slice is not changed")
	plain := []interface{}{"name", "x"}
	assert.Equal(t, plain, durationsAsStrings(plain))
}
