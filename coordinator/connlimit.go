package coordinator

import (
	"fmt"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// maxTrackedAddresses bounds the buckets of addressLimiter. At the bound the
// limiter first drops the buckets that have refilled, because a full bucket
// behaves like a new one. If no room is left, a new address is admitted
// without a limit, and max_pending_handshakes still bounds its connections.
const maxTrackedAddresses = 1 << 16

// addressLimiter is a token bucket per remote address for new WebSocket
// connections. IPv6 addresses share the bucket of their /64, because one
// host usually holds a whole /64. Loopback addresses are not limited: they
// are local processes, or a reverse proxy on the same host whose address
// is the address of every client behind it. The zero value is ready to use.
type addressLimiter struct {
	mu      sync.Mutex
	buckets map[netip.Prefix]*addressBucket
}

type addressBucket struct {
	tokens float64
	last   time.Time
}

// allow takes a token of the bucket of remote, a host:port or a bare IP,
// at now. When none is left it returns false and the time until the next
// token. A loopback remote, and one that is not an IP address, is admitted.
func (l *addressLimiter) allow(remote string, perSecond, burst int, now time.Time) (bool, time.Duration) {
	key, ok := addressKey(remote)
	if !ok {
		return true, 0
	}
	rate, size := float64(perSecond), float64(burst)

	l.mu.Lock()
	defer l.mu.Unlock()
	if l.buckets == nil {
		l.buckets = map[netip.Prefix]*addressBucket{}
	}
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= maxTrackedAddresses && !l.sweepLocked(rate, size, now) {
			return true, 0
		}
		b = &addressBucket{tokens: size, last: now}
		l.buckets[key] = b
	}
	if elapsed := now.Sub(b.last).Seconds(); elapsed > 0 {
		b.tokens = min(size, b.tokens+elapsed*rate)
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	wait := time.Duration((1 - b.tokens) / rate * float64(time.Second))
	return false, wait
}

// sweepLocked drops the buckets that are full again at now and reports
// whether that made room for a new one. The caller holds l.mu.
func (l *addressLimiter) sweepLocked(rate, size float64, now time.Time) bool {
	for key, b := range l.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*rate >= size {
			delete(l.buckets, key)
		}
	}
	return len(l.buckets) < maxTrackedAddresses
}

// tracked returns the number of buckets, for tests.
func (l *addressLimiter) tracked() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// addressKey returns the bucket key of remote: the IPv4 address, or the
// /64 of an IPv6 address. It reports false for a loopback address and for
// a remote that is not an IP address.
func addressKey(remote string) (netip.Prefix, bool) {
	host := remote
	if h, _, err := net.SplitHostPort(remote); err == nil {
		host = h
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Prefix{}, false
	}
	addr = addr.Unmap().WithZone("")
	if addr.IsLoopback() {
		return netip.Prefix{}, false
	}
	bits := 32
	if addr.Is6() {
		bits = 64
	}
	prefix, err := addr.Prefix(bits)
	if err != nil {
		return netip.Prefix{}, false
	}
	return prefix, true
}

// allowConnection applies workers.connections_per_second_per_address to a
// new WebSocket connection. Over the limit it writes 429 with Retry-After
// in whole seconds, counts and logs the rejection, at most one line per
// second with the count of the others, and returns false.
func (s *Server) allowConnection(w http.ResponseWriter, r *http.Request) bool {
	now := time.Now()
	wc := s.cfg.Workers
	ok, wait := s.addressLimits.allow(r.RemoteAddr, wc.ConnectionsPerSecondPerAddress,
		wc.ConnectionBurstPerAddress, now)
	if ok {
		return true
	}
	retry := max(int(math.Ceil(wait.Seconds())), 1)
	s.metrics.connectionRejects[connectionAddressRate].Add(1)
	s.connLog.Warn(s.log, "address rate", "websocket upgrade rejected: connection rate of the address exceeded",
		"remote_addr", r.RemoteAddr, "connections_per_second_per_address", wc.ConnectionsPerSecondPerAddress,
		"connection_burst_per_address", wc.ConnectionBurstPerAddress)
	w.Header().Set("Retry-After", strconv.Itoa(retry))
	writeError(w, http.StatusTooManyRequests, "", fmt.Sprintf(
		"too many new connections from this address (workers.connections_per_second_per_address %d, "+
			"connection_burst_per_address %d); retry after %d s",
		wc.ConnectionsPerSecondPerAddress, wc.ConnectionBurstPerAddress, retry))
	return false
}
