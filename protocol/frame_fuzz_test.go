package protocol

import (
	"bytes"
	"compress/flate"
	"errors"
	"flag"
	"io"
	"runtime"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/dtf-io/dtf/protocol/pb"

	"github.com/dtf-io/dtf/internal/fuzzcorpus"
)

// updateFuzzCorpus rewrites the seed corpora under testdata/fuzz from the
// frames built here: go test ./protocol -run TestWriteFuzzCorpus -update-fuzz-corpus
var updateFuzzCorpus = flag.Bool("update-fuzz-corpus", false, "rewrite the seed corpora under testdata/fuzz")

// fuzzMaxBytes bounds the messages and decompressed frames in the fuzz
// targets. It is smaller than the default so that the fuzzer reaches the
// limit with inputs of a few kilobytes.
const fuzzMaxBytes = 64 << 10

// fuzzSenderFrames is the number of frames the sending window of
// FuzzWindowReceive holds before the fuzzed acknowledgements arrive.
const fuzzSenderFrames = 8

// fuzzFrames are valid frames of every body type, with nested messages,
// maps, repeated fields, bytes and non-ASCII strings.
// NOTE: a body type added to wire.proto needs a frame here and a rerun of
// TestWriteFuzzCorpus, or the fuzzer starts without a seed of it.
func fuzzFrames() []*pb.Frame {
	ref := &pb.TaskRef{TaskId: "t-1", Attempt: 2}
	checkpoint := &pb.Checkpoint{Ref: ref, Sequence: 3, Data: []byte("state"), Fraction: 0.3, Message: "step 3"}
	frames := []*pb.Frame{
		{Body: &pb.Frame_Hello{Hello: &pb.Hello{WorkerId: "w-1", Token: "secret", SessionId: "s-1",
			TaskTypes: []string{"command", "gotest"}, Slots: 4, Labels: map[string]string{"os": "linux", "gpu": "1"},
			HostVersion: "v1", PluginVersion: "v1", Compression: []string{CompressionDeflate}}}},
		{Body: &pb.Frame_Welcome{Welcome: &pb.Welcome{SessionId: "s-1", HeartbeatIntervalMs: 2000,
			HeartbeatTimeoutMs: 6000, ServerTimeUnixMs: 1700000000000, Resumed: true,
			Compression: CompressionDeflate, SessionTtlMs: 60000}}},
		{Body: &pb.Frame_Reject{Reject: &pb.Reject{Code: pb.Reject_CODE_OVERLOADED, Message: "busy",
			RetryAfterMs: 1500}}},
		{Body: &pb.Frame_Heartbeat{Heartbeat: &pb.Heartbeat{SentUnixNano: 1, Reply: true, EchoUnixNano: 2}}},
		{Seq: 1, Ack: 4, Body: &pb.Frame_StateSync{StateSync: &pb.StateSync{
			Running: []*pb.TaskRef{ref, {TaskId: "t-2", Attempt: 1}}, HeldOutcomes: []*pb.TaskRef{ref}}}},
		{Seq: 2, Body: &pb.Frame_StateSyncResult{StateSyncResult: &pb.StateSyncResult{
			Keep: []*pb.TaskRef{ref}, Cancel: []*pb.TaskRef{{TaskId: "t-3", Attempt: 1}}}}},
		{Seq: 3, Body: &pb.Frame_Assign{Assign: &pb.Assign{Ref: ref, Type: "command", Name: "unit ✓",
			Payload: []byte(`{"argv":["true"]}`), TimeoutMs: 60000, Checkpoint: checkpoint}}},
		{Seq: 4, Body: &pb.Frame_TaskStarted{TaskStarted: &pb.TaskStarted{Ref: ref}}},
		{Seq: 5, Body: &pb.Frame_TaskProgress{TaskProgress: &pb.TaskProgress{Ref: ref, Fraction: 0.5,
			Message: "half"}}},
		{Seq: 6, Ack: 2, Body: &pb.Frame_TaskOutcome{TaskOutcome: &pb.TaskOutcome{Ref: ref,
			Status: pb.Status_STATUS_FAILED, ExitCode: -1, Message: "exit 1", Output: []byte{0xff, 0x00},
			Result: []byte(`{"ok":false}`), StartedUnixMs: 1, FinishedUnixMs: 2, Retryable: true,
			Released: true, Checkpoint: checkpoint}}},
		{Seq: 7, Body: &pb.Frame_OutcomeAck{OutcomeAck: &pb.OutcomeAck{Ref: ref, Applied: false,
			Reason: "stale attempt"}}},
		{Seq: 8, Body: &pb.Frame_CancelTask{CancelTask: &pb.CancelTask{Ref: ref, Reason: "cancelled"}}},
		{Seq: 9, Body: &pb.Frame_Checkpoint{Checkpoint: checkpoint}},
		{Seq: 10, Body: &pb.Frame_CheckpointAck{CheckpointAck: &pb.CheckpointAck{Ref: ref, Sequence: 3,
			Applied: true}}},
		{Seq: 11, Body: &pb.Frame_Draining{Draining: &pb.Draining{DeadlineUnixMs: 99, Reason: "SIGTERM"}}},
		{Seq: 12, Ack: 12},
	}
	return frames
}

// fuzzMessages returns WebSocket messages as a codec sends them: every
// frame of fuzzFrames plain, large frames compressed, and damaged copies.
func fuzzMessages(t testing.TB) [][]byte {
	var messages [][]byte
	for _, frame := range fuzzFrames() {
		data, err := Encode(frame)
		if err != nil {
			t.Fatal(err)
		}
		messages = append(messages, data)
	}

	// A compressed outcome with a large output, as a worker sends it.
	large := &pb.Frame{Seq: 13, Body: &pb.Frame_TaskOutcome{TaskOutcome: &pb.TaskOutcome{
		Ref: &pb.TaskRef{TaskId: "t-9", Attempt: 1}, Output: bytes.Repeat([]byte("ok\n"), 2000)}}}
	compressed, err := Codec{Compression: CompressionDeflate}.Encode(large)
	if err != nil {
		t.Fatal(err)
	}
	if compressed[0] != encodingDeflate {
		t.Fatal("the large seed frame was not compressed")
	}
	messages = append(messages, compressed)

	plain := messages[9]
	flipped := append([]byte(nil), plain...)
	flipped[len(flipped)/2] ^= 0x10
	messages = append(messages,
		plain[:len(plain)/2],                             // truncated
		flipped,                                          // one bit flipped
		compressed[:len(compressed)/2],                   // truncated deflate stream
		append([]byte{7}, plain[1:]...),                  // unknown encoding byte
		[]byte{encodingPlain, 0x80},                      // truncated tag
		[]byte{encodingDeflate},                          // empty deflate stream
		append([]byte{encodingPlain}, badUTF8Frame()...), // invalid string
	)
	return messages
}

// badUTF8Frame returns a task_progress frame whose message is not UTF-8,
// which the decoder of a proto3 message rejects.
func badUTF8Frame() []byte {
	data, _ := proto.Marshal(&pb.Frame{Body: &pb.Frame_TaskProgress{TaskProgress: &pb.TaskProgress{Message: "ab"}}})
	data[len(data)-1] = 0xff
	return data
}

// deflateBomb returns n zero bytes compressed, about 1 KiB per MiB.
func deflateBomb(t testing.TB, n int) []byte {
	var out bytes.Buffer
	w, err := flate.NewWriter(&out, flate.BestCompression)
	if err != nil {
		t.Fatal(err)
	}
	zeros := make([]byte, 64<<10)
	for written := 0; written < n; written += len(zeros) {
		if _, err := w.Write(zeros); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// FuzzDecode checks that Codec.Decode and Codec.Scan accept the same
// messages, agree on the body type, and that a decoded frame encodes back
// to an equal frame.
func FuzzDecode(f *testing.F) {
	codec := Codec{MaxFrameBytes: fuzzMaxBytes, MaxDecodedBytes: fuzzMaxBytes}
	f.Fuzz(func(t *testing.T, data []byte) {
		input := bytes.Clone(data)
		frame, decodeErr := codec.Decode(data)
		bodyType, body, scanErr := codec.Scan(data)
		if !bytes.Equal(input, data) {
			t.Fatal("Decode or Scan changed its input")
		}
		if (decodeErr == nil) != (scanErr == nil) {
			t.Fatalf("Decode error %v, Scan error %v", decodeErr, scanErr)
		}
		if decodeErr != nil {
			return
		}
		if got := TypeOf(frame); got != bodyType {
			t.Fatalf("TypeOf returns %q, Scan returns %q", got, bodyType)
		}
		checkScannedBody(t, frame, body)

		for _, encoder := range []Codec{{}, {Compression: CompressionDeflate, CompressAbove: 1}} {
			encoded, err := encoder.Encode(frame)
			if err != nil {
				t.Fatalf("encode a decoded frame: %v", err)
			}
			again, err := encoder.Decode(encoded)
			if err != nil {
				t.Fatalf("decode a re-encoded frame: %v", err)
			}
			if !proto.Equal(frame, again) {
				t.Fatalf("re-encoded frame differs: %v, then %v", frame, again)
			}
		}
	})
}

// FuzzScanFrame checks that ScanFrame accepts exactly the protobuf bytes
// that proto.Unmarshal accepts, that its body type agrees with TypeOf, and
// that the body it returns is the frame without seq and ack.
func FuzzScanFrame(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		input := bytes.Clone(data)
		bodyType, body, scanErr := ScanFrame(data)
		if !bytes.Equal(input, data) {
			t.Fatal("ScanFrame changed its input")
		}
		frame := &pb.Frame{}
		decodeErr := proto.Unmarshal(data, frame)
		if (scanErr == nil) != (decodeErr == nil) {
			t.Fatalf("ScanFrame error %v, proto.Unmarshal error %v", scanErr, decodeErr)
		}
		if scanErr != nil {
			return
		}
		if got := TypeOf(frame); got != bodyType {
			t.Fatalf("TypeOf returns %q, ScanFrame returns %q", got, bodyType)
		}
		checkScannedBody(t, frame, body)
	})
}

// checkScannedBody checks that body, as returned by ScanFrame for frame,
// decodes to frame without its seq and ack. ScanFrame drops fields 1 and 2
// of any wire type, while the decoder keeps a seq or ack of the wrong wire
// type as an unknown field, so the frame's own unknown fields are not
// compared.
func checkScannedBody(t *testing.T, frame *pb.Frame, body []byte) {
	t.Helper()
	stripped := &pb.Frame{}
	if err := proto.Unmarshal(body, stripped); err != nil {
		t.Fatalf("the body of a valid frame does not decode: %v", err)
	}
	if stripped.GetSeq() != 0 || stripped.GetAck() != 0 {
		t.Fatalf("the body keeps seq %d and ack %d", stripped.GetSeq(), stripped.GetAck())
	}
	// proto.Clone drops a float field that holds -0, which the decoder
	// keeps, so the copy is made by encoding and decoding instead.
	encoded, err := proto.Marshal(frame)
	if err != nil {
		t.Fatalf("encode a decoded frame: %v", err)
	}
	want := &pb.Frame{}
	if err := proto.Unmarshal(encoded, want); err != nil {
		t.Fatalf("decode a re-encoded frame: %v", err)
	}
	want.Seq, want.Ack = 0, 0
	want.ProtoReflect().SetUnknown(nil)
	stripped.ProtoReflect().SetUnknown(nil)
	if !proto.Equal(want, stripped) {
		t.Fatalf("the body decodes to %v, expected %v", stripped, want)
	}
}

// FuzzInflate checks that a compressed message never inflates past
// MaxDecodedBytes, that it fails with ErrDecodedTooLarge exactly when the
// stream holds more, and that inflating allocates memory in proportion to
// the limit, not to the stream's content.
func FuzzInflate(f *testing.F) {
	f.Fuzz(func(t *testing.T, stream []byte, limit uint16) {
		maxDecoded := int(limit)%fuzzMaxBytes + 1
		codec := Codec{MaxFrameBytes: 1 << 20, MaxDecodedBytes: maxDecoded}
		message := append([]byte{encodingDeflate}, stream...)

		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		out, err := codec.unwrap(message)
		runtime.ReadMemStats(&after)

		// The flate reader's window and tables take about 40 KiB (an
		// estimate from compress/flate's decompressor struct), and
		// io.ReadAll grows its buffer to at most about twice the limit.
		allocated := after.TotalAlloc - before.TotalAlloc
		if bound := uint64(4*maxDecoded + 256<<10); allocated > bound {
			t.Fatalf("inflating with limit %d allocated %d bytes, more than %d", maxDecoded, allocated, bound)
		}
		if err == nil && len(out) > maxDecoded {
			t.Fatalf("inflated %d bytes past the limit of %d", len(out), maxDecoded)
		}

		// A reference read of the same stream, one byte past the limit.
		reference, refErr := io.ReadAll(io.LimitReader(flate.NewReader(bytes.NewReader(stream)),
			int64(maxDecoded)+1))
		// A stream that is damaged after the limit may fail either way.
		switch {
		case refErr != nil:
			if err == nil {
				t.Fatalf("damaged stream accepted: %v", refErr)
			}
		case len(reference) > maxDecoded:
			if !errors.Is(err, ErrDecodedTooLarge) {
				t.Fatalf("stream inflates past %d bytes, error %v, expected ErrDecodedTooLarge", maxDecoded, err)
			}
		default:
			if err != nil {
				t.Fatalf("valid stream of %d bytes rejected: %v", len(reference), err)
			}
			if !bytes.Equal(reference, out) {
				t.Fatal("inflated bytes differ from a plain flate reader's")
			}
		}
	})
}

// FuzzWindowReceive decodes a sequence of messages, each prefixed with one
// length byte, and passes every frame to the receiving window and every
// acknowledgement to a sending window with fuzzSenderFrames kept frames.
// Both windows must follow the rules of a session: in-order frames are
// new, repeats are duplicates, a gap is an error and changes nothing, and
// an acknowledgement past the last frame sent drops nothing.
func FuzzWindowReceive(f *testing.F) {
	codec := Codec{MaxFrameBytes: fuzzMaxBytes, MaxDecodedBytes: fuzzMaxBytes}
	f.Fuzz(func(t *testing.T, data []byte) {
		receiver := NewWindow(0, 0)
		sender := NewWindow(0, 0)
		for range fuzzSenderFrames {
			if err := sender.Add(progressFrame()); err != nil {
				t.Fatal(err)
			}
		}
		var received, acknowledged uint64
		for len(data) > 0 {
			n := min(int(data[0]), len(data)-1)
			message := data[1 : 1+n]
			data = data[1+n:]
			frame, err := codec.Decode(message)
			if err != nil {
				continue
			}

			seq := frame.GetSeq()
			fresh, err := receiver.Receive(frame)
			switch {
			case seq == 0 || seq == received+1:
				if !fresh || err != nil {
					t.Fatalf("frame %d after %d: fresh %v, error %v; expected a new frame", seq, received, fresh, err)
				}
				if seq != 0 {
					received = seq
				}
			case seq <= received:
				if fresh || err != nil {
					t.Fatalf("frame %d after %d: fresh %v, error %v; expected a duplicate", seq, received, fresh, err)
				}
			default:
				if fresh || !errors.Is(err, ErrSequenceGap) {
					t.Fatalf("frame %d after %d: fresh %v, error %v; expected ErrSequenceGap", seq, received, fresh, err)
				}
			}
			if got := receiver.Received(); got != received {
				t.Fatalf("Received returns %d, expected %d", got, received)
			}

			ack := frame.GetAck()
			err = sender.Acknowledge(ack)
			if ack > fuzzSenderFrames {
				if !errors.Is(err, ErrAckPastSent) {
					t.Fatalf("acknowledgement %d of %d frames: error %v, expected ErrAckPastSent", ack, fuzzSenderFrames, err)
				}
			} else {
				if err != nil {
					t.Fatalf("acknowledgement %d: %v", ack, err)
				}
				acknowledged = max(acknowledged, ack)
			}
			if pending, _ := sender.Pending(); pending != fuzzSenderFrames-int(acknowledged) {
				t.Fatalf("%d frames pending after acknowledgement %d, expected %d", pending, acknowledged,
					fuzzSenderFrames-int(acknowledged))
			}
		}
	})
}

// lengthPrefixed joins messages for FuzzWindowReceive.
func lengthPrefixed(messages ...[]byte) []byte {
	var out []byte
	for _, m := range messages {
		if len(m) > 255 {
			m = m[:255]
		}
		out = append(out, byte(len(m)))
		out = append(out, m...)
	}
	return out
}

// TestWriteFuzzCorpus writes the seed corpora of the fuzz targets in this
// package when -update-fuzz-corpus is set.
func TestWriteFuzzCorpus(t *testing.T) {
	if !*updateFuzzCorpus {
		t.Skip("run with -update-fuzz-corpus to rewrite testdata/fuzz")
	}
	messages := fuzzMessages(t)
	fuzzcorpus.Write(t, "FuzzDecode", wrapEach(messages)...)

	var protobufs [][]any
	for _, m := range messages {
		if m[0] == encodingPlain {
			protobufs = append(protobufs, []any{m[1:]})
		}
	}
	fuzzcorpus.Write(t, "FuzzScanFrame", protobufs...)

	bomb := deflateBomb(t, 1<<20)
	compressed := messages[len(fuzzFrames())]
	fuzzcorpus.Write(t, "FuzzInflate",
		[]any{bomb, uint16(4096)},
		[]any{bomb, uint16(fuzzMaxBytes - 1)},
		[]any{compressed[1:], uint16(fuzzMaxBytes - 1)},
		[]any{compressed[1:], uint16(100)},
		[]any{compressed[1 : len(compressed)/2], uint16(fuzzMaxBytes - 1)},
		[]any{[]byte{}, uint16(10)},
		// A stored block whose length field disagrees with its complement.
		[]any{[]byte{0x01, 0x05, 0x00, 0x00, 0x00, 'h', 'e', 'l', 'l', 'o'}, uint16(10)},
	)

	in := func(seq, ack uint64) []byte {
		frame := &pb.Frame{Seq: seq, Ack: ack, Body: &pb.Frame_TaskStarted{TaskStarted: &pb.TaskStarted{}}}
		data, err := Encode(frame)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	heartbeat := messages[3]
	fuzzcorpus.Write(t, "FuzzWindowReceive",
		[]any{lengthPrefixed(in(1, 0), in(2, 1), in(3, 3), heartbeat, in(4, 8))},
		[]any{lengthPrefixed(in(1, 0), in(1, 0), in(3, 2), in(2, 9))},
		[]any{lengthPrefixed(in(2, 0), heartbeat, in(1, 1))},
		[]any{lengthPrefixed(messages[4], messages[9], messages[len(messages)-1])},
	)
}

func wrapEach(inputs [][]byte) [][]any {
	out := make([][]any, len(inputs))
	for i, in := range inputs {
		out[i] = []any{in}
	}
	return out
}
