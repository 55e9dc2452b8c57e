package coordinator

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/coordinator/config"
)

func TestStartupWarnings(t *testing.T) {
	warn := func(listen string, insecure bool, auth string) []string {
		cfg := &config.Config{Listen: listen, Insecure: insecure}
		cfg.API.Auth = auth
		return startupWarnings(cfg)
	}
	assert.Empty(t, warn("127.0.0.1:7070", true, config.APIAuthNone), "a loopback listener exposes nothing")
	assert.Empty(t, warn("10.1.2.3:7070", false, config.APIAuthToken))

	insecure := warn("10.1.2.3:7070", true, config.APIAuthToken)
	require.Len(t, insecure, 1)
	assert.Contains(t, insecure[0], "insecure = true")
	assert.Contains(t, insecure[0], "set a tls block")

	both := warn("0.0.0.0:7070", true, config.APIAuthNone)
	require.Len(t, both, 2)
	assert.Contains(t, both[1], `api { auth = "token" }`)
}
