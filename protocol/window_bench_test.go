package protocol_test

import (
	"testing"

	"github.com/dtf-io/dtf/protocol"
	"github.com/dtf-io/dtf/protocol/pb"
)

// BenchmarkWindowAddAck measures numbering a task frame into the replay
// buffer and dropping it again on acknowledgement. The "each" case
// acknowledges every frame at once, as on a fast link. The "batch64" case
// acknowledges 64 frames at a time, as a heartbeat does after a burst.
func BenchmarkWindowAddAck(b *testing.B) {
	for _, tc := range []struct {
		name  string
		batch int
	}{{"each", 1}, {"batch64", 64}} {
		b.Run(tc.name, func(b *testing.B) {
			w := protocol.NewWindow(0, 0)
			frames := make([]*pb.Frame, tc.batch)
			for i := range frames {
				frames[i] = smallFrame()
			}
			b.ReportAllocs()
			n := 0
			for b.Loop() {
				frame := frames[n%tc.batch]
				if err := w.Add(frame); err != nil {
					b.Fatal(err)
				}
				n++
				if n%tc.batch == 0 {
					_ = w.Acknowledge(frame.GetSeq())
				}
			}
		})
	}
}

// BenchmarkWindowReceive measures the receiver's sequence check of an
// in-order frame.
func BenchmarkWindowReceive(b *testing.B) {
	w := protocol.NewWindow(0, 0)
	frame := smallFrame()
	b.ReportAllocs()
	seq := uint64(0)
	for b.Loop() {
		seq++
		frame.Seq = seq
		if fresh, err := w.Receive(frame); err != nil || !fresh {
			b.Fatalf("receive seq %d: fresh %v, error %v", seq, fresh, err)
		}
	}
}
