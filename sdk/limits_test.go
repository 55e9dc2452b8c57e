package sdk

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/protocol"
)

// The SDK does not import protocol, so its copy of the checkpoint limit is
// checked here against the coordinator's.
func TestMaxCheckpointBytesMatchesProtocol(t *testing.T) {
	require.Equal(t, protocol.MaxCheckpointBytes, MaxCheckpointBytes)
}

// An executor links every package that the SDK depends on, and each one's
// initialisation adds resident memory to every executor process. The wire
// codec and its SCRAM library belong to the worker host and the connector
// plugin, not to executors.
func TestSDKDependenciesExcludeWireCodec(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	require.NoError(t, err, "go list -deps")
	linked := map[string]bool{}
	for _, path := range strings.Fields(string(out)) {
		linked[path] = true
	}
	assert.False(t, linked["github.com/dtf-io/dtf/protocol"], "sdk depends on github.com/dtf-io/dtf/protocol")
	assert.False(t, linked["github.com/xdg-go/scram"], "sdk depends on github.com/xdg-go/scram")
}
