// Package faultproxy is a TCP proxy for tests that sits between a worker and
// the coordinator and injects network faults on command. The faults are
// cuts, resets, rejected connections, blackholes (open sockets that carry
// nothing), latency, throttling and a close right after the WebSocket
// upgrade.
//
// Faults act on the connection only; neither endpoint process is paused.
// The proxy listens on 127.0.0.1 and forwards to one target address.
package faultproxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// chunkBytes is the size of one read from either side. Faults apply per
// chunk, so a delay or a blackhole never splits or reorders bytes.
const chunkBytes = 32 << 10

// queueChunks bounds the chunks read from one side and not yet written to
// the other, so a blackholed or throttled link holds at most
// queueChunks*chunkBytes bytes per direction in the proxy. Beyond that the
// kernel buffers fill and the sender's writes block, as on a real link.
const queueChunks = 16

// dialTimeout bounds the connection to the target for each accepted client.
const dialTimeout = 5 * time.Second

// headerEnd ends the HTTP response headers of the WebSocket upgrade.
var headerEnd = []byte("\r\n\r\n")

// Stats counts the connections the proxy has seen since it started.
type Stats struct {
	// Accepted counts client connections accepted by the listener, including
	// those rejected afterwards.
	Accepted uint64
	// Rejected counts client connections closed at once because the proxy was
	// rejecting new connections (Refuse or Down).
	Rejected uint64
	// DialFailed counts client connections closed because the target could
	// not be reached.
	DialFailed uint64
	// Active is the number of connections being forwarded now.
	Active int
}

// settings are the fault modes in force. Every change replaces changed, so a
// pump that waits for a mode to end wakes up on each change.
type settings struct {
	refuse            bool
	blackhole         bool
	delay             time.Duration
	bytesPerSec       int
	closeAfterUpgrade bool
	changed           chan struct{}
}

// Proxy forwards TCP connections from its listener to a target address and
// injects faults. All methods are safe for concurrent use.
type Proxy struct {
	target   string
	listener net.Listener

	mu        sync.Mutex
	settings  settings
	links     map[*link]struct{}
	stats     Stats
	downTimer *time.Timer
	closed    bool

	wg sync.WaitGroup
}

// New starts a proxy on 127.0.0.1 with a free port in front of target, a
// host:port address. Close stops it.
func New(target string) (*Proxy, error) {
	if _, _, err := net.SplitHostPort(target); err != nil {
		return nil, fmt.Errorf("invalid proxy target %q: %w; use host:port, for example 127.0.0.1:7070",
			target, err)
	}
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen for fault proxy on 127.0.0.1: %w", err)
	}
	p := &Proxy{
		target:   target,
		listener: listener,
		settings: settings{changed: make(chan struct{})},
		links:    make(map[*link]struct{}),
	}
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// Addr returns the proxy's listening address as host:port.
func (p *Proxy) Addr() string {
	return p.listener.Addr().String()
}

// Cut closes both sides of every open connection with a normal TCP close.
// New connections are still accepted and forwarded. It returns the number of
// connections closed.
func (p *Proxy) Cut() int {
	return p.closeLinks(false)
}

// Reset closes both sides of every open connection with a TCP RST, by
// setting SO_LINGER to zero before the close. It returns the number of
// connections reset.
func (p *Proxy) Reset() int {
	return p.closeLinks(true)
}

// Refuse sets whether new connections are rejected. While on, each new client
// connection is accepted and reset at once, so the client's upgrade request
// fails. Open connections are not touched. The listener stays open, which
// keeps the port reserved for the proxy.
func (p *Proxy) Refuse(on bool) {
	p.update(func(s *settings) { s.refuse = on })
}

// Down cuts every open connection and rejects new ones for d, as if the
// target went away and came back. A later Down or Refuse call replaces the
// pending end of the outage.
func (p *Proxy) Down(d time.Duration) {
	p.mu.Lock()
	if p.downTimer != nil {
		p.downTimer.Stop()
	}
	p.downTimer = time.AfterFunc(d, func() { p.Refuse(false) })
	p.mu.Unlock()

	p.Refuse(true)
	p.Cut()
}

// Blackhole sets whether open and new connections forward nothing in either
// direction. The sockets stay open and bytes already read are held, not
// dropped, as on a link where packets vanish and TCP keeps retransmitting.
// When the blackhole ends, held bytes are delivered in order.
func (p *Proxy) Blackhole(on bool) {
	p.update(func(s *settings) { s.blackhole = on })
}

// Delay sets the latency added to each chunk in each direction, and zero
// removes it. A chunk read at time t is written at t+d or later, so a round
// trip through the proxy takes at least 2*d.
func (p *Proxy) Delay(d time.Duration) {
	p.update(func(s *settings) { s.delay = d })
}

// Throttle limits each direction of each connection to bytesPerSec bytes per
// second. Zero or less removes the limit.
func (p *Proxy) Throttle(bytesPerSec int) {
	p.update(func(s *settings) { s.bytesPerSec = bytesPerSec })
}

// CloseAfterUpgrade sets whether a connection is closed right after the
// target's HTTP response headers reach the client. The client then sees a
// successful WebSocket upgrade followed by a closed connection. It applies
// to each connection whose response headers arrive while it is on.
func (p *Proxy) CloseAfterUpgrade(on bool) {
	p.update(func(s *settings) { s.closeAfterUpgrade = on })
}

// Connections returns the number of connections being forwarded now.
func (p *Proxy) Connections() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.links)
}

// Accepted returns the number of client connections accepted so far,
// including those rejected afterwards.
func (p *Proxy) Accepted() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats.Accepted
}

// Stats returns the connection counters.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	stats := p.stats
	stats.Active = len(p.links)
	return stats
}

// Close stops the listener, closes every connection and waits until all of
// the proxy's goroutines have returned.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	if p.downTimer != nil {
		p.downTimer.Stop()
	}
	p.mu.Unlock()

	err := p.listener.Close()
	p.closeLinks(false)
	p.wg.Wait()
	return err
}

// update applies change to the settings and wakes every pump waiting on the
// previous settings.
func (p *Proxy) update(change func(*settings)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	change(&p.settings)
	close(p.settings.changed)
	p.settings.changed = make(chan struct{})
}

func (p *Proxy) current() settings {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.settings
}

func (p *Proxy) closeLinks(reset bool) int {
	p.mu.Lock()
	links := make([]*link, 0, len(p.links))
	for l := range p.links {
		links = append(links, l)
	}
	p.mu.Unlock()

	for _, l := range links {
		l.close(reset)
	}
	return len(links)
}

// acceptLoop runs until the listener is closed.
func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		client, err := p.listener.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Accept errors other than a closed listener are transient, for
			// example a connection reset before it was accepted, or running
			// out of file descriptors. The pause keeps the latter from
			// spinning.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		p.admit(client)
	}
}

// admit rejects or connects one client connection.
func (p *Proxy) admit(client net.Conn) {
	p.mu.Lock()
	p.stats.Accepted++
	if p.closed || p.settings.refuse {
		p.stats.Rejected++
		p.mu.Unlock()
		resetConn(client)
		return
	}
	p.mu.Unlock()

	server, err := net.DialTimeout("tcp", p.target, dialTimeout)
	if err != nil {
		p.mu.Lock()
		p.stats.DialFailed++
		p.mu.Unlock()
		resetConn(client)
		return
	}

	l := &link{client: client, server: server, done: make(chan struct{})}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		l.close(false)
		return
	}
	p.links[l] = struct{}{}
	p.wg.Add(1)
	p.mu.Unlock()

	go p.forward(l)
}

// forward runs the two directions of one link and removes it when both
// have ended.
func (p *Proxy) forward(l *link) {
	defer p.wg.Done()
	var directions sync.WaitGroup
	directions.Add(2)
	go func() {
		defer directions.Done()
		p.pump(l, l.client, l.server, false)
	}()
	go func() {
		defer directions.Done()
		p.pump(l, l.server, l.client, true)
	}()
	directions.Wait()
	l.close(false)

	p.mu.Lock()
	delete(p.links, l)
	p.mu.Unlock()
}

// pump copies one direction of a link. A reader goroutine fills a bounded
// queue so that latency applies per chunk without limiting throughput to
// one chunk per delay. fromServer marks the direction that carries the
// upgrade response.
func (p *Proxy) pump(l *link, src, dst net.Conn, fromServer bool) {
	queue := make(chan chunk, queueChunks)
	go readChunks(l, src, queue)

	// On an early return the link is closed, which ends the reader; draining
	// the queue waits for it, so no goroutine outlives the link.
	drained := false
	defer func() {
		if !drained {
			l.close(false)
			for range queue {
			}
		}
	}()

	// Bytes of the previous chunk kept to find a header end split across
	// chunks.
	var tail []byte
	upgraded := !fromServer
	for c := range queue {
		if !p.hold(l, c.readAt) {
			return
		}
		data := c.data
		closeAfter := false
		if !upgraded {
			data, upgraded, closeAfter = p.scanUpgrade(tail, data)
			tail = lastBytes(append(tail, c.data...), len(headerEnd)-1)
		}
		if err := p.write(l, dst, data); err != nil {
			return
		}
		if closeAfter {
			return
		}
	}

	// The source sent EOF or failed. Pass a clean EOF on as a half close so
	// the other direction can finish, and end the link on any other error.
	drained = true
	if l.readErr(src) == nil {
		if tcp, ok := dst.(*net.TCPConn); ok {
			_ = tcp.CloseWrite()
			return
		}
	}
	l.close(false)
}

// scanUpgrade returns the part of data to forward, whether the response
// headers are complete, and whether the link must close after the write.
func (p *Proxy) scanUpgrade(tail, data []byte) ([]byte, bool, bool) {
	joined := append(append([]byte{}, tail...), data...)
	end := bytes.Index(joined, headerEnd)
	if end < 0 {
		return data, false, false
	}
	if !p.current().closeAfterUpgrade {
		return data, true, false
	}
	cut := end + len(headerEnd) - len(tail)
	return data[:cut], true, true
}

// hold waits until the chunk read at readAt may be written: no blackhole is
// in force and the delay has passed. It returns false when the link closed.
func (p *Proxy) hold(l *link, readAt time.Time) bool {
	for {
		s := p.current()
		if s.blackhole {
			select {
			case <-s.changed:
				continue
			case <-l.done:
				return false
			}
		}
		wait := time.Until(readAt.Add(s.delay))
		if wait <= 0 {
			return true
		}
		timer := time.NewTimer(wait)
		select {
		case <-timer.C:
			return true
		case <-s.changed:
			timer.Stop()
		case <-l.done:
			timer.Stop()
			return false
		}
	}
}

// write sends data to dst, in slices paced to the throttle when one is set.
func (p *Proxy) write(l *link, dst net.Conn, data []byte) error {
	for len(data) > 0 {
		rate := p.current().bytesPerSec
		if rate <= 0 {
			_, err := dst.Write(data)
			return err
		}

		// Twenty slices a second keep the pacing smooth without a timer
		// per byte.
		size := max(rate/20, 1)
		size = min(size, len(data))
		if _, err := dst.Write(data[:size]); err != nil {
			return err
		}
		data = data[size:]

		pause := time.Duration(float64(size) / float64(rate) * float64(time.Second))
		timer := time.NewTimer(pause)
		select {
		case <-timer.C:
		case <-l.done:
			timer.Stop()
			return net.ErrClosed
		}
	}
	return nil
}

func lastBytes(b []byte, n int) []byte {
	if len(b) <= n {
		return b
	}
	return append([]byte{}, b[len(b)-n:]...)
}

// chunk is one read from a connection and the time it was read.
type chunk struct {
	data   []byte
	readAt time.Time
}

// readChunks reads src into queue until an error, records the error on the
// link and closes queue.
func readChunks(l *link, src net.Conn, queue chan<- chunk) {
	defer close(queue)
	for {
		buf := make([]byte, chunkBytes)
		n, err := src.Read(buf)
		if n > 0 {
			select {
			case queue <- chunk{data: buf[:n], readAt: time.Now()}:
			case <-l.done:
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				l.setReadErr(src, err)
			}
			return
		}
	}
}

// link is one proxied connection: the accepted client side and the dialed
// server side.
type link struct {
	client net.Conn
	server net.Conn
	done   chan struct{}

	once sync.Once
	mu   sync.Mutex
	errs map[net.Conn]error
}

// close closes both sides once. With reset, each side gets a TCP RST.
func (l *link) close(reset bool) {
	l.once.Do(func() {
		close(l.done)
		if reset {
			resetConn(l.client)
			resetConn(l.server)
			return
		}
		_ = l.client.Close()
		_ = l.server.Close()
	})
}

func (l *link) setReadErr(c net.Conn, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.errs == nil {
		l.errs = make(map[net.Conn]error)
	}
	l.errs[c] = err
}

func (l *link) readErr(c net.Conn) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.errs[c]
}

// resetConn closes c so that the peer receives a TCP RST instead of a FIN.
func resetConn(c net.Conn) {
	if tcp, ok := c.(*net.TCPConn); ok {
		_ = tcp.SetLinger(0)
	}
	_ = c.Close()
}
