package protocol

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func tagKeys() ([]byte, []byte) {
	return bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
}

func sealed(t *testing.T, sealer *Sealer, codec Codec, output string) []byte {
	t.Helper()
	data, err := codec.Encode(outcomeFrame(output))
	require.NoError(t, err)
	return sealer.Seal(data)
}

func requireTagError(t *testing.T, err error, reason string) {
	t.Helper()
	var tagErr *TagError
	require.True(t, errors.As(err, &tagErr), "error %v is not a TagError", err)
	assert.Equal(t, reason, tagErr.Reason)
}

func TestTagRoundTrip(t *testing.T) {
	key, _ := tagKeys()
	sealer, opener := NewSealer(key), NewOpener(key)
	codec := Codec{Compression: CompressionDeflate}

	for _, output := range []string{"short", strings.Repeat("long output ", 1000), "again"} {
		message := sealed(t, sealer, codec, output)
		assert.True(t, Tagged(message))
		body, err := opener.Open(message)
		require.NoError(t, err)
		frame, err := codec.Decode(body)
		require.NoError(t, err)
		assert.Equal(t, output, string(frame.GetTaskOutcome().GetOutput()))
	}
}

func TestTagEveryAlteredByteFails(t *testing.T) {
	key, _ := tagKeys()
	message := sealed(t, NewSealer(key), Codec{}, "payload")
	for i := range message {
		for _, flip := range []byte{0x01, 0x80} {
			altered := bytes.Clone(message)
			altered[i] ^= flip
			_, err := NewOpener(key).Open(altered)
			require.Error(t, err, "byte %d flipped with %#x passed", i, flip)
		}
	}
	_, err := NewOpener(key).Open(message[:len(message)-1])
	assert.Error(t, err, "truncated message passed")
	_, err = NewOpener(key).Open(append(bytes.Clone(message), 0))
	assert.Error(t, err, "extended message passed")
}

func TestTagReplayAndReorderFail(t *testing.T) {
	key, _ := tagKeys()
	sealer := NewSealer(key)
	first := sealed(t, sealer, Codec{}, "first")
	second := sealed(t, sealer, Codec{}, "second")

	replay := NewOpener(key)
	_, err := replay.Open(bytes.Clone(first))
	require.NoError(t, err)
	_, err = replay.Open(bytes.Clone(first))
	requireTagError(t, err, RejectBadTag)

	reorder := NewOpener(key)
	_, err = reorder.Open(bytes.Clone(second))
	requireTagError(t, err, RejectBadTag)
}

func TestTagOtherKeyOrDirectionFails(t *testing.T) {
	toCoordinator, toWorker := tagKeys()
	message := sealed(t, NewSealer(toCoordinator), Codec{}, "payload")
	_, err := NewOpener(toWorker).Open(message)
	requireTagError(t, err, RejectBadTag)
}

func TestTagUntaggedMessageFails(t *testing.T) {
	key, _ := tagKeys()
	data, err := Codec{}.Encode(outcomeFrame("plain"))
	require.NoError(t, err)
	_, err = NewOpener(key).Open(data)
	requireTagError(t, err, RejectUntagged)
	_, err = NewOpener(key).Open(nil)
	requireTagError(t, err, RejectUntagged)
}

func TestStripTagLeavesMessageForOpen(t *testing.T) {
	key, _ := tagKeys()
	message := sealed(t, NewSealer(key), Codec{}, "welcome")
	body := StripTag(message)
	frame, err := Codec{}.Decode(body)
	require.NoError(t, err)
	assert.Equal(t, "welcome", string(frame.GetTaskOutcome().GetOutput()))

	_, err = NewOpener(key).Open(message)
	assert.NoError(t, err, "StripTag changed the message")
	assert.Nil(t, StripTag([]byte{0x80, 1, 2}))
}
