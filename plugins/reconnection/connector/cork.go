package connector

import (
	"net"
	"sync"
	"sync/atomic"
)

// Bounds of one burst of queued task frames that the writer writes with
// the connection corked.
const (
	// maxBurstFrames bounds the frames of one burst, so heartbeats and
	// control messages queued for the writer wait for at most this many
	// frame encodings.
	maxBurstFrames = 128
	// maxCorkBytes bounds the bytes a corked connection collects before it
	// writes them, and a larger single write bypasses the buffer.
	maxCorkBytes = 64 << 10
)

// corkConn is the TCP connection under a session's WebSocket. gorilla/websocket
// v1.5.3 writes each message, and each control message of WriteControl, with
// its own Write on the net.Conn, which is one write system call per frame.
// While the writer drains a burst of queued frames it corks the connection:
// writes then collect in a buffer, and uncork writes the buffer with one call.
// An uncorked connection passes every Write straight to the socket, so a lone
// frame, a heartbeat or a control message is never held back.
//
// With wss, gorilla/websocket wraps this connection in a TLS client, so the
// buffer collects whole TLS records.
//
// Write is safe for concurrent use, because gorilla/websocket also writes
// from the reader's goroutine: it sends a close message when it reads a
// protocol error or a message over the read limit. Such a message written during a burst leaves when the
// burst ends.
type corkConn struct {
	net.Conn

	// socketWrites counts the Write calls on the socket.
	socketWrites atomic.Int64

	mu     sync.Mutex
	corked bool
	buf    []byte
}

func newCorkConn(conn net.Conn) *corkConn {
	return &corkConn{Conn: conn}
}

// Write buffers p while the connection is corked, and otherwise writes it
// to the socket. A corked Write that would take the buffer past
// maxCorkBytes first writes the buffer out, and one at least that large
// goes straight to the socket after it. The deadline of a buffered write
// is the one in force when the buffer is written.
func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.corked {
		return c.writeSocket(p)
	}
	if len(c.buf)+len(p) > maxCorkBytes {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
		if len(p) >= maxCorkBytes {
			return c.writeSocket(p)
		}
	}
	c.buf = append(c.buf, p...)
	return len(p), nil
}

// cork makes later writes collect in the buffer until uncork.
func (c *corkConn) cork() {
	c.mu.Lock()
	c.corked = true
	c.mu.Unlock()
}

// uncork writes what the buffer collected and passes later writes straight
// to the socket. It returns the error of that write. The buffered bytes
// are dropped either way, because a failed write ends the connection, and
// the replay buffer still contains every task frame in them.
func (c *corkConn) uncork() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked = false
	return c.flushLocked()
}

func (c *corkConn) flushLocked() error {
	if len(c.buf) == 0 {
		return nil
	}
	_, err := c.writeSocket(c.buf)
	c.buf = c.buf[:0]
	return err
}

func (c *corkConn) writeSocket(p []byte) (int, error) {
	c.socketWrites.Add(1)
	return c.Conn.Write(p)
}
