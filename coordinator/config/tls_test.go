package config

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/internal/testcert"
)

// writeServerFiles writes a certificate for 127.0.0.1 valid from notBefore
// to notAfter and its key into dir, as server.pem and server-key.pem.
func writeServerFiles(t *testing.T, dir string, notBefore, notAfter time.Time) {
	t.Helper()
	ca, err := testcert.NewCA("config test CA")
	require.NoError(t, err)
	certPEM, keyPEM, err := ca.ServerPEM([]string{"127.0.0.1"}, notBefore, notAfter)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "server.pem"), certPEM, 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "server-key.pem"), keyPEM, 0o600))
}

const tlsBlock = `
tls {
  cert_file = "server.pem"
  key_file  = "server-key.pem"
}
`

func TestLoadTLSResolvesPaths(t *testing.T) {
	path := writeConfig(t, "listen = \"0.0.0.0:7070\"\n"+tlsBlock)
	dir := filepath.Dir(path)
	writeServerFiles(t, dir, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))

	cfg, err := Load(path)
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(dir, "server.pem"), cfg.TLS.CertFile)
	assert.Equal(t, filepath.Join(dir, "server-key.pem"), cfg.TLS.KeyFile)
	assert.False(t, cfg.Insecure)
	assert.Equal(t, APIAuthToken, cfg.APIAuthMode())
}

func TestPublicListenerWithoutTLSRejected(t *testing.T) {
	cfg := Default("0.0.0.0:7070", t.TempDir())
	err := cfg.Validate()
	require.Error(t, err)
	assert.Contains(t, err.Error(), `listen "0.0.0.0:7070" is not a loopback address and has no TLS`)
	assert.Contains(t, err.Error(), "add a tls block with cert_file and key_file")
	assert.Contains(t, err.Error(), "set insecure = true")

	cfg.Insecure = true
	assert.NoError(t, cfg.Validate())
}

func TestLoadRejectsBadTLS(t *testing.T) {
	cases := []struct {
		name  string
		setup func(t *testing.T, dir string)
		text  string
		want  []string
	}{
		{
			name:  "missing files",
			setup: func(t *testing.T, dir string) {},
			text:  tlsBlock,
			want:  []string{"tls.cert_file", "server.pem", "no such file"},
		},
		{
			name: "key of another certificate",
			setup: func(t *testing.T, dir string) {
				writeServerFiles(t, dir, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
				other := t.TempDir()
				writeServerFiles(t, other, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
				key, err := os.ReadFile(filepath.Join(other, "server-key.pem"))
				require.NoError(t, err)
				require.NoError(t, os.WriteFile(filepath.Join(dir, "server-key.pem"), key, 0o600))
			},
			text: tlsBlock,
			want: []string{"server-key.pem", "the key must belong to it"},
		},
		{
			name: "not PEM",
			setup: func(t *testing.T, dir string) {
				require.NoError(t, os.WriteFile(filepath.Join(dir, "server.pem"), []byte("text"), 0o600))
				require.NoError(t, os.WriteFile(filepath.Join(dir, "server-key.pem"), []byte("text"), 0o600))
			},
			text: tlsBlock,
			want: []string{"server.pem", "both must be PEM"},
		},
		{
			name: "expired certificate",
			setup: func(t *testing.T, dir string) {
				writeServerFiles(t, dir, time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour))
			},
			text: tlsBlock,
			want: []string{"server.pem", "certificate expired at", "renew it"},
		},
		{
			name:  "cert without key",
			setup: func(t *testing.T, dir string) {},
			text:  "tls {\n  cert_file = \"server.pem\"\n}\n",
			want:  []string{`"key_file" is required`},
		},
		{
			name:  "unknown api auth",
			setup: func(t *testing.T, dir string) {},
			text:  "api {\n  auth = \"basic\"\n}\n",
			want:  []string{`api.auth "basic" is invalid`, `"token"`, `"none"`},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, tc.text)
			tc.setup(t, filepath.Dir(path))
			_, err := Load(path)
			require.Error(t, err)
			for _, want := range tc.want {
				assert.Contains(t, err.Error(), want)
			}
		})
	}
}

func TestAPIAuthModeDefaults(t *testing.T) {
	cases := []struct {
		listen, auth, want string
	}{
		{"127.0.0.1:7070", "", APIAuthNone},
		{"localhost:7070", "", APIAuthNone},
		{"[::1]:7070", "", APIAuthNone},
		{"0.0.0.0:7070", "", APIAuthToken},
		{"10.0.0.5:7070", "", APIAuthToken},
		{"127.0.0.1:7070", APIAuthToken, APIAuthToken},
		{"0.0.0.0:7070", APIAuthNone, APIAuthNone},
	}
	for _, tc := range cases {
		cfg := Default(tc.listen, "data")
		cfg.API.Auth = tc.auth
		assert.Equal(t, tc.want, cfg.APIAuthMode(), "listen %s auth %q", tc.listen, tc.auth)
	}
}
