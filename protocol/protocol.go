// Package protocol defines the wire protocol between a worker's reconnection
// plugin and the coordinator: the WebSocket subprotocol, the connect URL,
// and the encoding of frames. The frame messages themselves are generated
// from pb/wire.proto.
package protocol

import (
	"errors"
	"fmt"
	"net/url"
	"reflect"
	"strconv"
	"strings"

	"github.com/dtf-io/dtf/protocol/pb"
)

// Subprotocol is the WebSocket subprotocol of this protocol version. A peer
// that does not offer it is rejected during the upgrade.
const Subprotocol = "dtf.v1"

// ConnectPath is the path of the worker WebSocket endpoint on the coordinator.
const ConnectPath = "/v1/connect"

// DefaultMaxFrameBytes bounds one encoded frame. The worker host cuts task
// outputs, messages and result data so that an outcome stays well below it.
const DefaultMaxFrameBytes = 4 << 20

// CloseWorkerStopping is the reason of the normal WebSocket close that a
// worker's connector sends when the worker host stops. After the worker's
// Draining frame, the coordinator treats this close as the worker leaving
// and ends the session. Any other close may be followed by a resume.
const CloseWorkerStopping = "worker stopping"

// ErrFrameTooLarge is returned by Decode for a frame over its size limit.
var ErrFrameTooLarge = errors.New("frame too large")

// ConnectURL builds the worker endpoint URL from the coordinator base URL
// that a worker is configured with. It accepts http, https, ws and wss bases,
// with or without a path prefix or the endpoint path itself, and rejects
// bases that carry a query, a fragment, credentials or a placeholder segment.
func ConnectURL(base string) (string, error) {
	u, err := url.Parse(strings.TrimSpace(base))
	if err != nil {
		return "", fmt.Errorf("invalid coordinator url %q: %w; give a url such as ws://127.0.0.1:7070", base, err)
	}
	switch u.Scheme {
	case "http", "ws":
		u.Scheme = "ws"
	case "https", "wss":
		u.Scheme = "wss"
	default:
		return "", fmt.Errorf("invalid coordinator url %q: scheme must be ws, wss, http or https", base)
	}
	if u.Host == "" {
		return "", fmt.Errorf("invalid coordinator url %q: missing host, for example ws://127.0.0.1:7070", base)
	}
	if port := u.Port(); port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return "", fmt.Errorf("invalid coordinator url %q: port %s is out of range 1-65535", base, port)
		}
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("invalid coordinator url %q: remove credentials, query and fragment; "+
			"the worker's identity comes from its credentials in the config", base)
	}
	path := strings.TrimRight(u.Path, "/")
	for _, segment := range strings.Split(path, "/") {
		if strings.ContainsAny(segment, "{}:<>") || strings.EqualFold(segment, "worker_id") {
			return "", fmt.Errorf("invalid coordinator url %q: placeholder segment %q; "+
				"give only the coordinator's base url", base, segment)
		}
	}
	path = strings.TrimSuffix(path, ConnectPath)
	u.Path = path + ConnectPath
	u.RawPath = ""
	return u.String(), nil
}

// Encode marshals a frame for one binary WebSocket message, uncompressed.
func Encode(frame *pb.Frame) ([]byte, error) {
	return Codec{}.Encode(frame)
}

// Decode unmarshals one binary WebSocket message of at most maxBytes, which
// also bounds its decompressed size; 0 means DefaultMaxFrameBytes. A frame
// whose body is of a type this build does not know decodes without error
// and with a nil body; callers log and count it through TypeOf.
func Decode(data []byte, maxBytes int) (*pb.Frame, error) {
	return Codec{MaxFrameBytes: maxBytes, MaxDecodedBytes: maxBytes}.Decode(data)
}

// Scan checks one binary WebSocket message with the bounds of Decode, as
// Codec.Scan does.
func Scan(data []byte, maxBytes int) (bodyType string, body []byte, err error) {
	return Codec{MaxFrameBytes: maxBytes, MaxDecodedBytes: maxBytes}.Scan(data)
}

// TypeUnknown is the type name of a frame whose body this build does not know.
const TypeUnknown = "unknown"

// TypeOf returns the name of a frame's body field, such as "hello" or
// "task_outcome", or TypeUnknown.
func TypeOf(frame *pb.Frame) string {
	if frame == nil || frame.Body == nil {
		return TypeUnknown
	}
	if name, ok := bodyTypes[reflect.TypeOf(frame.Body)]; ok {
		return name
	}
	return TypeUnknown
}

// bodyTypes maps the Go type of each body field's wrapper to the field's
// name. TypeOf runs for every frame on both sides, and a map lookup costs a
// fraction of asking protobuf reflection which oneof field is set.
var bodyTypes = func() map[reflect.Type]string {
	types := map[reflect.Type]string{}
	fields := (&pb.Frame{}).ProtoReflect().Descriptor().Oneofs().ByName("body").Fields()
	for i := 0; i < fields.Len(); i++ {
		field := fields.Get(i)
		frame := &pb.Frame{}
		m := frame.ProtoReflect()
		m.Set(field, m.NewField(field))
		types[reflect.TypeOf(frame.Body)] = string(field.Name())
	}
	return types
}()

// Types lists every frame body type, in field order.
func Types() []string {
	fields := (&pb.Frame{}).ProtoReflect().Descriptor().Oneofs().ByName("body").Fields()
	names := make([]string, 0, fields.Len())
	for i := 0; i < fields.Len(); i++ {
		names = append(names, string(fields.Get(i).Name()))
	}
	return names
}

// Direction names the side that sends a frame type.
type Direction int

const (
	// ToCoordinator frames are sent by the worker side.
	ToCoordinator Direction = iota + 1
	// ToWorker frames are sent by the coordinator.
	ToWorker
	// Both frames are sent by either side.
	Both
)

// Directions maps each frame type to the side that sends it. A test checks
// that it covers every type and that each receiving side handles its types.
var Directions = map[string]Direction{
	"hello":             ToCoordinator,
	"welcome":           ToWorker,
	"reject":            ToWorker,
	"heartbeat":         Both,
	"challenge":         ToWorker,
	"proof":             ToCoordinator,
	"state_sync":        ToCoordinator,
	"state_sync_result": ToWorker,
	"assign":            ToWorker,
	"task_started":      ToCoordinator,
	"task_progress":     ToCoordinator,
	"task_outcome":      ToCoordinator,
	"outcome_ack":       ToWorker,
	"cancel_task":       ToWorker,
	"checkpoint":        ToCoordinator,
	"checkpoint_ack":    ToWorker,
	"draining":          ToCoordinator,
	"worker_metrics":    ToCoordinator,
	"plugin_list":       ToCoordinator,
}

// SessionTypes are the frame types that the reconnection plugin handles
// itself; every other type received by a worker goes to the worker host.
var SessionTypes = map[string]bool{
	"hello": true, "welcome": true, "reject": true, "heartbeat": true,
	"challenge": true, "proof": true,
}
