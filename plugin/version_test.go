package plugin

import (
	"bytes"
	"context"
	"errors"
	"testing"

	goplugin "github.com/hashicorp/go-plugin"
	"github.com/stretchr/testify/assert"

	"github.com/dtf-io/dtf/plugin/pb"
)

func TestVersionRequested(t *testing.T) {
	cases := []struct {
		args []string
		want bool
	}{
		{nil, false},
		{[]string{"-version"}, true},
		{[]string{"--version"}, true},
		{[]string{"--version", "extra"}, true},
		{[]string{"-v"}, false},
		{[]string{"-config", "-version"}, false},
	}
	for _, tc := range cases {
		assert.Equal(t, tc.want, VersionRequested(tc.args), "args %q", tc.args)
	}
}

func TestVersionLine(t *testing.T) {
	assert.Equal(t, "hello 0.1.0 (plugin kind executor, plugin API version 1)",
		VersionLine("hello", "0.1.0", KindExecutor, []int{1}))
	assert.Equal(t, "reconnection unknown (plugin kind connector, plugin API versions 1, 2, wire protocol dtf.v1)",
		VersionLine("reconnection", "", KindConnector, []int{1, 2}, "wire protocol dtf.v1"))
}

// infoExecutor is an executor server whose Info returns info or err.
type infoExecutor struct {
	pb.UnimplementedExecutorServer
	info *pb.PluginInfo
	err  error
}

func (e infoExecutor) Info(context.Context, *pb.Empty) (*pb.PluginInfo, error) {
	return e.info, e.err
}

func TestPrintVersion(t *testing.T) {
	versions := map[int]goplugin.PluginSet{2: nil, 1: nil}
	var stdout, stderr bytes.Buffer
	p := &ExecutorPlugin{Impl: infoExecutor{info: &pb.PluginInfo{Name: "hello", Version: "0.2.0"}}}
	code := printVersion(&stdout, &stderr, KindExecutor, p, versions, nil)
	assert.Equal(t, 0, code)
	assert.Equal(t, "hello 0.2.0 (plugin kind executor, plugin API versions 1, 2)\n", stdout.String())
	assert.Empty(t, stderr.String())

	stdout.Reset()
	p = &ExecutorPlugin{Impl: infoExecutor{err: errors.New("not ready")}}
	code = printVersion(&stdout, &stderr, KindExecutor, p, versions, nil)
	assert.Equal(t, 1, code)
	assert.Empty(t, stdout.String())
	assert.Contains(t, stderr.String(), "not ready")
}
