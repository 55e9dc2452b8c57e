package protocol_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/dtf-io/dtf/protocol"
	"github.com/dtf-io/dtf/protocol/pb"
)

// benchOutputBytes is the size of the task output in the large frame, the
// order of a go test tail that an executor reports.
const benchOutputBytes = 64 << 10

// smallFrame is a task_started frame, the size of most task frames.
func smallFrame() *pb.Frame {
	return &pb.Frame{Seq: 41, Ack: 17, Body: &pb.Frame_TaskStarted{TaskStarted: &pb.TaskStarted{
		Ref: &pb.TaskRef{TaskId: "t-3f9a1c0b2d4e5f60", Attempt: 1},
	}}}
}

// largeFrame is a task_outcome whose output is 64 KiB of go test style
// lines, which compress well, as real test output does.
func largeFrame() *pb.Frame {
	var out strings.Builder
	for i := 0; out.Len() < benchOutputBytes; i++ {
		fmt.Fprintf(&out, "=== RUN   TestSession/case_%d\n--- PASS: TestSession/case_%d (0.%02ds)\n", i, i, i%100)
	}
	return &pb.Frame{Seq: 42, Ack: 17, Body: &pb.Frame_TaskOutcome{TaskOutcome: &pb.TaskOutcome{
		Ref:    &pb.TaskRef{TaskId: "t-3f9a1c0b2d4e5f60", Attempt: 1},
		Status: pb.Status_STATUS_SUCCEEDED,
		Output: []byte(out.String()[:benchOutputBytes]),
	}}}
}

var codecCases = []struct {
	name  string
	codec protocol.Codec
	frame func() *pb.Frame
}{
	{"plain/small", protocol.Codec{}, smallFrame},
	{"plain/64KiB", protocol.Codec{}, largeFrame},
	{"deflate/small", protocol.Codec{Compression: protocol.CompressionDeflate}, smallFrame},
	{"deflate/64KiB", protocol.Codec{Compression: protocol.CompressionDeflate}, largeFrame},
}

// BenchmarkCodecEncode measures Codec.Encode. Bytes per second count the
// protobuf size of the frame, before compression. A small frame stays
// under the compression threshold, so deflate/small matches plain/small.
func BenchmarkCodecEncode(b *testing.B) {
	for _, tc := range codecCases {
		b.Run(tc.name, func(b *testing.B) {
			frame := tc.frame()
			encoded, err := tc.codec.Encode(frame)
			if err != nil {
				b.Fatal(err)
			}
			raw, _ := protocol.Codec{}.Encode(frame)
			b.SetBytes(int64(len(raw)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := tc.codec.Encode(frame); err != nil {
					b.Fatal(err)
				}
			}
			// Reported after the loop, because b.Loop resets extra metrics.
			b.ReportMetric(float64(len(encoded)), "wire-bytes")
		})
	}
}

// BenchmarkCodecDecode measures Codec.Decode of a message that the same
// codec encoded.
func BenchmarkCodecDecode(b *testing.B) {
	for _, tc := range codecCases {
		b.Run(tc.name, func(b *testing.B) {
			frame := tc.frame()
			encoded, err := tc.codec.Encode(frame)
			if err != nil {
				b.Fatal(err)
			}
			raw, _ := protocol.Codec{}.Encode(frame)
			b.SetBytes(int64(len(raw)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := tc.codec.Decode(encoded); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(encoded)), "wire-bytes")
		})
	}
}
