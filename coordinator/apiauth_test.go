package coordinator

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/coordinator/api"
	"github.com/dtf-io/dtf/coordinator/config"
	"github.com/dtf-io/dtf/coordinator/store"
	"github.com/dtf-io/dtf/internal/testcert"
)

// createToken stores a new token of role in the server's store and returns
// its text.
func createToken(t *testing.T, ts *testServer, role string, change func(*store.APIToken)) string {
	t.Helper()
	token, record, err := NewAPIToken(role, time.Now())
	require.NoError(t, err)
	if change != nil {
		change(&record)
	}
	require.NoError(t, ts.store.CreateAPIToken(context.Background(), record))
	return token
}

// doWithToken sends a request with an optional bearer token and returns
// the status and the decoded error body, if any.
func doWithToken(t *testing.T, method, url, token, body string) (int, api.Error) {
	t.Helper()
	var reader io.Reader
	if body != "" {
		reader = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, reader)
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := httpClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var apiErr api.Error
	if resp.StatusCode >= 400 {
		require.NoError(t, json.Unmarshal(data, &apiErr), "body: %s", data)
	}
	return resp.StatusCode, apiErr
}

func TestAPITokenRoles(t *testing.T) {
	cfg := testConfig(t, "")
	cfg.API.Auth = config.APIAuthToken
	ts := startServer(t, cfg)

	read := createToken(t, ts, RoleRead, nil)
	submitToken := createToken(t, ts, RoleSubmit, nil)
	expired := createToken(t, ts, RoleSubmit, func(r *store.APIToken) { r.Expires = time.Now().Add(-time.Minute) })
	var revokedID string
	revoked := createToken(t, ts, RoleSubmit, func(r *store.APIToken) { revokedID = r.ID })
	require.NoError(t, ts.store.RevokeAPIToken(context.Background(), revokedID, time.Now()))

	// One task to get and cancel, submitted with the submit token.
	status, _ := doWithToken(t, "POST", ts.url+"/v1/tasks", submitToken,
		`{"tasks":[{"type":"command","payload":{"argv":["true"]}}]}`)
	require.Equal(t, http.StatusCreated, status)
	listed, err := ts.store.ListTasks(context.Background(), store.TaskFilter{})
	require.NoError(t, err)
	require.Len(t, listed, 1)
	taskURL := ts.url + "/v1/tasks/" + listed[0].ID
	submission := `{"tasks":[{"type":"command","payload":{"argv":["true"]}}]}`

	cases := []struct {
		name, method, url, token, body string
		status                         int
		errorHas                       []string
	}{
		{"healthz without token", "GET", ts.url + "/healthz", "", "", http.StatusOK, nil},
		{"list without token", "GET", ts.url + "/v1/tasks", "", "", http.StatusUnauthorized,
			[]string{"missing API token", "role read", "dtf tokens create"}},
		{"submit without token", "POST", ts.url + "/v1/tasks", "", submission, http.StatusUnauthorized,
			[]string{"missing API token", "role submit", "-role submit"}},
		{"wrong token", "GET", ts.url + "/v1/workers", APITokenPrefix + "wrong", "", http.StatusUnauthorized,
			[]string{"invalid API token", "role read"}},
		{"expired token", "GET", ts.url + "/v1/tasks", expired, "", http.StatusUnauthorized,
			[]string{"revoked or expired"}},
		{"revoked token", "GET", ts.url + "/v1/tasks", revoked, "", http.StatusUnauthorized,
			[]string{"revoked or expired"}},
		{"read lists tasks", "GET", ts.url + "/v1/tasks", read, "", http.StatusOK, nil},
		{"read gets task", "GET", taskURL, read, "", http.StatusOK, nil},
		{"read lists workers", "GET", ts.url + "/v1/workers", read, "", http.StatusOK, nil},
		{"read cannot submit", "POST", ts.url + "/v1/tasks", read, submission, http.StatusForbidden,
			[]string{"has role read", "role submit", "dtf tokens create"}},
		{"read cannot cancel", "POST", taskURL + "/cancel", read, "", http.StatusForbidden,
			[]string{"has role read", "role submit"}},
		{"submit reads", "GET", ts.url + "/v1/tasks", submitToken, "", http.StatusOK, nil},
		{"submit cancels", "POST", taskURL + "/cancel", submitToken, "", http.StatusOK, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, apiErr := doWithToken(t, tc.method, tc.url, tc.token, tc.body)
			assert.Equal(t, tc.status, status)
			for _, want := range tc.errorHas {
				assert.Contains(t, apiErr.Error, want)
			}
		})
	}

	// The rejected submission did not create a task.
	listed, err = ts.store.ListTasks(context.Background(), store.TaskFilter{})
	require.NoError(t, err)
	assert.Len(t, listed, 1)
}

func TestAPIOpenOnLoopbackByDefault(t *testing.T) {
	ts := startServer(t, testConfig(t, ""))
	require.Equal(t, config.APIAuthNone, ts.cfg.APIAuthMode())
	status, _ := doWithToken(t, "GET", ts.url+"/v1/tasks", "", "")
	assert.Equal(t, http.StatusOK, status)
}

func TestAPITokenFormat(t *testing.T) {
	token, record, err := NewAPIToken(RoleRead, time.Now())
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(token, APITokenPrefix))
	// 32 random bytes in unpadded base64url are 43 characters.
	assert.Len(t, token, len(APITokenPrefix)+43)
	assert.Equal(t, HashAPIToken(token), record.Hash)
	assert.NotContains(t, string(record.Hash), token)

	other, _, err := NewAPIToken(RoleRead, time.Now())
	require.NoError(t, err)
	assert.NotEqual(t, token, other)

	_, _, err = NewAPIToken("admin", time.Now())
	require.Error(t, err)
	assert.Contains(t, err.Error(), `invalid role "admin"`)
}

func TestTLSListenerServesHTTPS(t *testing.T) {
	ca, err := testcert.NewCA("dtf test CA")
	require.NoError(t, err)
	files, err := ca.WriteServerFiles(t.TempDir(), "127.0.0.1")
	require.NoError(t, err)
	cfg := testConfig(t, "")
	cfg.TLS = config.TLS{CertFile: files.CertFile, KeyFile: files.KeyFile}
	ts := startServer(t, cfg)

	client := &http.Client{Timeout: waitFor, Transport: &http.Transport{
		DisableKeepAlives: true,
		TLSClientConfig:   &tls.Config{RootCAs: ca.Pool()},
	}}
	resp, err := client.Get("https://" + ts.Addr() + "/healthz")
	require.NoError(t, err)
	_ = resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)

	// A client that trusts another CA fails the certificate check.
	other, err := testcert.NewCA("other CA")
	require.NoError(t, err)
	strict := &http.Client{Timeout: waitFor, Transport: &http.Transport{
		DisableKeepAlives: true,
		TLSClientConfig:   &tls.Config{RootCAs: other.Pool()},
	}}
	_, err = strict.Get("https://" + ts.Addr() + "/healthz")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "certificate signed by unknown authority")

	// A plain HTTP request gets no API response.
	resp, err = httpClient.Get("http://" + ts.Addr() + "/healthz")
	if err == nil {
		_ = resp.Body.Close()
		assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
	}
}

func TestBearerTokenHeader(t *testing.T) {
	token := APITokenPrefix + "abc"
	cases := []struct {
		name, header, token, problem string
	}{
		{"bearer", "Bearer " + token, token, ""},
		{"lower case and spaces", "  bearer   " + token + " ", token, ""},
		{"missing", "", "", "missing API token"},
		{"basic", "Basic " + token, "", `Authorization header uses the scheme "Basic", but the API accepts only Bearer`},
		{"token without scheme", token, "", `the scheme "dtfa_abc", but the API accepts only Bearer`},
		{"long scheme", strings.Repeat("x", 100) + " t", "", `scheme "` + strings.Repeat("x", 20) + `"`},
		{"bearer without token", "Bearer", "", "has the Bearer scheme but no token"},
		{"bearer with blank token", "Bearer   ", "", "has the Bearer scheme but no token"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, "/v1/tasks", nil)
			if tc.header != "" {
				req.Header.Set("Authorization", tc.header)
			}
			got, problem := bearerToken(req)
			assert.Equal(t, tc.token, got)
			if tc.problem == "" {
				assert.Empty(t, problem)
			} else {
				assert.Contains(t, problem, tc.problem)
			}
		})
	}
}
