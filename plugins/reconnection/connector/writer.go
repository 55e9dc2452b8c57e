package connector

import (
	"errors"
	"fmt"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/dtf-io/dtf/protocol"
	"github.com/dtf-io/dtf/protocol/pb"
)

// ackEvery is the number of sequenced frames received without a frame
// written after which the writer sends a heartbeat only to carry the
// acknowledgement, so the coordinator's replay buffer drains under one-way
// load.
const ackEvery = 64

// heldFrame is a task frame that the writer took from the send queue but
// could not number, because the replay buffer was full.
type heldFrame struct {
	frame *pb.Frame
	level Priority
}

// writeLoop is the connection's only writer. Before Welcome it writes the
// Hello and control messages. After Welcome it first replays the frames the
// coordinator has not acknowledged (on a resume), then numbers and writes
// task frames from the send queue while the replay buffer has room, and
// writes a heartbeat frame and a WebSocket ping every interval.
func (s *session) writeLoop() {
	defer close(s.writerDone)
	var ticker *time.Ticker
	var ticks <-chan time.Time
	var ready <-chan struct{}
	var held *heldFrame
	welcomed := s.welcomed
	closeSent := false
	queue := s.hooks.link.queue

	fail := func(err error) {
		s.end(err)
		s.drainQueue(closeSent)
	}
	defer func() {
		if ticker != nil {
			ticker.Stop()
		}
		// A frame taken but never numbered goes back to the front of its
		// level, for the next connection.
		if held != nil {
			queue.PushFront(held.level, held.frame)
		}
	}()

	for {
		select {
		case <-welcomed:
			welcomed = nil
			ticker = time.NewTicker(time.Duration(s.interval.Load()))
			ticks = ticker.C
			if err := s.replay(); err != nil {
				fail(fmt.Errorf("replay unacknowledged frames: %w", err))
				return
			}
			ready = queue.Ready()
			queue.signal()
		case <-ticks:
			if err := s.writeHeartbeat(); err != nil {
				fail(fmt.Errorf("send heartbeat: %w", err))
				return
			}
			ticker.Reset(time.Duration(s.interval.Load()))
		case <-s.ackNudge:
			if s.unacked.Load() <= ackEvery {
				continue
			}
			if err := s.writeHeartbeat(); err != nil {
				fail(fmt.Errorf("send acknowledgement: %w", err))
				return
			}
		case item := <-s.out:
			if closeSent {
				s.reply(item, errSessionClosed)
				continue
			}
			err := s.write(item)
			s.reply(item, err)
			if err != nil {
				fail(fmt.Errorf("write to coordinator: %w", err))
				return
			}
			if item.messageType == websocket.CloseMessage {
				closeSent = true
				ticks, ready = nil, nil
			}
		case <-ready:
			if err := s.writeBurst(&held); err != nil {
				fail(err)
				return
			}
			if held != nil {
				ready = nil
			}
		case <-s.acked:
			if held == nil {
				continue
			}
			if err := s.writeHeld(&held); err != nil {
				fail(err)
				return
			}
			if held == nil && !closeSent {
				ready = queue.Ready()
				queue.signal()
			}
		case <-s.done:
			s.drainQueue(closeSent)
			return
		}
	}
}

// writeHeld numbers the held frame and writes it. When the replay buffer
// is full it keeps the frame held, and the writer waits for an
// acknowledgement; otherwise it clears *held.
func (s *session) writeHeld(held **heldFrame) error {
	frame := (*held).frame
	if err := s.window.Add(frame); err != nil {
		if errors.Is(err, protocol.ErrReplayFull) {
			return nil
		}
		return fmt.Errorf("number %s frame: %w", protocol.TypeOf(frame), err)
	}
	*held = nil
	// Once numbered, the frame is in the replay buffer, so a failed write
	// loses nothing: the next connection replays it.
	if err := s.write(outbound{messageType: websocket.BinaryMessage, frame: frame}); err != nil {
		return fmt.Errorf("write to coordinator: %w", err)
	}
	return nil
}

// writeBurst numbers and writes the frames queued right now, up to
// maxBurstFrames, with the connection corked, so that they leave in one
// write call per maxCorkBytes. It stops early at a frame that the full
// replay buffer makes it hold. The burst ends as soon as the queue is
// empty, and the connection is uncorked before writeBurst returns, so a
// lone frame is written at once.
func (s *session) writeBurst(held **heldFrame) error {
	queue := s.hooks.link.queue
	s.conn.cork()
	for range maxBurstFrames {
		frame, level := queue.Pop()
		if frame == nil {
			break
		}
		*held = &heldFrame{frame: frame, level: level}
		if err := s.writeHeld(held); err != nil {
			_ = s.conn.uncork()
			return err
		}
		if *held != nil {
			break
		}
	}
	if err := s.conn.uncork(); err != nil {
		return fmt.Errorf("write to coordinator: %w", err)
	}
	return nil
}

// replay writes, on a resumed session, every frame the coordinator has not
// acknowledged, in sequence order.
func (s *session) replay() error {
	if !s.resumed {
		return nil
	}
	frames := s.window.Unacknowledged()
	if len(frames) > 0 {
		s.log.Info("replaying unacknowledged frames", "frames", len(frames),
			"first_seq", frames[0].GetSeq(), "last_seq", frames[len(frames)-1].GetSeq())
	}
	// Corked like a burst, so the replayed frames leave in few write calls.
	s.conn.cork()
	for _, frame := range frames {
		if err := s.write(outbound{messageType: websocket.BinaryMessage, frame: frame}); err != nil {
			_ = s.conn.uncork()
			return err
		}
		s.hooks.stats.replayed.Add(1)
	}
	return s.conn.uncork()
}

// drainQueue fails every queued item with errSessionClosed after the
// connection ended. A close frame that the reader queued in reply to the
// coordinator's is still written, to complete the close handshake.
func (s *session) drainQueue(closeSent bool) {
	for {
		select {
		case item := <-s.out:
			if item.messageType == websocket.CloseMessage && !closeSent {
				_ = s.ws.WriteControl(websocket.CloseMessage, item.data, time.Now().Add(closeWait))
				closeSent = true
			}
			s.reply(item, errSessionClosed)
		default:
			return
		}
	}
}

func (s *session) reply(item outbound, err error) {
	if item.result != nil {
		item.result <- err
	}
}

// write writes one message. A frame is copied with the current ack and
// encoded with the connection's codec; the copy keeps the frame in the
// replay buffer unchanged, because the reader reads it concurrently when an
// acknowledgement drops it.
func (s *session) write(item outbound) error {
	switch item.messageType {
	case websocket.CloseMessage, websocket.PingMessage, websocket.PongMessage:
		return s.ws.WriteControl(item.messageType, item.data, time.Now().Add(closeWait))
	}
	data := item.data
	rawSize := 0
	if item.frame != nil {
		encoded, raw, err := s.encode(item.frame)
		if err != nil {
			return err
		}
		data, rawSize = encoded, raw
	}
	encodedSize := len(data)
	// After Welcome, every message of an authenticated connection is
	// tagged; the handshake messages before it are not.
	if s.isWelcomed.Load() && s.sealer != nil {
		data = s.sealer.Seal(data)
	}
	if err := s.ws.SetWriteDeadline(time.Now().Add(time.Duration(s.timeout.Load()))); err != nil {
		return err
	}
	if err := s.ws.WriteMessage(item.messageType, data); err != nil {
		return err
	}
	s.unacked.Store(0)
	stats := s.hooks.stats
	stats.framesOut.Add(1)
	stats.bytesOut.Add(uint64(len(data)))
	if item.frame != nil {
		stats.frameBytesRaw.Add(uint64(rawSize))
		stats.frameBytesEncoded.Add(uint64(encodedSize))
	}
	return nil
}

// encode stamps frame with the current acknowledgement and encodes it. A
// frame relayed from the host carries its body as bytes (see
// relayedFrame), which go out unchanged behind the two numbers. The frame
// itself is left alone, because the replay buffer may hold it. rawSize is
// the size of the encoding without compression, for the compression ratio.
func (s *session) encode(frame *pb.Frame) (data []byte, rawSize int, err error) {
	seq, ack := frame.GetSeq(), s.received()
	if frame.Body == nil {
		body := frame.ProtoReflect().GetUnknown()
		data, err = s.writeCodec().EncodeStamped(seq, ack, body, "task")
		return data, 1 + stampSize(seq, ack) + len(body), err
	}
	stamped := &pb.Frame{Seq: seq, Ack: ack, Body: frame.Body}
	data, err = s.writeCodec().Encode(stamped)
	return data, 1 + proto.Size(stamped), err
}

// stampSize returns the encoded size of a frame's sequence number and
// acknowledgement fields (numbers 1 and 2), which proto3 leaves out when
// zero.
func stampSize(seq, ack uint64) int {
	size := 0
	for _, value := range []uint64{seq, ack} {
		if value != 0 {
			size += protowire.SizeTag(1) + protowire.SizeVarint(value)
		}
	}
	return size
}

// received returns the ack to stamp: the highest coordinator frame received
// in order on this session, or on the previous one before Welcome.
func (s *session) received() uint64 {
	if s.isWelcomed.Load() {
		return s.window.Received()
	}
	return s.helloWindow.Received()
}

// writeCodec returns the negotiated codec after Welcome; Hello is always
// plain.
func (s *session) writeCodec() protocol.Codec {
	if s.isWelcomed.Load() {
		return s.codec
	}
	return protocol.Codec{MaxFrameBytes: s.cfg.MaxFrameBytes, MaxDecodedBytes: s.cfg.MaxFrameBytes}
}

// writeHeartbeat sends a Heartbeat frame and a WebSocket ping. The frame
// measures the round-trip time through the coordinator's frame handling and
// carries the acknowledgement. The pong refreshes the read deadline even
// when the coordinator is slow to reply to frames, because gorilla/websocket
// replies to pings inside its read call.
func (s *session) writeHeartbeat() error {
	frame := &pb.Frame{Body: &pb.Frame_Heartbeat{Heartbeat: &pb.Heartbeat{
		SentUnixNano: time.Now().UnixNano(),
	}}}
	if err := s.write(outbound{messageType: websocket.BinaryMessage, frame: frame}); err != nil {
		return err
	}
	return s.write(outbound{messageType: websocket.PingMessage})
}
