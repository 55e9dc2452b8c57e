package connector

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/internal/testcert"
)

func TestParseConfigCAFile(t *testing.T) {
	ca, err := testcert.NewCA("connector test CA")
	require.NoError(t, err)
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	require.NoError(t, os.WriteFile(caFile, ca.CertPEM, 0o644))

	in := connectorConfig("wss://127.0.0.1:7070", "")
	in.CaFile = caFile
	cfg, err := ParseConfig(in)
	require.NoError(t, err)
	require.NotNil(t, cfg.TLS.RootCAs)
	// The pinned pool verifies a certificate of the CA and nothing else.
	_, err = ca.Cert.Verify(x509.VerifyOptions{Roots: cfg.TLS.RootCAs})
	assert.NoError(t, err)

	// Without ca_file the system roots apply.
	cfg, err = ParseConfig(connectorConfig("wss://127.0.0.1:7070", ""))
	require.NoError(t, err)
	assert.Nil(t, cfg.TLS.RootCAs)
}

func TestParseConfigRejectsBadCAFile(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	require.NoError(t, os.WriteFile(notPEM, []byte("not a certificate"), 0o644))

	in := connectorConfig("wss://127.0.0.1:7070", "")
	in.CaFile = filepath.Join(dir, "missing.pem")
	_, err := ParseConfig(in)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "coordinator.ca_file")
	assert.Contains(t, err.Error(), "missing.pem")

	in.CaFile = notPEM
	_, err = ParseConfig(in)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "contains no PEM certificate")
}
