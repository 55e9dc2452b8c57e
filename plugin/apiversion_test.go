package plugin

import (
	"context"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// buildConnector compiles a connector binary of the module from pkg, a
// package path relative to the module root.
func buildConnector(t *testing.T, pkg string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", out, "./"+pkg)
	cmd.Dir = ".."
	output, err := cmd.CombinedOutput()
	require.NoError(t, err, "go build %s: %s", pkg, output)
	return out
}

// TestConnectorAPIVersionNegotiation launches the real reconnection
// connector served with both API versions and with version 1 only, and
// checks the version that the host negotiates with each.
func TestConnectorAPIVersionNegotiation(t *testing.T) {
	cases := []struct {
		pkg  string
		want int
	}{
		{pkg: "plugins/reconnection", want: ConnectorAPIVersion},
		{pkg: "test/plugins/reconnection-v1", want: APIVersion},
	}
	for _, c := range cases {
		t.Run(c.pkg, func(t *testing.T) {
			path := buildConnector(t, c.pkg)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			client, err := Launch(ctx, LaunchConfig{Name: "reconnection", Kind: KindConnector, Path: path})
			require.NoError(t, err)
			defer client.Kill()
			assert.Equal(t, c.want, client.APIVersion())
			assert.NotNil(t, client.Connector())
		})
	}
}

// TestConnectorWithoutSharedAPIVersion launches a connector that serves
// only a version the host does not offer, and checks that the error names
// both sides' versions.
func TestConnectorWithoutSharedAPIVersion(t *testing.T) {
	path := buildConnector(t, "test/plugins/reconnection-future")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	client, err := Launch(ctx, LaunchConfig{Name: "reconnection", Kind: KindConnector, Path: path})
	if client != nil {
		client.Kill()
	}
	require.ErrorIs(t, err, ErrNoSharedAPIVersion)
	assert.Contains(t, err.Error(), "serves connector plugin API version 99")
	assert.Contains(t, err.Error(), "this host supports connector plugin API versions 1, 2")
	assert.Contains(t, err.Error(), path)
}

func TestAPIVersionsOfKinds(t *testing.T) {
	assert.Equal(t, []int{1, 2}, APIVersions(KindConnector))
	assert.Equal(t, []int{1}, APIVersions(KindExecutor))
	assert.Equal(t, []int{1}, APIVersions(KindMetrics))
	assert.Nil(t, APIVersions("nope"))
}
