package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/internal/testcert"
)

// withCAFile returns validConfig with a wss:// url, or url when it is not
// empty, and the given ca_file line.
func withCAFile(url, line string) string {
	text := validConfig
	if url != "" {
		text = strings.Replace(text, `url       = "ws://127.0.0.1:7070"`, `url = "`+url+`"`, 1)
	}
	return strings.Replace(text, `token     = env("DTF_TEST_WORKER_TOKEN")`, line, 1)
}

func TestLoadCAFile(t *testing.T) {
	ca, err := testcert.NewCA("host config test CA")
	require.NoError(t, err)
	path := writeWorkerConfig(t, withCAFile("wss://127.0.0.1:7070", `ca_file = "ca.pem"`))
	caPath := filepath.Join(filepath.Dir(path), "ca.pem")
	require.NoError(t, os.WriteFile(caPath, ca.CertPEM, 0o644))

	cfg, err := Load(path)
	require.NoError(t, err)
	assert.Equal(t, caPath, cfg.Coordinator.CAFile)
}

func TestLoadRejectsBadCAFile(t *testing.T) {
	cases := []struct {
		name, url, line, content string
		want                     []string
	}{
		{"missing file", "wss://127.0.0.1:7070", `ca_file = "ca.pem"`, "",
			[]string{"Invalid ca_file", "ca.pem", "no such file"}},
		{"not PEM", "wss://127.0.0.1:7070", `ca_file = "ca.pem"`, "not a certificate",
			[]string{"contains no PEM certificate"}},
		{"plain ws url", "", `ca_file = "ca.pem"`, "",
			[]string{"ca_file without TLS", `url "ws://127.0.0.1:7070" does not use TLS`}},
		{"empty", "wss://127.0.0.1:7070", `ca_file = ""`, "", []string{"ca_file must name a PEM file"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := writeWorkerConfig(t, withCAFile(tc.url, tc.line))
			if tc.content != "" {
				require.NoError(t, os.WriteFile(filepath.Join(filepath.Dir(path), "ca.pem"), []byte(tc.content), 0o644))
			}
			_, err := Load(path)
			require.Error(t, err)
			for _, want := range tc.want {
				assert.Contains(t, err.Error(), want)
			}
		})
	}
}
