package protocol

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/dtf-io/dtf/protocol/pb"
)

// scanSamples are frames of every task type with nested messages, maps,
// repeated fields and strings, as a relay receives them.
func scanSamples() []*pb.Frame {
	ref := &pb.TaskRef{TaskId: "t-1", Attempt: 2}
	return []*pb.Frame{
		{Body: &pb.Frame_TaskProgress{TaskProgress: &pb.TaskProgress{Ref: ref, Fraction: 0.5, Message: "step 5 of 10"}}},
		{Body: &pb.Frame_TaskStarted{TaskStarted: &pb.TaskStarted{Ref: ref}}},
		{Body: &pb.Frame_TaskOutcome{TaskOutcome: &pb.TaskOutcome{
			Ref: ref, Status: pb.Status_STATUS_FAILED, ExitCode: -1, Message: "exit 1 ✗",
			Output: []byte{0xff, 0x00, 0xfe}, Result: []byte(`{"ok":false}`), StartedUnixMs: 1, FinishedUnixMs: 2,
			Retryable:  true,
			Checkpoint: &pb.Checkpoint{Ref: ref, Sequence: 7, Data: []byte("state"), Fraction: 0.7},
		}}},
		{Body: &pb.Frame_StateSync{StateSync: &pb.StateSync{
			Running: []*pb.TaskRef{ref, {TaskId: "t-2", Attempt: 1}}, HeldOutcomes: []*pb.TaskRef{ref},
		}}},
		{Body: &pb.Frame_Checkpoint{Checkpoint: &pb.Checkpoint{Ref: ref, Sequence: 1, Data: make([]byte, 300)}}},
		{Body: &pb.Frame_Draining{Draining: &pb.Draining{DeadlineUnixMs: 99, Reason: "SIGTERM"}}},
		{Body: &pb.Frame_Hello{Hello: &pb.Hello{WorkerId: "w", Labels: map[string]string{"os": "linux", "gpu": "1"}}}},
	}
}

func TestScanFrameTypesAndBody(t *testing.T) {
	for _, frame := range scanSamples() {
		data, err := proto.Marshal(frame)
		require.NoError(t, err)
		bodyType, body, err := ScanFrame(data)
		require.NoError(t, err)
		assert.Equal(t, TypeOf(frame), bodyType)
		assert.Equal(t, data, body, "a frame without seq and ack keeps its bytes")
	}

	data, err := proto.Marshal(&pb.Frame{})
	require.NoError(t, err)
	bodyType, _, err := ScanFrame(data)
	require.NoError(t, err)
	assert.Equal(t, TypeUnknown, bodyType, "a frame without a body")
}

// A relay strips the sender's seq and ack wherever they are and stamps its
// own. The stamped frame decodes to the original body with the new numbers.
func TestScanFrameStripsSeqAndAck(t *testing.T) {
	original := scanSamples()[0]
	body, err := proto.Marshal(original)
	require.NoError(t, err)
	// seq and ack of the sender, one before and one after the body.
	data := protowire.AppendVarint(protowire.AppendTag(nil, seqField, protowire.VarintType), 41)
	data = append(data, body...)
	data = protowire.AppendVarint(protowire.AppendTag(data, ackField, protowire.VarintType), 42)
	input := append([]byte(nil), data...)

	bodyType, stripped, err := ScanFrame(data)
	require.NoError(t, err)
	assert.Equal(t, "task_progress", bodyType)
	assert.Equal(t, body, stripped)
	assert.Equal(t, input, data, "ScanFrame must not change its input")

	for _, codec := range []Codec{{}, {Compression: CompressionDeflate, CompressAbove: 1}} {
		encoded, err := codec.EncodeStamped(7, 9, stripped, bodyType)
		require.NoError(t, err)
		decoded, err := codec.Decode(encoded)
		require.NoError(t, err)
		assert.Equal(t, uint64(7), decoded.GetSeq())
		assert.Equal(t, uint64(9), decoded.GetAck())
		assert.True(t, proto.Equal(original.GetTaskProgress(), decoded.GetTaskProgress()))
	}
}

func TestScanFrameRejects(t *testing.T) {
	progress := func(message string) []byte {
		data, err := proto.Marshal(&pb.Frame{Body: &pb.Frame_TaskProgress{TaskProgress: &pb.TaskProgress{Message: message}}})
		require.NoError(t, err)
		return data
	}
	badUTF8 := progress("ab")
	badUTF8[len(badUTF8)-1] = 0xff

	// A map entry whose key is not UTF-8, two levels down.
	hello, err := proto.Marshal(&pb.Frame{Body: &pb.Frame_Hello{Hello: &pb.Hello{Labels: map[string]string{"k": "v"}}}})
	require.NoError(t, err)
	badKey := append([]byte(nil), hello...)
	for i := range badKey {
		if badKey[i] == 'k' {
			badKey[i] = 0xfe
		}
	}

	cases := map[string][]byte{
		"truncated tag":     {0x80},
		"truncated length":  progress("hello")[:3],
		"invalid utf-8":     badUTF8,
		"map key not utf-8": badKey,
		"field number zero": {0x00, 0x01},
		"packed varint cut": append(protowire.AppendTag(nil, 20, protowire.BytesType),
			// state_sync with a running list of one TaskRef whose attempt
			// varint is cut short
			4, 0x0a, 2, 0x10, 0x80),
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			_, _, err := ScanFrame(data)
			require.Error(t, err)
			require.Error(t, proto.Unmarshal(data, &pb.Frame{}), "the decoder must refuse it too")
		})
	}
}

// ScanFrame accepts exactly what proto.Unmarshal accepts on a large set of
// damaged frames: truncated, with one byte changed, or with bytes
// inserted. A relay that accepted more would forward a frame that the
// coordinator refuses on every replay; one that accepted less would refuse
// a good frame.
func TestScanFrameAgreesWithDecoder(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var inputs [][]byte
	for _, frame := range scanSamples() {
		data, err := proto.Marshal(frame)
		require.NoError(t, err)
		for cut := range len(data) {
			inputs = append(inputs, data[:cut])
		}
		for range 2000 {
			damaged := append([]byte(nil), data...)
			switch rng.IntN(3) {
			case 0:
				damaged[rng.IntN(len(damaged))] = byte(rng.IntN(256))
			case 1:
				damaged[rng.IntN(len(damaged))] ^= 1 << rng.IntN(8)
			default:
				at := rng.IntN(len(damaged) + 1)
				extra := []byte{byte(rng.IntN(256)), byte(rng.IntN(256))}
				damaged = append(damaged[:at], append(extra, damaged[at:]...)...)
			}
			inputs = append(inputs, damaged)
		}
	}
	disagreements := 0
	for _, data := range inputs {
		bodyType, _, scanErr := ScanFrame(data)
		frame := &pb.Frame{}
		decodeErr := proto.Unmarshal(data, frame)
		if (scanErr == nil) != (decodeErr == nil) {
			disagreements++
			if disagreements <= 5 {
				t.Errorf("input %x: ScanFrame error %v, decoder error %v", data, scanErr, decodeErr)
			}
			continue
		}
		if scanErr == nil {
			assert.Equal(t, TypeOf(frame), bodyType, "input %x", data)
		}
	}
	assert.Zero(t, disagreements, "of %d inputs", len(inputs))
}
