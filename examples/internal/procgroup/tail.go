package procgroup

import "sync"

// Tail is an io.Writer that keeps only the last Max bytes written to it, so a
// chatty child process cannot grow the executor's memory. Its storage grows
// with the data up to Max and is then reused as a ring. It is safe for
// concurrent use.
type Tail struct {
	max   int
	mu    sync.Mutex
	buf   []byte
	start int   // index of the oldest byte once buf is full
	total int64 // bytes written since creation
}

// NewTail returns a Tail that keeps the last max bytes; max below 1 keeps
// nothing but still counts the bytes written.
func NewTail(max int) *Tail {
	if max < 0 {
		max = 0
	}
	return &Tail{max: max}
}

// Write stores p, dropping the oldest bytes beyond the limit. It always
// returns len(p) and a nil error.
func (t *Tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()

	n := len(p)
	t.total += int64(n)
	if t.max == 0 {
		return n, nil
	}

	// Only the last max bytes of p can survive.
	if len(p) >= t.max {
		p = p[len(p)-t.max:]
		t.buf = append(t.buf[:0], p...)
		t.start = 0
		return n, nil
	}

	// Grow until full, then overwrite the oldest bytes in place.
	if room := t.max - len(t.buf); room > 0 {
		take := min(room, len(p))
		t.buf = append(t.buf, p[:take]...)
		p = p[take:]
	}
	for len(p) > 0 {
		copied := copy(t.buf[t.start:], p)
		p = p[copied:]
		t.start = (t.start + copied) % len(t.buf)
	}
	return n, nil
}

// Bytes returns a copy of the kept bytes, oldest first.
func (t *Tail) Bytes() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()

	out := make([]byte, 0, len(t.buf))
	out = append(out, t.buf[t.start:]...)
	return append(out, t.buf[:t.start]...)
}

// Len returns the number of bytes kept.
func (t *Tail) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.buf)
}

// Total returns the number of bytes written, kept or not.
func (t *Tail) Total() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.total
}

// Dropped returns the number of bytes written but no longer kept.
func (t *Tail) Dropped() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.total - int64(len(t.buf))
}
