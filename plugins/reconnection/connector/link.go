package connector

import (
	"fmt"
	"sync"

	"github.com/dtf-io/dtf/protocol"
)

// link is the part of one Events stream that outlives its connections: the
// send queue, the sequence window of the current session and the id of
// the session to resume. It is safe for concurrent use.
type link struct {
	cfg   *Config
	queue *sendQueue

	mu        sync.Mutex
	window    *protocol.Window
	sessionID string
	// open is true from the first Welcome, or from the start of a link
	// restored from a handover, until the loop ends or Export starts; Send
	// queues frames only while it is true.
	open bool
	// exporting is set by Export (handover.go).
	exporting bool

	// creds remembers which secrets worked and which the coordinator
	// rejected (rotation.go); it has its own lock.
	creds credentialMemory
}

func newLink(cfg *Config) *link {
	return &link{
		cfg:    cfg,
		queue:  newSendQueue(cfg.SendQueueFrames),
		window: protocol.NewWindow(cfg.ReplayFrames, cfg.ReplayBytes),
	}
}

// resumePoint returns the window whose Received value Hello carries and the
// session id that Hello names, empty before the first session.
func (l *link) resumePoint() (*protocol.Window, string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.window, l.sessionID
}

// welcome applies a Welcome and returns the window of the session. On a
// resume it drops the frames that the coordinator acknowledged in ack. A
// new session starts with an empty window and an empty send queue, because
// the worker host's state sync replaces what the old session had not
// delivered; dropped is the number of queued frames discarded.
//
// A resume whose ack names a frame this side never sent means the
// coordinator's record of the session is wrong, for example a damaged
// saved session: it would take the worker's next frames for duplicates
// and drop them. welcome then clears the session id, so that the next hello
// starts a new one and the host syncs its state, and returns an error that
// ends the connection.
func (l *link) welcome(sessionID string, resumed bool, ack uint64) (window *protocol.Window, dropped int, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if resumed {
		if err := l.window.Acknowledge(ack); err != nil {
			l.sessionID = ""
			return nil, 0, fmt.Errorf("coordinator resumed session %s: %w; starting a new session", sessionID, err)
		}
	} else {
		l.window = protocol.NewWindow(l.cfg.ReplayFrames, l.cfg.ReplayBytes)
		dropped = l.queue.Clear()
	}
	l.sessionID = sessionID
	l.open = true
	return l.window, dropped, nil
}

// forget drops the session id, so that the next hello starts a new
// session.
func (l *link) forget() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sessionID = ""
}

// isOpen reports whether Send may queue frames.
func (l *link) isOpen() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open
}

// close ends the link for good: blocked and later Sends fail.
func (l *link) close() {
	l.mu.Lock()
	l.open = false
	l.mu.Unlock()
	l.queue.Close()
}
