package protocol

import (
	"bytes"
	"compress/flate"
	"errors"
	"fmt"
	"io"
	"sync"

	"google.golang.org/protobuf/encoding/protowire"
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
	return c.compress(raw, TypeOf(frame))
}

// EncodeStamped encodes a frame from the protobuf bytes of everything but
// its sequence number and acknowledgement, such as the body returned by
// ScanFrame, and the two numbers. It copies body once and decodes nothing.
// bodyType names the frame in errors.
func (c Codec) EncodeStamped(seq, ack uint64, body []byte, bodyType string) ([]byte, error) {
	raw := make([]byte, 0, 1+2*(1+protowire.SizeVarint(max(seq, ack)))+len(body))
	raw = append(raw, encodingPlain)
	// Zero is the default of both fields, which proto3 leaves out.
	if seq != 0 {
		raw = protowire.AppendTag(raw, seqField, protowire.VarintType)
		raw = protowire.AppendVarint(raw, seq)
	}
	if ack != 0 {
		raw = protowire.AppendTag(raw, ackField, protowire.VarintType)
		raw = protowire.AppendVarint(raw, ack)
	}
	raw = append(raw, body...)
	return c.compress(raw, bodyType)
}

// compress returns raw, an encoding byte and the protobuf bytes, or its
// compressed form when compression is negotiated, the frame is above the
// threshold and the compressed form is smaller.
func (c Codec) compress(raw []byte, bodyType string) ([]byte, error) {
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
		return nil, fmt.Errorf("compress %s frame: %w", bodyType, err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("compress %s frame: %w", bodyType, err)
	}
	if out.Len() >= len(raw) {
		return raw, nil
	}
	return out.Bytes(), nil
}

// Decode unmarshals one message.
func (c Codec) Decode(data []byte) (*pb.Frame, error) {
	body, err := c.unwrap(data)
	if err != nil {
		return nil, err
	}
	frame := &pb.Frame{}
	if err := proto.Unmarshal(body, frame); err != nil {
		return nil, fmt.Errorf("decode frame: %w", err)
	}
	return frame, nil
}

// Scan checks one message with ScanFrame instead of decoding it, and
// returns the frame's body type and its protobuf bytes without seq and
// ack, uncompressed.
func (c Codec) Scan(data []byte) (bodyType string, body []byte, err error) {
	raw, err := c.unwrap(data)
	if err != nil {
		return "", nil, err
	}
	return ScanFrame(raw)
}

// unwrap checks a message's size and encoding byte and returns its
// protobuf bytes, inflated when the message is compressed.
func (c Codec) unwrap(data []byte) ([]byte, error) {
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
		return body, nil
	case encodingDeflate:
		return inflate(body, orDefault(c.MaxDecodedBytes, DefaultMaxFrameBytes))
	default:
		return nil, fmt.Errorf("decode frame: unknown encoding byte %d", data[0])
	}
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
