package protocol

import (
	"bytes"
	"compress/flate"
	"errors"
	"fmt"
	"io"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/dtf-io/dtf/protocol/pb"
)

// Each WebSocket message starts with one encoding byte, then the frame's
// protobuf bytes, compressed or not.
const (
	encodingPlain   byte = 0
	encodingDeflate byte = 1
)

// CompressionDeflate is the name of DEFLATE (RFC 1951) in hello and welcome.
const CompressionDeflate = "deflate"

// DefaultCompressThreshold is the protobuf size above which a frame is
// compressed once compression is negotiated. Smaller frames, such as
// heartbeats and acknowledgements, gain nothing from it.
const DefaultCompressThreshold = 1024

// ErrDecodedTooLarge is returned for a compressed frame that would expand
// past its limit.
var ErrDecodedTooLarge = errors.New("decompressed frame too large")

// Codec encodes and decodes frames for one connection.
type Codec struct {
	// Compression is the negotiated algorithm, "" or CompressionDeflate.
	Compression string
	// CompressAbove is the protobuf size in bytes above which frames are
	// compressed; 0 means DefaultCompressThreshold.
	CompressAbove int
	// MaxFrameBytes bounds a message as received; 0 means
	// DefaultMaxFrameBytes.
	MaxFrameBytes int
	// MaxDecodedBytes bounds a frame after decompression; 0 means
	// DefaultMaxFrameBytes. It is checked while inflating, so a small
	// message that expands without limit is stopped at the limit.
	MaxDecodedBytes int
}

var deflaters = sync.Pool{New: func() any {
	w, _ := flate.NewWriter(nil, flate.BestSpeed)
	return w
}}

// Encode marshals a frame, compressed when the codec has compression and
// the frame is larger than the threshold.
func (c Codec) Encode(frame *pb.Frame) ([]byte, error) {
	raw, err := proto.MarshalOptions{}.MarshalAppend([]byte{encodingPlain}, frame)
	if err != nil {
		return nil, fmt.Errorf("encode %s frame: %w", TypeOf(frame), err)
	}
	threshold := c.CompressAbove
	if threshold <= 0 {
		threshold = DefaultCompressThreshold
	}
	if c.Compression != CompressionDeflate || len(raw)-1 <= threshold {
		return raw, nil
	}
	var out bytes.Buffer
	out.Grow(len(raw) / 2)
	out.WriteByte(encodingDeflate)
	w := deflaters.Get().(*flate.Writer)
	defer deflaters.Put(w)
	w.Reset(&out)
	if _, err := w.Write(raw[1:]); err != nil {
		return nil, fmt.Errorf("compress %s frame: %w", TypeOf(frame), err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("compress %s frame: %w", TypeOf(frame), err)
	}
	if out.Len() >= len(raw) {
		return raw, nil
	}
	return out.Bytes(), nil
}

// Decode unmarshals one message.
func (c Codec) Decode(data []byte) (*pb.Frame, error) {
	maxFrame := orDefault(c.MaxFrameBytes, DefaultMaxFrameBytes)
	if len(data) > maxFrame {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, len(data), maxFrame)
	}
	if len(data) == 0 {
		return nil, errors.New("decode frame: empty message")
	}
	body := data[1:]
	switch data[0] {
	case encodingPlain:
	case encodingDeflate:
		var err error
		if body, err = inflate(body, orDefault(c.MaxDecodedBytes, DefaultMaxFrameBytes)); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("decode frame: unknown encoding byte %d", data[0])
	}
	frame := &pb.Frame{}
	if err := proto.Unmarshal(body, frame); err != nil {
		return nil, fmt.Errorf("decode frame: %w", err)
	}
	return frame, nil
}

func inflate(data []byte, limit int) ([]byte, error) {
	r := flate.NewReader(bytes.NewReader(data))
	defer r.Close()
	out, err := io.ReadAll(io.LimitReader(r, int64(limit)+1))
	if err != nil {
		return nil, fmt.Errorf("decompress frame: %w", err)
	}
	if len(out) > limit {
		return nil, fmt.Errorf("%w: more than %d bytes", ErrDecodedTooLarge, limit)
	}
	return out, nil
}

func orDefault(value, fallback int) int {
	if value > 0 {
		return value
	}
	return fallback
}
