package connector

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/protocol"
	wirepb "github.com/dtf-io/dtf/protocol/pb"
)

// TestTamperedCoordinatorMessageRejected checks the worker's side of the
// per-message tags: a message from the coordinator with one bit flipped, a
// replayed one, an untagged one and one tagged under another session's key
// are each rejected with an error that ends the connection, and counted;
// the untouched messages before them pass.
func TestTamperedCoordinatorMessageRejected(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	otherKey := bytes.Repeat([]byte{9}, 32)
	codec := protocol.Codec{}
	message := func(seq uint64) []byte {
		data, err := codec.Encode(&wirepb.Frame{Seq: seq, Body: &wirepb.Frame_Heartbeat{Heartbeat: &wirepb.Heartbeat{}}})
		require.NoError(t, err)
		return data
	}

	cases := []struct {
		name   string
		tamper func(sealer *protocol.Sealer) (good [][]byte, bad []byte)
		reason string
	}{
		{"one bit flipped", func(sealer *protocol.Sealer) ([][]byte, []byte) {
			good := sealer.Seal(message(1))
			bad := bytes.Clone(sealer.Seal(message(2)))
			bad[len(bad)/2] ^= 0x04
			return [][]byte{good}, bad
		}, protocol.RejectBadTag},
		{"replayed", func(sealer *protocol.Sealer) ([][]byte, []byte) {
			first := bytes.Clone(sealer.Seal(message(1)))
			return [][]byte{first}, first
		}, protocol.RejectBadTag},
		{"untagged", func(sealer *protocol.Sealer) ([][]byte, []byte) {
			return [][]byte{sealer.Seal(message(1))}, message(2)
		}, protocol.RejectUntagged},
		{"another session's key", func(*protocol.Sealer) ([][]byte, []byte) {
			return nil, protocol.NewSealer(otherKey).Seal(message(1))
		}, protocol.RejectBadTag},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			stats := &counters{}
			s := &session{
				cfg:    &Config{WorkerID: "worker-1"},
				log:    testLogger(),
				hooks:  sessionHooks{stats: stats},
				opener: protocol.NewOpener(key),
			}
			good, bad := tc.tamper(protocol.NewSealer(key))
			for _, m := range good {
				_, err := s.openMessage(bytes.Clone(m))
				require.NoError(t, err, "an untouched message was rejected")
			}
			_, err := s.openMessage(bad)
			require.Error(t, err)
			assert.Contains(t, err.Error(), "failed authentication")
			var tagErr *protocol.TagError
			require.ErrorAs(t, err, &tagErr)
			assert.Equal(t, tc.reason, tagErr.Reason)
			assert.Equal(t, uint64(1), stats.rejectedFrames.Load())
		})
	}
}
