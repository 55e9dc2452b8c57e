package connector

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	wirepb "github.com/dtf-io/dtf/protocol/pb"
)

// recordingConn records each Write call. Only Write is implemented; the
// embedded nil net.Conn panics on any other method.
type recordingConn struct {
	net.Conn
	mu     sync.Mutex
	writes [][]byte
	err    error
}

func (c *recordingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	c.writes = append(c.writes, bytes.Clone(p))
	return len(p), nil
}

func (c *recordingConn) recorded() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, len(c.writes))
	for i, w := range c.writes {
		out[i] = string(w)
	}
	return out
}

func writeAll(t *testing.T, conn net.Conn, chunks ...string) {
	t.Helper()
	for _, chunk := range chunks {
		n, err := conn.Write([]byte(chunk))
		require.NoError(t, err)
		require.Equal(t, len(chunk), n)
	}
}

func TestCorkConnUncorkedWritesAtOnce(t *testing.T) {
	socket := &recordingConn{}
	conn := newCorkConn(socket)

	writeAll(t, conn, "ping", "frame")
	assert.Equal(t, []string{"ping", "frame"}, socket.recorded())
	assert.EqualValues(t, 2, conn.socketWrites.Load())
}

func TestCorkConnCoalescesBurst(t *testing.T) {
	socket := &recordingConn{}
	conn := newCorkConn(socket)

	conn.cork()
	writeAll(t, conn, "a", "bb", "ccc")
	assert.Empty(t, socket.recorded(), "a corked connection must not write before uncork")
	require.NoError(t, conn.uncork())
	assert.Equal(t, []string{"abbccc"}, socket.recorded())

	// After uncork the next write goes out on its own, at once.
	writeAll(t, conn, "lone")
	assert.Equal(t, []string{"abbccc", "lone"}, socket.recorded())
	require.NoError(t, conn.uncork(), "an uncork with an empty buffer writes nothing")
	assert.Len(t, socket.recorded(), 2)
}

func TestCorkConnBoundsBuffer(t *testing.T) {
	socket := &recordingConn{}
	conn := newCorkConn(socket)
	almostFull := string(bytes.Repeat([]byte("x"), maxCorkBytes-10))
	large := string(bytes.Repeat([]byte("y"), maxCorkBytes))

	conn.cork()
	writeAll(t, conn, almostFull, "twenty bytes of data")
	assert.Equal(t, []string{almostFull}, socket.recorded(), "a full buffer must be written before it grows")
	writeAll(t, conn, large)
	assert.Equal(t, []string{almostFull, "twenty bytes of data", large}, socket.recorded(),
		"a write of maxCorkBytes must follow the buffer straight to the socket")
	require.NoError(t, conn.uncork())
	assert.Len(t, socket.recorded(), 3)
}

func TestCorkConnUncorkReturnsWriteError(t *testing.T) {
	broken := errors.New("connection reset by peer")
	socket := &recordingConn{}
	conn := newCorkConn(socket)

	conn.cork()
	writeAll(t, conn, "frame")
	socket.err = broken
	assert.ErrorIs(t, conn.uncork(), broken)

	socket.err = nil
	require.NoError(t, conn.uncork(), "the failed bytes must not be written again")
	assert.Empty(t, socket.recorded())
}

// corkTestConfig keeps the heartbeat ticker quiet for the whole test, so
// no heartbeat write can push out bytes that a burst left behind.
const corkTestConfig = `{
	"heartbeat_interval": "1m",
	"heartbeat_timeout": "3m",
	"backoff_base": "10ms",
	"backoff_cap": "80ms",
	"dial_timeout": "1s",
	"handshake_timeout": "1s"
}`

func TestWriterBurstArrivesInOrder(t *testing.T) {
	fake := startFake(t, nil)
	h := startConnector(t, fake.url(), corkTestConfig)
	h.nextState(StateConnected)
	h.connector.mu.Lock()
	conn := h.connector.active.conn
	h.connector.mu.Unlock()

	const count = 600
	frames := make([][]byte, count)
	want := make([]string, count)
	for i := range frames {
		frames[i] = progressFrame(t, "t-1", i)
		want[i] = fmt.Sprintf("step %d", i)
	}
	writesBefore := conn.socketWrites.Load()
	resp := sendBatch(t, h.connector, 0, frames...)
	require.EqualValues(t, count, resp.GetAccepted())
	assert.Equal(t, want, receiveProgress(t, fake, count), "frames must arrive intact and in order")
	writes := conn.socketWrites.Load() - writesBefore
	t.Logf("%d socket writes for %d frames", writes, count)
	assert.Less(t, writes, int64(count/4),
		"frames queued together must share write calls: %d writes for %d frames", writes, count)

	// A lone frame after the burst is written without waiting for more.
	sendBatch(t, h.connector, 0, progressFrame(t, "t-1", count))
	assert.Equal(t, []string{fmt.Sprintf("step %d", count)}, receiveProgress(t, fake, 1))

	// So is a lone heartbeat reply, a session frame outside any burst.
	peer := fake.latest()
	require.NoError(t, peer.send(&wirepb.Frame{Body: &wirepb.Frame_Heartbeat{Heartbeat: &wirepb.Heartbeat{
		SentUnixNano: 777,
	}}}))
	select {
	case reply := <-peer.replies:
		assert.Equal(t, int64(777), reply.GetEchoUnixNano())
	case <-time.After(waitFor):
		t.Fatal("the worker's heartbeat reply never arrived")
	}
}
