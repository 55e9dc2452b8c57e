package cli

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/internal/testcert"
)

// tlsBlock returns a coordinator tls block for the files.
func tlsBlock(files testcert.Files) string {
	return "tls {\n  cert_file = \"" + files.CertFile + "\"\n  key_file = \"" + files.KeyFile + "\"\n}\n"
}

func TestRequestErrorNamesTLSFix(t *testing.T) {
	ca, err := testcert.NewCA("dtf test CA")
	require.NoError(t, err)
	files, err := ca.WriteServerFiles(t.TempDir(), "127.0.0.1")
	require.NoError(t, err)
	_, tlsAddr := startCoordinator(t, tlsBlock(files))
	localhostOnly, err := ca.WriteServerFiles(t.TempDir(), "localhost")
	require.NoError(t, err)
	_, localhostAddr := startCoordinator(t, tlsBlock(localhostOnly))
	_, plainAddr := startCoordinator(t, "")
	otherCA, err := testcert.NewCA("another CA")
	require.NoError(t, err)
	otherFiles, err := otherCA.WriteServerFiles(t.TempDir(), "127.0.0.1")
	require.NoError(t, err)

	for name, tc := range map[string]struct {
		addr string
		args []string
		want string
	}{
		"http to a TLS listener": {"http://" + tlsAddr, nil,
			"the coordinator serves https; use -addr https://" + tlsAddr},
		"https without the CA": {"https://" + tlsAddr, nil,
			"not signed by a CA that dtf trusts; set -ca-file or $DTF_CA_FILE"},
		"https with the wrong CA": {"https://" + tlsAddr, []string{"-ca-file", otherFiles.CAFile},
			"not signed by the CA in -ca-file or $DTF_CA_FILE"},
		"https to a plain listener": {"https://" + plainAddr, nil,
			"the coordinator serves plain http; use -addr http://" + plainAddr},
		"certificate for another host": {"https://" + localhostAddr, []string{"-ca-file", localhostOnly.CAFile},
			"does not name the host of -addr"},
	} {
		t.Run(name, func(t *testing.T) {
			app, stdout, stderr := testApp(tc.addr, false)
			assert.Equal(t, ExitError, runApp(app, append([]string{"workers"}, tc.args...)...))
			assert.Contains(t, stderr.String(), tc.want)
			assert.Empty(t, stdout.String())
		})
	}
}
