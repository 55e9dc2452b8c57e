package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/coordinator/api"
	"github.com/dtf-io/dtf/internal/testcert"
	"github.com/dtf-io/dtf/test/cluster"
)

// tlsCluster is a coordinator that serves https and wss with a certificate
// of a throwaway CA and requires API tokens.
type tlsCluster struct {
	t           *testing.T
	dir         string
	addr        string
	files       testcert.Files
	coordConfig string
	coordinator *cluster.Process
	workers     []*cluster.Process
	// client trusts only the test CA and sends a submit token.
	client *api.Client
}

func startTLSCluster(t *testing.T) *tlsCluster {
	t.Helper()
	c := &tlsCluster{t: t, dir: t.TempDir()}
	ca, err := testcert.NewCA("dtf e2e CA")
	require.NoError(t, err)
	c.files, err = ca.WriteServerFiles(c.dir, "127.0.0.1")
	require.NoError(t, err)
	c.addr, err = cluster.FreeAddr()
	require.NoError(t, err)

	c.coordConfig = filepath.Join(c.dir, "coordinator.hcl")
	require.NoError(t, cluster.WriteCoordinatorConfig(c.coordConfig, cluster.CoordinatorConfig{
		Listen:            c.addr,
		DataDir:           filepath.Join(c.dir, "coordinator"),
		Token:             token,
		HeartbeatInterval: 500 * time.Millisecond,
		HeartbeatTimeout:  2 * time.Second,
		ReassignAfter:     20 * time.Second,
		// Relative paths resolve against the config file's folder.
		Extra: "\ntls {\n  cert_file = \"server.pem\"\n  key_file  = \"server-key.pem\"\n}\n\n" +
			"api {\n  auth = \"token\"\n}\n",
	}))
	c.coordinator, err = cluster.Start("coordinator", filepath.Join(c.dir, "coordinator.log"), bin.Path("dtf"),
		[]string{"coordinator", "-config", c.coordConfig})
	require.NoError(t, err)
	t.Cleanup(c.stop)

	httpClient := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		TLSClientConfig:   &tls.Config{RootCAs: ca.Pool()},
	}}
	c.client = &api.Client{BaseURL: "https://" + c.addr, HTTP: httpClient, Token: c.createToken("submit")}
	err = cluster.Poll(context.Background(), 20*time.Second, 50*time.Millisecond, func() (bool, error) {
		return c.client.Health(context.Background()) == nil, nil
	})
	require.NoError(t, err, "coordinator log:\n%s", c.coordinator.Log())
	return c
}

// createToken runs dtf tokens create and returns the printed token.
func (c *tlsCluster) createToken(role string) string {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin.Path("dtf"), "tokens", "create", "-config", c.coordConfig,
		"-role", role).CombinedOutput()
	require.NoError(c.t, err, "%s", out)
	token := regexp.MustCompile(`dtfa_[A-Za-z0-9_-]+`).Find(out)
	require.NotNil(c.t, token, "no token in %s", out)
	return string(token)
}

func (c *tlsCluster) startWorker(id, caFile string) *cluster.Process {
	c.t.Helper()
	config := filepath.Join(c.dir, id+".hcl")
	require.NoError(c.t, cluster.WriteWorkerConfig(config, cluster.WorkerConfig{
		Bin:               bin,
		URL:               "wss://" + c.addr,
		WorkerID:          id,
		Token:             token,
		CAFile:            caFile,
		DataDir:           filepath.Join(c.dir, id),
		Slots:             1,
		HeartbeatInterval: 500 * time.Millisecond,
		HeartbeatTimeout:  2 * time.Second,
		BackoffBase:       100 * time.Millisecond,
		BackoffCap:        time.Second,
		HealthyAfter:      3 * time.Second,
	}))
	p, err := cluster.Start(id, filepath.Join(c.dir, id+".log"), bin.Path("dtf"), []string{"worker", "-config", config})
	require.NoError(c.t, err)
	c.workers = append(c.workers, p)
	return p
}

func (c *tlsCluster) stop() {
	for _, w := range c.workers {
		if err := w.Stop(10 * time.Second); err != nil {
			c.t.Logf("stop %s: %v", w.Name, err)
		}
	}
	if err := c.coordinator.Stop(10 * time.Second); err != nil {
		c.t.Logf("stop coordinator: %v", err)
	}
	if c.t.Failed() {
		c.t.Log("--- coordinator\n" + tail(c.coordinator.Log()))
		for _, w := range c.workers {
			c.t.Log("--- " + w.Name + "\n" + tail(w.Log()))
		}
	}
}

func TestWorkerOverWSSRunsTask(t *testing.T) {
	c := startTLSCluster(t)
	c.startWorker("tls-worker", c.files.CAFile)

	payload, err := json.Marshal(map[string]any{"argv": []string{"echo", "over tls"}})
	require.NoError(t, err)
	ctx := context.Background()
	resp, err := c.client.Submit(ctx, api.SubmitRequest{Tasks: []api.TaskSpec{
		{Name: "tls", Type: "command", Payload: payload, Timeout: "1m"},
	}})
	require.NoError(t, err)
	require.Len(t, resp.Tasks, 1)

	var task *api.Task
	err = cluster.Poll(ctx, 30*time.Second, 100*time.Millisecond, func() (bool, error) {
		task, err = c.client.GetTask(ctx, resp.Tasks[0].ID)
		return err == nil && api.Terminal(task.State), nil
	})
	require.NoError(t, err, "task did not finish")
	assert.Equal(t, api.StateSucceeded, task.State)
	assert.Equal(t, "tls-worker", task.WorkerID)

	// The same API without a token is rejected.
	anonymous := &api.Client{BaseURL: c.client.BaseURL, HTTP: c.client.HTTP}
	_, err = anonymous.ListTasks(ctx, "", "")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "401")
}

func TestWorkerPinnedToOtherCAFails(t *testing.T) {
	c := startTLSCluster(t)
	other, err := testcert.NewCA("other CA")
	require.NoError(t, err)
	otherFile := filepath.Join(c.dir, "other-ca.pem")
	require.NoError(t, os.WriteFile(otherFile, other.CertPEM, 0o644))
	w := c.startWorker("pinned-worker", otherFile)

	want := "certificate signed by unknown authority"
	err = cluster.Poll(context.Background(), 30*time.Second, 100*time.Millisecond, func() (bool, error) {
		return strings.Contains(w.Log(), want), nil
	})
	require.NoError(t, err, "worker log does not name the certificate problem:\n%s", tail(w.Log()))
	assert.Contains(t, w.Log(), fmt.Sprintf("not signed by a CA in coordinator.ca_file %s", otherFile))

	workers, err := c.client.ListWorkers(context.Background())
	require.NoError(t, err)
	assert.False(t, cluster.ConnectedWorkers(workers)["pinned-worker"])
}
