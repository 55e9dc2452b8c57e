package protocol

import (
	"bytes"
	"compress/flate"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/protocol/pb"
)

func outcomeFrame(output string) *pb.Frame {
	return &pb.Frame{Seq: 9, Body: &pb.Frame_TaskOutcome{TaskOutcome: &pb.TaskOutcome{
		Ref: &pb.TaskRef{TaskId: "t-1", Attempt: 1}, Output: []byte(output),
	}}}
}

func TestCodecCompressesLargeFrames(t *testing.T) {
	codec := Codec{Compression: CompressionDeflate}
	frame := outcomeFrame(strings.Repeat("ok ", 10000))

	data, err := codec.Encode(frame)
	require.NoError(t, err)
	assert.Equal(t, encodingDeflate, data[0])
	assert.Less(t, len(data), 2000)

	got, err := codec.Decode(data)
	require.NoError(t, err)
	assert.Equal(t, frame.GetTaskOutcome().GetOutput(), got.GetTaskOutcome().GetOutput())
	assert.Equal(t, uint64(9), got.GetSeq())
}

func TestCodecLeavesSmallFramesPlain(t *testing.T) {
	data, err := Codec{Compression: CompressionDeflate}.Encode(outcomeFrame("short"))
	require.NoError(t, err)
	assert.Equal(t, encodingPlain, data[0])
}

func TestCodecWithoutCompressionNeverCompresses(t *testing.T) {
	data, err := Codec{}.Encode(outcomeFrame(strings.Repeat("x", 100000)))
	require.NoError(t, err)
	assert.Equal(t, encodingPlain, data[0])
}

func TestCodecStopsDecompressionBomb(t *testing.T) {
	// 64 MiB of zeros compress to about 64 KiB.
	var compressed bytes.Buffer
	compressed.WriteByte(encodingDeflate)
	w, err := flate.NewWriter(&compressed, flate.BestCompression)
	require.NoError(t, err)
	zeros := make([]byte, 1<<20)
	for range 64 {
		_, err = w.Write(zeros)
		require.NoError(t, err)
	}
	require.NoError(t, w.Close())

	codec := Codec{MaxFrameBytes: 1 << 20, MaxDecodedBytes: 1 << 20}
	_, err = codec.Decode(compressed.Bytes())
	assert.ErrorIs(t, err, ErrDecodedTooLarge)
}

func TestCodecRejectsUnknownEncoding(t *testing.T) {
	_, err := Codec{}.Decode([]byte{7, 1, 2})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "unknown encoding byte 7")
}

func TestCodecRejectsEmptyMessage(t *testing.T) {
	_, err := Codec{}.Decode(nil)
	assert.Error(t, err)
}
