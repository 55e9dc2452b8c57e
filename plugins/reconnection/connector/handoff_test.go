package connector

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/plugin/pb"
)

// A frame that the connection read while the host was not taking events
// is not acknowledged when the connection ends before the host takes it,
// so the resumed session replays it: the host gets every frame once.
func TestFrameNotTakenByHostIsReplayed(t *testing.T) {
	fake := resumableFake(t)
	proxy := startProxy(t, fake.addr())

	c := New(Options{Logger: testLogger(), Version: "test", Rand: rand.New(rand.NewPCG(1, 2))})
	_, err := c.Configure(context.Background(), connectorConfig("ws://"+proxy.Addr(), fastConfig))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	// frames is unbuffered: the host takes a frame only when the test
	// reads it, so the connector's event queue fills up.
	h := &harness{
		t: t, connector: c, cancel: cancel, done: make(chan error, 1),
		stream: &eventStream{ctx: ctx, states: make(chan *pb.StateChange, 1024), frames: make(chan []byte),
			stats: make(chan *pb.ConnectorStats, 1024)},
	}
	go func() { h.done <- c.Events(&pb.Empty{}, h.stream) }()
	t.Cleanup(h.stop)
	h.nextState(StateConnected)

	// More frames than the event queue holds, so the reader blocks on one.
	const frames = eventQueue + 40
	for n := range frames {
		require.NoError(t, fake.sendTask(assignFrame(n)))
	}
	require.Eventually(t, func() bool { return len(c.loopEvents()) == eventQueue }, waitFor, 10*time.Millisecond,
		"the event queue did not fill")

	// The connection ends while the reader waits to hand on a frame. The
	// state changes queue behind the frames, so the test waits for the
	// session to end instead.
	proxy.Cut()
	require.Eventually(t, func() bool { return !c.connected() }, waitFor, 10*time.Millisecond,
		"the session did not end after the cut")

	for n := range frames {
		frame := h.nextFrame()
		require.Equal(t, fmt.Sprintf("t-%d", n), frame.GetAssign().GetRef().GetTaskId(), "frame %d", n)
	}
	h.nextState(StateConnected)
	assert.Empty(t, h.stream.frames, "the worker host received a frame twice")
}

// loopEvents returns the event queue of the running Events stream.
func (c *Connector) loopEvents() chan *pb.ConnectorEvent {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.loop == nil {
		return nil
	}
	return c.loop.events
}

// connected reports whether a welcomed session is active.
func (c *Connector) connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.active != nil
}
