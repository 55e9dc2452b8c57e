package sdktest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dtf-io/dtf/sdk"
)

// queueConnector accepts frames into a bounded queue and echoes each one
// back as a received frame on its event stream.
type queueConnector struct {
	limit int

	mu         sync.Mutex
	configured []sdk.ConnectorConfig
	queued     [][]byte
	open       bool
	echo       chan []byte
	stopped    chan struct{}
	stopOnce   sync.Once
}

func newQueueConnector(limit int) *queueConnector {
	return &queueConnector{limit: limit, echo: make(chan []byte, 16), stopped: make(chan struct{})}
}

func (c *queueConnector) Info() sdk.Info { return sdk.Info{Name: "queue", Version: "v0.0.1"} }

func (c *queueConnector) Configure(_ context.Context, cfg sdk.ConnectorConfig) error {
	if cfg.URL == "" {
		return &sdk.ConfigError{Problems: []sdk.ConfigProblem{{Summary: "Missing URL", Detail: "url is empty"}}}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.configured = append(c.configured, cfg)
	return nil
}

func (c *queueConnector) Events(ctx context.Context, send func(sdk.ConnectorEvent) error) error {
	c.mu.Lock()
	c.open = true
	c.mu.Unlock()
	if err := send(sdk.ConnectorEvent{State: &sdk.StateChange{State: sdk.StateConnected, SessionID: "s1"}}); err != nil {
		return err
	}
	if err := send(sdk.ConnectorEvent{Stats: &sdk.ConnectorStats{Connected: true, FramesIn: 1}}); err != nil {
		return err
	}
	for {
		select {
		case frame := <-c.echo:
			if err := send(sdk.ConnectorEvent{Frame: frame}); err != nil {
				return err
			}
		case <-c.stopped:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (c *queueConnector) Send(ctx context.Context, frame []byte) error {
	_, err := c.SendBatch(ctx, [][]byte{frame})
	return err
}

func (c *queueConnector) SendBatch(_ context.Context, frames [][]byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, frame := range frames {
		switch {
		case !c.open:
			return i, fmt.Errorf("no session: %w", sdk.ErrUnavailable)
		case len(frame) == 0:
			return i, fmt.Errorf("frame %d is empty: %w", i, sdk.ErrInvalidFrame)
		case len(c.queued) >= c.limit:
			return i, errors.New("send queue full")
		}
		c.queued = append(c.queued, frame)
		c.echo <- frame
	}
	return len(frames), nil
}

func (c *queueConnector) Stop(context.Context) error {
	c.stopOnce.Do(func() { close(c.stopped) })
	return nil
}

// exportingConnector adds the session handover.
type exportingConnector struct {
	*queueConnector
}

func (c exportingConnector) Export(context.Context) (sdk.SessionHandover, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return sdk.SessionHandover{SessionID: "s1", NextSeq: 9, Received: 4, Queued: c.queued}, nil
}

func TestConnectorHarnessConfigure(t *testing.T) {
	c := newQueueConnector(4)
	h := NewConnector(t, c)
	ctx := context.Background()
	cfg := sdk.ConnectorConfig{
		URL: "ws://127.0.0.1:1/ws", WorkerID: "w1", SecretFile: "/tmp/secret", TaskTypes: []string{"echo"},
		Slots: 3, Labels: map[string]string{"zone": "a"}, HostVersion: "v1", Config: json.RawMessage(`{"x":1}`),
		Plugins: []sdk.HostPlugin{{Name: "metrics", Kind: "metrics", Version: "v2", APIVersion: 1}},
		Resume:  &sdk.SessionHandover{SessionID: "old", NextSeq: 5, Received: 2, Queued: [][]byte{[]byte("q")}},
	}
	require.NoError(t, h.Configure(ctx, cfg))
	require.Len(t, c.configured, 1)
	assert.Equal(t, cfg, c.configured[0])

	err := h.Configure(ctx, sdk.ConnectorConfig{})
	var configErr *sdk.ConfigError
	require.ErrorAs(t, err, &configErr)
	assert.Equal(t, "url is empty", configErr.Problems[0].Detail)
}

func TestConnectorHarnessEventsAndSend(t *testing.T) {
	c := newQueueConnector(2)
	h := NewConnector(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	err := h.Send(ctx, []byte("early"))
	assert.Equal(t, codes.Unavailable, status.Code(err), "Send before Events has no session")

	stream, err := h.Events(ctx)
	require.NoError(t, err)
	defer stream.Close()
	event, err := stream.Next()
	require.NoError(t, err)
	require.NotNil(t, event.State)
	assert.Equal(t, sdk.StateConnected, event.State.State)
	assert.Equal(t, "s1", event.State.SessionID)
	event, err = stream.Next()
	require.NoError(t, err)
	require.NotNil(t, event.Stats)
	assert.Equal(t, uint64(1), event.Stats.FramesIn)

	require.NoError(t, h.Send(ctx, []byte("one")))
	accepted, err := h.SendBatch(ctx, [][]byte{[]byte("two"), []byte("three")}, time.Second)
	assert.Equal(t, 1, accepted, "the queue holds two frames")
	assert.Equal(t, codes.Internal, status.Code(err))
	assert.Contains(t, status.Convert(err).Message(), "send queue full")

	for _, want := range []string{"one", "two"} {
		event, err = stream.Next()
		require.NoError(t, err)
		assert.Equal(t, want, string(event.Frame))
	}

	require.NoError(t, h.Stop(ctx))
	_, err = stream.Next()
	assert.ErrorIs(t, err, io.EOF, "Stop ends the stream cleanly")
}

func TestConnectorHarnessInvalidFrame(t *testing.T) {
	c := newQueueConnector(4)
	h := NewConnector(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := h.Events(ctx)
	require.NoError(t, err)
	defer stream.Close()
	_, err = stream.Next()
	require.NoError(t, err)

	accepted, err := h.SendBatch(ctx, [][]byte{[]byte("a"), {}}, time.Second)
	assert.Equal(t, 1, accepted)
	assert.Equal(t, codes.InvalidArgument, status.Code(err))
}

func TestConnectorHarnessExport(t *testing.T) {
	ctx := context.Background()
	plain := NewConnector(t, newQueueConnector(1))
	_, err := plain.Export(ctx)
	assert.Equal(t, codes.Unimplemented, status.Code(err))

	h := NewConnector(t, exportingConnector{newQueueConnector(1)})
	handover, err := h.Export(ctx)
	require.NoError(t, err)
	assert.Equal(t, "s1", handover.SessionID)
	assert.Equal(t, uint64(9), handover.NextSeq)
	assert.Equal(t, uint64(4), handover.Received)
}
