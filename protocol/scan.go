package protocol

import (
	"errors"
	"fmt"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/dtf-io/dtf/protocol/pb"
)

// maxScanDepth bounds the nesting of messages that ScanFrame follows. The
// deepest frame that dtf builds nests four messages (frame, outcome,
// checkpoint, task reference). Protobuf's own decoder allows far more, but
// anything deeper than this is not a dtf frame.
const maxScanDepth = 32

// frameDescriptor describes pb.Frame for ScanFrame.
var frameDescriptor = (&pb.Frame{}).ProtoReflect().Descriptor()

// Field numbers of Frame's sequence number and acknowledgement.
const (
	seqField protowire.Number = 1
	ackField protowire.Number = 2
)

// ScanFrame checks that data is the protobuf encoding of a Frame that
// proto.Unmarshal accepts, without building the message, and returns the
// name of its body field, such as "task_progress", or TypeUnknown when it
// has no body field that this build declares. The check follows every nested
// message of the schema and checks that each string is valid UTF-8, as
// the decoder of a proto3 message does. Fields unknown to this build are
// only checked to be well formed, and the decoder keeps them as unknown
// fields too.
//
// body is data without the seq and ack fields, so that a sender can add
// its own; it is data itself when neither is present, which is the common
// case.
//
// A relay such as the reconnection plugin uses ScanFrame to forward a
// frame's bytes as they came, instead of decoding and encoding them again.
func ScanFrame(data []byte) (bodyType string, body []byte, err error) {
	bodyType = TypeUnknown
	body = data
	oneof := frameDescriptor.Oneofs().ByName("body")
	rest := data
	for len(rest) > 0 {
		start := len(data) - len(rest)
		num, typ, n, err := consumeTag(rest)
		if err != nil {
			return "", nil, fmt.Errorf("scan frame: field tag at byte %d: %w", start, err)
		}
		m, err := scanField(frameDescriptor.Fields().ByNumber(num), num, typ, rest[n:], 1)
		if err != nil {
			return "", nil, fmt.Errorf("scan frame: field %d at byte %d: %w", num, start, err)
		}
		fieldLen := n + m
		rest = rest[fieldLen:]

		if field := frameDescriptor.Fields().ByNumber(num); field != nil &&
			field.ContainingOneof() == oneof && typ == protowire.BytesType {
			bodyType = string(field.Name())
		}
		if num == seqField || num == ackField {
			body = dropRange(data, body, start, fieldLen)
		}
	}
	return bodyType, body, nil
}

// dropRange returns body without the field at [start, start+length) of
// data. body is data with some earlier fields removed; the first removal
// copies, so data itself is never changed.
func dropRange(data, body []byte, start, length int) []byte {
	removed := len(data) - len(body)
	start -= removed
	if removed == 0 {
		body = append([]byte(nil), data...)
	}
	return append(body[:start], body[start+length:]...)
}

// errUTF8 reports a string field that proto.Unmarshal would refuse.
var errUTF8 = errors.New("string field is not valid UTF-8")

// scanField checks the value of one field, whose tag was already consumed,
// and returns the value's length. field is nil for a field number that the
// message does not declare.
func scanField(field protoreflect.FieldDescriptor, num protowire.Number, typ protowire.Type, b []byte, depth int) (int, error) {
	n := protowire.ConsumeFieldValue(num, typ, b)
	if n < 0 {
		return 0, protowire.ParseError(n)
	}
	if field == nil || typ != protowire.BytesType {
		// A scalar whose wire type does not match the schema is kept as
		// an unknown field by the decoder, so well formed is enough.
		return n, nil
	}
	value, _ := protowire.ConsumeBytes(b)
	switch field.Kind() {
	case protoreflect.MessageKind:
		if depth >= maxScanDepth {
			return 0, fmt.Errorf("messages nested deeper than %d", maxScanDepth)
		}
		return n, scanMessage(field.Message(), value, depth+1)
	case protoreflect.StringKind:
		if !utf8.Valid(value) {
			return 0, errUTF8
		}
	}
	// Bytes, and packed repeated scalars, whose elements the decoder reads
	// without further checks beyond their length.
	return n, scanPacked(field, value)
}

// consumeTag parses a field tag as protowire.ConsumeTag does, and also
// rejects a field number above protowire.MaxValidNumber, which
// protowire.ConsumeTag accepts and proto.Unmarshal rejects.
func consumeTag(b []byte) (protowire.Number, protowire.Type, int, error) {
	num, typ, n := protowire.ConsumeTag(b)
	if n < 0 {
		return 0, 0, 0, protowire.ParseError(n)
	}
	if num > protowire.MaxValidNumber {
		return 0, 0, 0, fmt.Errorf("field number %d is above the maximum of %d", num, protowire.MaxValidNumber)
	}
	return num, typ, n, nil
}

// scanPacked checks the elements of a packed repeated scalar field.
func scanPacked(field protoreflect.FieldDescriptor, value []byte) error {
	if !field.IsList() {
		return nil
	}
	var consume func([]byte) int
	switch field.Kind() {
	case protoreflect.StringKind, protoreflect.BytesKind, protoreflect.MessageKind, protoreflect.GroupKind:
		return nil
	case protoreflect.Fixed32Kind, protoreflect.Sfixed32Kind, protoreflect.FloatKind:
		consume = func(b []byte) int { _, n := protowire.ConsumeFixed32(b); return n }
	case protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind, protoreflect.DoubleKind:
		consume = func(b []byte) int { _, n := protowire.ConsumeFixed64(b); return n }
	default:
		consume = func(b []byte) int { _, n := protowire.ConsumeVarint(b); return n }
	}
	for len(value) > 0 {
		n := consume(value)
		if n < 0 {
			return fmt.Errorf("packed element: %w", protowire.ParseError(n))
		}
		value = value[n:]
	}
	return nil
}

// scanMessage checks the encoding of a message of type md.
func scanMessage(md protoreflect.MessageDescriptor, b []byte, depth int) error {
	fields := md.Fields()
	for len(b) > 0 {
		num, typ, n, err := consumeTag(b)
		if err != nil {
			return fmt.Errorf("%s: field tag: %w", md.Name(), err)
		}
		m, err := scanField(fields.ByNumber(num), num, typ, b[n:], depth)
		if err != nil {
			return fmt.Errorf("%s field %d: %w", md.Name(), num, err)
		}
		b = b[n+m:]
	}
	return nil
}
