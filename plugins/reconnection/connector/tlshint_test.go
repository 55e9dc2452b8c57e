package connector

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

// A ws:// url that reaches a TLS listener fails with a reason that names
// the fix, a wss:// url, instead of a bare HTTP status 400.
func TestPlainURLToTLSListenerNamesWSS(t *testing.T) {
	server := httptest.NewTLSServer(http.NotFoundHandler())
	t.Cleanup(server.Close)
	url := "ws://" + strings.TrimPrefix(server.URL, "https://")

	h := startConnector(t, url, fastConfig)
	change := h.nextState(StateBackingOff)
	assert.Contains(t, change.GetReason(), "HTTP status 400")
	assert.Contains(t, change.GetReason(), "use a wss:// url")
}

func TestPlainToTLSHintOnlyForThatReply(t *testing.T) {
	tlsReply := []byte("Client sent an HTTP request to an HTTPS server.\n")
	assert.NotEmpty(t, plainToTLSHint("ws://127.0.0.1:1", http.StatusBadRequest, tlsReply))
	assert.Empty(t, plainToTLSHint("wss://127.0.0.1:1", http.StatusBadRequest, tlsReply))
	assert.Empty(t, plainToTLSHint("ws://127.0.0.1:1", http.StatusForbidden, tlsReply))
	assert.Empty(t, plainToTLSHint("ws://127.0.0.1:1", http.StatusBadRequest, []byte("bad request")))
}
