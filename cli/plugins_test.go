package cli

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/dtf-io/dtf/coordinator/api"
)

func TestFormatPlugins(t *testing.T) {
	assert.Equal(t, "", formatPlugins(nil))
	assert.Equal(t, "reconnection 1.2.0/api1, hello 0.1.0/api2", formatPlugins([]api.WorkerPlugin{
		{Name: "reconnection", Kind: "connector", Version: "1.2.0", APIVersion: 1},
		{Name: "hello", Kind: "executor", Version: "0.1.0", APIVersion: 2},
	}))
	assert.Equal(t, "old 0.9.0", formatPlugins([]api.WorkerPlugin{{Name: "old", Version: "0.9.0"}}),
		"a host that reports no API version")
}
