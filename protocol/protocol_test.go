package protocol

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/dtf-io/dtf/protocol/pb"
)

func TestConnectURL(t *testing.T) {
	cases := []struct {
		base, want string
	}{
		{"ws://127.0.0.1:7070", "ws://127.0.0.1:7070/v1/connect"},
		{"http://127.0.0.1:7070/", "ws://127.0.0.1:7070/v1/connect"},
		{"https://ci.example/dtf", "wss://ci.example/dtf/v1/connect"},
		{"wss://ci.example/dtf/v1/connect", "wss://ci.example/dtf/v1/connect"},
		{"ws://127.0.0.1:7070/v1/connect/", "ws://127.0.0.1:7070/v1/connect"},
	}
	for _, c := range cases {
		t.Run(c.base, func(t *testing.T) {
			got, err := ConnectURL(c.base)
			require.NoError(t, err)
			assert.Equal(t, c.want, got)
		})
	}
}

func TestConnectURLRejectsBadBases(t *testing.T) {
	for _, base := range []string{
		"", "127.0.0.1:7070", "ftp://h", "ws://", "ws://h/workers/{id}",
		"ws://h/workers/:id", "ws://h?worker=1", "ws://user:pw@h", "ws://127.0.0.1:99999", "ws://h:0",
	} {
		t.Run(base, func(t *testing.T) {
			_, err := ConnectURL(base)
			require.Error(t, err)
			assert.Contains(t, err.Error(), "invalid coordinator url")
		})
	}
}

func TestDecodeUnknownBody(t *testing.T) {
	// Field 99 is not part of Frame's body in this build.
	data := protowire.AppendTag([]byte{encodingPlain}, 1, protowire.VarintType)
	data = protowire.AppendVarint(data, 7)
	data = protowire.AppendTag(data, 99, protowire.BytesType)
	data = protowire.AppendBytes(data, []byte{1, 2, 3})

	frame, err := Decode(data, 0)
	require.NoError(t, err)
	assert.Equal(t, uint64(7), frame.GetSeq())
	assert.Equal(t, TypeUnknown, TypeOf(frame))
}

func TestDecodeRejectsOversizedFrame(t *testing.T) {
	data, err := Encode(&pb.Frame{Body: &pb.Frame_TaskProgress{TaskProgress: &pb.TaskProgress{Message: "0123456789"}}})
	require.NoError(t, err)
	_, err = Decode(data, 4)
	assert.ErrorIs(t, err, ErrFrameTooLarge)
}

func TestDecodeRejectsGarbage(t *testing.T) {
	_, err := Decode([]byte{0xff, 0xff, 0xff}, 0)
	assert.Error(t, err)
}

func TestDirectionsCoverEveryType(t *testing.T) {
	for _, name := range Types() {
		_, ok := Directions[name]
		assert.True(t, ok, "frame type %q has no direction", name)
	}
	assert.Len(t, Directions, len(Types()))
}

func TestTypeOfNamesEveryBodyType(t *testing.T) {
	fields := (&pb.Frame{}).ProtoReflect().Descriptor().Oneofs().ByName("body").Fields()
	for i := 0; i < fields.Len(); i++ {
		field := fields.Get(i)
		frame := &pb.Frame{}
		m := frame.ProtoReflect()
		m.Set(field, m.NewField(field))
		assert.Equal(t, string(field.Name()), TypeOf(frame))
	}
	assert.Equal(t, "heartbeat", TypeOf(&pb.Frame{Body: &pb.Frame_Heartbeat{}}), "a wrapper with a nil message")
	assert.Equal(t, TypeUnknown, TypeOf(&pb.Frame{}))
	assert.Equal(t, TypeUnknown, TypeOf(nil))
}

func BenchmarkTypeOf(b *testing.B) {
	frame := &pb.Frame{Body: &pb.Frame_TaskProgress{TaskProgress: &pb.TaskProgress{}}}
	for b.Loop() {
		if TypeOf(frame) != "task_progress" {
			b.Fatal("wrong type")
		}
	}
}
