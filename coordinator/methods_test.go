package coordinator

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/coordinator/api"
)

// A known path requested with a method it does not serve gets 405 with an
// Allow header, and an unknown path still gets 404.
func TestRoutesMethodNotAllowed(t *testing.T) {
	ts := startServer(t, testConfig(t, ""))
	cases := []struct {
		method, path string
		status       int
		allow        string
	}{
		{http.MethodPost, api.StreamPath, http.StatusMethodNotAllowed, "GET, HEAD"},
		{http.MethodDelete, api.StreamPath, http.StatusMethodNotAllowed, "GET, HEAD"},
		{http.MethodPut, "/v1/workers", http.StatusMethodNotAllowed, "GET, HEAD"},
		{http.MethodDelete, "/v1/tasks", http.StatusMethodNotAllowed, "GET, HEAD, POST"},
		{http.MethodGet, "/v1/tasks/t1/cancel", http.StatusMethodNotAllowed, "POST"},
		{http.MethodPost, "/metrics", http.StatusMethodNotAllowed, "GET, HEAD"},
		{http.MethodGet, "/v1/nothing", http.StatusNotFound, ""},
	}
	for _, c := range cases {
		t.Run(c.method+" "+c.path, func(t *testing.T) {
			req, err := http.NewRequest(c.method, ts.url+c.path, nil)
			require.NoError(t, err)
			resp, err := httpClient.Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			assert.Equal(t, c.status, resp.StatusCode)
			assert.Equal(t, c.allow, resp.Header.Get("Allow"))
		})
	}
}
