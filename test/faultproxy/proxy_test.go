package faultproxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitFor bounds every wait on the proxy in these tests.
const waitFor = 5 * time.Second

// echoServer is a TCP server on 127.0.0.1 that writes back what it reads.
type echoServer struct {
	listener net.Listener
	mu       sync.Mutex
	conns    []net.Conn
	wg       sync.WaitGroup
}

func startEcho(t *testing.T) *echoServer {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &echoServer{listener: listener}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			conn, err := listener.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, conn)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				_, _ = io.Copy(conn, conn)
				_ = conn.Close()
			}()
		}
	}()
	t.Cleanup(func() {
		_ = listener.Close()
		s.mu.Lock()
		for _, c := range s.conns {
			_ = c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *echoServer) addr() string { return s.listener.Addr().String() }

func startProxy(t *testing.T, target string) *Proxy {
	t.Helper()
	p, err := New(target)
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func dial(t *testing.T, p *Proxy) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", p.Addr(), waitFor)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// roundTrip writes msg and reads the echo within waitFor.
func roundTrip(conn net.Conn, msg string) (string, error) {
	if err := conn.SetDeadline(time.Now().Add(waitFor)); err != nil {
		return "", err
	}
	if _, err := conn.Write([]byte(msg)); err != nil {
		return "", err
	}
	buf := make([]byte, len(msg))
	_, err := io.ReadFull(conn, buf)
	return string(buf), err
}

// readErr returns the error that ends a read on conn, waiting at most
// waitFor.
func readErr(t *testing.T, conn net.Conn) error {
	t.Helper()
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(waitFor)))
	buf := make([]byte, 64)
	for {
		_, err := conn.Read(buf)
		if err != nil {
			return err
		}
	}
}

// dialErr returns the error that ends a new connection through p. On
// loopback the proxy may reset the connection before the client's connect
// call returns, and then the dial's own error is returned. Otherwise it is
// the read error.
func dialErr(t *testing.T, p *Proxy) error {
	t.Helper()
	conn, err := net.DialTimeout("tcp", p.Addr(), waitFor)
	if err != nil {
		return err
	}
	defer conn.Close()
	return readErr(t, conn)
}

func TestNewInvalidTarget(t *testing.T) {
	_, err := New("no-port")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no-port")
	assert.Contains(t, err.Error(), "host:port")
}

func TestProxyForwards(t *testing.T) {
	p := startProxy(t, startEcho(t).addr())
	conn := dial(t, p)

	got, err := roundTrip(conn, "hello")
	require.NoError(t, err)
	assert.Equal(t, "hello", got)
	assert.Equal(t, 1, p.Connections())
	assert.Equal(t, uint64(1), p.Accepted())
}

func TestProxyCut(t *testing.T) {
	p := startProxy(t, startEcho(t).addr())
	conn := dial(t, p)
	_, err := roundTrip(conn, "before")
	require.NoError(t, err)

	assert.Equal(t, 1, p.Cut())
	assert.ErrorIs(t, readErr(t, conn), io.EOF)
	require.Eventually(t, func() bool { return p.Connections() == 0 }, waitFor, 5*time.Millisecond)

	// A cut does not stop new connections.
	got, err := roundTrip(dial(t, p), "after")
	require.NoError(t, err)
	assert.Equal(t, "after", got)
}

func TestProxyReset(t *testing.T) {
	p := startProxy(t, startEcho(t).addr())
	conn := dial(t, p)
	_, err := roundTrip(conn, "before")
	require.NoError(t, err)

	assert.Equal(t, 1, p.Reset())
	assert.ErrorIs(t, readErr(t, conn), syscall.ECONNRESET)
}

func TestProxyRefuse(t *testing.T) {
	p := startProxy(t, startEcho(t).addr())
	open := dial(t, p)
	_, err := roundTrip(open, "open")
	require.NoError(t, err)

	p.Refuse(true)
	err = dialErr(t, p)
	assert.True(t, errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF), "got %v", err)
	require.Eventually(t, func() bool { return p.Stats().Rejected == 1 }, waitFor, 5*time.Millisecond)

	// Connections opened before are not touched.
	got, err := roundTrip(open, "still")
	require.NoError(t, err)
	assert.Equal(t, "still", got)

	p.Refuse(false)
	got, err = roundTrip(dial(t, p), "again")
	require.NoError(t, err)
	assert.Equal(t, "again", got)
}

func TestProxyDown(t *testing.T) {
	p := startProxy(t, startEcho(t).addr())
	conn := dial(t, p)
	_, err := roundTrip(conn, "before")
	require.NoError(t, err)

	p.Down(time.Second)
	assert.ErrorIs(t, readErr(t, conn), io.EOF)
	assert.Error(t, dialErr(t, p), "a new connection must be rejected while down")
	assert.Equal(t, uint64(1), p.Stats().Rejected)

	// The outage ends by itself: a new connection works again.
	require.Eventually(t, func() bool {
		c, err := net.DialTimeout("tcp", p.Addr(), waitFor)
		if err != nil {
			return false
		}
		defer c.Close()
		got, err := roundTrip(c, "back")
		return err == nil && got == "back"
	}, waitFor, 20*time.Millisecond)
}

func TestProxyBlackhole(t *testing.T) {
	p := startProxy(t, startEcho(t).addr())
	conn := dial(t, p)
	_, err := roundTrip(conn, "before")
	require.NoError(t, err)

	p.Blackhole(true)
	_, err = conn.Write([]byte("held"))
	require.NoError(t, err)

	// Nothing comes back while the blackhole is on, and the socket stays
	// open: the read times out instead of failing.
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(200*time.Millisecond)))
	buf := make([]byte, 4)
	_, err = conn.Read(buf)
	var netErr net.Error
	require.ErrorAs(t, err, &netErr)
	assert.True(t, netErr.Timeout(), "read must time out, got %v", err)
	assert.Equal(t, 1, p.Connections())

	// Held bytes are delivered once the blackhole ends.
	p.Blackhole(false)
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(waitFor)))
	_, err = io.ReadFull(conn, buf)
	require.NoError(t, err)
	assert.Equal(t, "held", string(buf))
}

func TestProxyDelay(t *testing.T) {
	p := startProxy(t, startEcho(t).addr())
	conn := dial(t, p)
	const delay = 100 * time.Millisecond
	p.Delay(delay)

	start := time.Now()
	got, err := roundTrip(conn, "slow")
	require.NoError(t, err)
	assert.Equal(t, "slow", got)
	assert.GreaterOrEqual(t, time.Since(start), 2*delay)

	p.Delay(0)
	got, err = roundTrip(conn, "fast")
	require.NoError(t, err)
	assert.Equal(t, "fast", got)
}

func TestProxyThrottle(t *testing.T) {
	p := startProxy(t, startEcho(t).addr())
	conn := dial(t, p)
	const rate = 20000
	p.Throttle(rate)

	msg := strings.Repeat("x", 10000)
	start := time.Now()
	got, err := roundTrip(conn, msg)
	require.NoError(t, err)
	assert.Equal(t, msg, got)

	// 10000 bytes at 20000 B/s take 500ms per direction; the two directions
	// overlap, and the last slice of 1000 bytes is not waited for.
	assert.GreaterOrEqual(t, time.Since(start), 400*time.Millisecond)
}

func TestProxyCloseAfterUpgrade(t *testing.T) {
	var handlers sync.WaitGroup
	upgrader := websocket.Upgrader{}
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		handlers.Add(1)
		defer handlers.Done()
		ws, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		_ = ws.SetReadDeadline(time.Now().Add(waitFor))
		for {
			if _, _, err := ws.ReadMessage(); err != nil {
				return
			}
		}
	}))
	defer func() {
		server.Close()
		handlers.Wait()
	}()

	p := startProxy(t, strings.TrimPrefix(server.URL, "http://"))
	p.CloseAfterUpgrade(true)

	dialer := websocket.Dialer{HandshakeTimeout: waitFor}
	ws, resp, err := dialer.Dial("ws://"+p.Addr()+"/", nil)
	require.NoError(t, err, "the upgrade response must reach the client")
	defer ws.Close()
	assert.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)

	require.NoError(t, ws.SetReadDeadline(time.Now().Add(waitFor)))
	_, _, err = ws.ReadMessage()
	var closeErr *websocket.CloseError
	require.ErrorAs(t, err, &closeErr)
	assert.Equal(t, websocket.CloseAbnormalClosure, closeErr.Code)
	require.Eventually(t, func() bool { return p.Connections() == 0 }, waitFor, 5*time.Millisecond)
}

func TestProxyHeaderEndAcrossChunks(t *testing.T) {
	p := &Proxy{settings: settings{closeAfterUpgrade: true, changed: make(chan struct{})}}

	data, done, closeAfter := p.scanUpgrade([]byte("OK\r\n\r"), []byte("\nbody"))
	assert.Equal(t, []byte("\n"), data)
	assert.True(t, done)
	assert.True(t, closeAfter)

	data, done, closeAfter = p.scanUpgrade(nil, []byte("HTTP/1.1 101\r\n"))
	assert.Equal(t, []byte("HTTP/1.1 101\r\n"), data)
	assert.False(t, done)
	assert.False(t, closeAfter)
}

func TestProxyTargetDown(t *testing.T) {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	// Close the target only after the proxy holds its own port, so the
	// proxy cannot be given the freed port and dial itself.
	p := startProxy(t, listener.Addr().String())
	require.NoError(t, listener.Close())
	assert.Error(t, dialErr(t, p))
	require.Eventually(t, func() bool { return p.Stats().DialFailed == 1 }, waitFor, 5*time.Millisecond)
}

func TestProxyCloseStopsEverything(t *testing.T) {
	p, err := New(startEcho(t).addr())
	require.NoError(t, err)
	p.Blackhole(true)
	p.Delay(time.Second)
	p.Down(time.Hour)
	p.Refuse(false)

	conns := make([]net.Conn, 3)
	for i := range conns {
		conns[i] = dial(t, p)
		_, err := conns[i].Write(bytes.Repeat([]byte("z"), 100))
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { return p.Connections() == 3 }, waitFor, 5*time.Millisecond)

	require.NoError(t, p.Close())
	assert.Equal(t, 0, p.Connections())
	for _, c := range conns {
		assert.Error(t, readErr(t, c))
	}
	_, err = net.DialTimeout("tcp", p.Addr(), waitFor)
	assert.Error(t, err, "the listener must be closed")
}
