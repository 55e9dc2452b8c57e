package coordinator

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/dtf-io/dtf/coordinator/store"
	"github.com/dtf-io/dtf/protocol"
	"github.com/dtf-io/dtf/protocol/pb"
)

// savedSession is the encoding of a session that a coordinator keeps in
// its store across a graceful restart. A coordinator killed with SIGKILL
// saves nothing; its workers start new sessions and sync their state.
type savedSession struct {
	// Hello is the session's Hello in protobuf encoding, without the token.
	Hello   []byte    `json:"hello"`
	Started time.Time `json:"started"`
	// DetachedAt is zero for a session that was attached at shutdown.
	DetachedAt time.Time `json:"detached_at,omitzero"`
	NextSeq    uint64    `json:"next_seq"`
	Received   uint64    `json:"received"`
	PeerAcked  uint64    `json:"peer_acked"`
	// Unacked are the frames to the worker that it has not acknowledged,
	// each in protobuf encoding, in sequence order.
	Unacked [][]byte `json:"unacked"`
	Synced  bool     `json:"synced"`
	// Draining keeps a draining worker's session free of assignments after
	// a restart.
	Draining bool       `json:"draining,omitempty"`
	Assigned []savedRef `json:"assigned,omitempty"`
	Version  int        `json:"version"`
}

type savedRef struct {
	TaskID  string `json:"task_id"`
	Attempt int    `json:"attempt"`
}

// savedSessionVersion changes whenever savedSession changes meaning; a
// coordinator ignores saved sessions of another version.
const savedSessionVersion = 1

// saveSessions writes every session that has not ended to the store, so
// that a restarted coordinator can resume it. It runs after the last
// connection ended and the scheduler stopped, so no session changes while
// it is encoded.
func (s *Server) saveSessions(ctx context.Context) error {
	s.mu.Lock()
	sessions := make([]*session, 0, len(s.sessions))
	for _, ss := range s.sessions {
		sessions = append(sessions, ss)
	}
	s.mu.Unlock()

	var saved []store.SavedSession
	for _, ss := range sessions {
		state, ok, err := ss.encode()
		if err != nil {
			ss.log.Warn("session not saved; the worker will start a new session and sync its state",
				"error", err)
			continue
		}
		if !ok {
			continue
		}
		saved = append(saved, store.SavedSession{ID: ss.id, WorkerID: ss.workerID, State: state,
			Saved: time.Now()})
	}
	if err := s.store.SaveSessions(ctx, saved); err != nil {
		return fmt.Errorf("save %d sessions for resume after restart: %w", len(saved), err)
	}
	s.log.Info("sessions saved for resume after restart", "sessions", len(saved))
	return nil
}

// encode returns the session's saved form, or false for a session that
// ended and cannot be resumed.
func (ss *session) encode() ([]byte, bool, error) {
	ss.mu.Lock()
	ended, detachedAt := ss.ended, ss.detachedAt
	ss.mu.Unlock()
	if ended {
		return nil, false, nil
	}

	hello := proto.CloneOf(ss.hello)
	hello.Token = ""
	hello.CredentialId, hello.ScramClientFirst = "", ""
	helloBytes, err := proto.Marshal(hello)
	if err != nil {
		return nil, false, fmt.Errorf("encode hello: %w", err)
	}

	state := ss.window.State()
	out := savedSession{
		Version:    savedSessionVersion,
		Hello:      helloBytes,
		Started:    ss.started,
		DetachedAt: detachedAt,
		NextSeq:    state.NextSeq,
		Received:   state.Received,
		PeerAcked:  ss.peerAcked.Load(),
		Synced:     ss.synced.Load(),
		Draining:   ss.draining.Load(),
	}
	for _, frame := range state.Unacked {
		b, err := proto.Marshal(frame)
		if err != nil {
			return nil, false, fmt.Errorf("encode frame %d: %w", frame.GetSeq(), err)
		}
		out.Unacked = append(out.Unacked, b)
	}

	ss.assignedMu.Lock()
	for ref := range ss.assigned {
		out.Assigned = append(out.Assigned, savedRef{TaskID: ref.taskID, Attempt: ref.attempt})
	}
	ss.assignedMu.Unlock()
	slices.SortFunc(out.Assigned, func(a, b savedRef) int {
		if c := strings.Compare(a.TaskID, b.TaskID); c != 0 {
			return c
		}
		return a.Attempt - b.Attempt
	})

	data, err := json.Marshal(out)
	if err != nil {
		return nil, false, fmt.Errorf("encode session: %w", err)
	}
	return data, true, nil
}

// restoreSessions takes the sessions saved by the previous run from the
// store and keeps them as detached sessions, which their workers resume
// within workers.session_ttl of this start. A saved session that cannot
// be decoded is skipped with a warning; its worker starts a new session
// and syncs its state.
func (s *Server) restoreSessions(ctx context.Context) error {
	saved, err := s.store.TakeSessions(ctx)
	if err != nil {
		return fmt.Errorf("read sessions saved by the previous run: %w", err)
	}
	if len(saved) == 0 {
		return nil
	}
	if s.cfg.Workers.SessionTTL <= 0 {
		s.log.Info("saved sessions dropped: workers.session_ttl is 0, so sessions are never resumed",
			"sessions", len(saved))
		return nil
	}
	restored := 0
	for _, rec := range saved {
		ss, err := s.decodeSession(rec)
		if err != nil {
			s.log.Warn("saved session not restored; the worker will start a new session and sync its state",
				"worker_id", rec.WorkerID, "session_id", rec.ID, "error", err)
			continue
		}
		s.mu.Lock()
		s.sessions[ss.workerID] = ss
		s.mu.Unlock()
		restored++
	}
	s.log.Info("sessions restored from the previous run", "sessions", restored,
		"session_ttl", s.cfg.Workers.SessionTTL)
	return nil
}

func (s *Server) decodeSession(rec store.SavedSession) (*session, error) {
	var in savedSession
	if err := json.Unmarshal(rec.State, &in); err != nil {
		return nil, fmt.Errorf("decode session: %w", err)
	}
	if in.Version != savedSessionVersion {
		return nil, fmt.Errorf("saved in format version %d, this coordinator reads version %d",
			in.Version, savedSessionVersion)
	}
	hello := &pb.Hello{}
	if err := proto.Unmarshal(in.Hello, hello); err != nil {
		return nil, fmt.Errorf("decode hello: %w", err)
	}
	if hello.GetWorkerId() != rec.WorkerID {
		return nil, fmt.Errorf("hello names worker %q, the record %q", hello.GetWorkerId(), rec.WorkerID)
	}
	state := protocol.WindowState{NextSeq: in.NextSeq, Received: in.Received}
	for i, b := range in.Unacked {
		frame := &pb.Frame{}
		if err := proto.Unmarshal(b, frame); err != nil {
			return nil, fmt.Errorf("decode kept frame %d: %w", i, err)
		}
		state.Unacked = append(state.Unacked, frame)
	}
	w := s.cfg.Workers
	window, err := protocol.RestoreWindow(w.ReplayFrames, w.ReplayBytes, state)
	if err != nil {
		return nil, err
	}
	if sent := window.Sent(); in.PeerAcked > sent {
		return nil, fmt.Errorf("acknowledged %d is past the last frame sent, %d", in.PeerAcked, sent)
	}

	ss := s.newSession(hello)
	ss.id = rec.ID
	ss.log = s.log.Named("session").With("worker_id", ss.workerID, "session_id", ss.id)
	ss.started = in.Started
	ss.window = window
	ss.peerAcked.Store(in.PeerAcked)
	ss.synced.Store(in.Synced)
	ss.draining.Store(in.Draining)
	for _, ref := range in.Assigned {
		ss.assigned[refKey{ref.TaskID, ref.Attempt}] = true
	}
	// A session attached at shutdown starts its time to live now; one that
	// was already away keeps the time it left.
	ss.detachedAt = time.Now()
	if !in.DetachedAt.IsZero() && in.DetachedAt.Before(ss.detachedAt) {
		ss.detachedAt = in.DetachedAt
	}
	return ss, nil
}
