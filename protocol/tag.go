package protocol

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"
)

// Per-message authentication after a SCRAM handshake. Each WebSocket
// message in either direction gets the flag encodingTagged in its encoding
// byte and a 32-byte HMAC-SHA256 tag after its bytes. The tag covers a
// message counter of the connection and direction, which starts at 0 after
// the handshake and is not sent, and the message as sent: the encoding
// byte with the flag, then the frame's bytes after compression. A forged,
// altered, replayed, reordered or dropped message, or one from another
// connection or session, whose keys differ, fails the tag. The receiver
// checks the tag before it decompresses or decodes anything.

// TagSize is the length of the tag at the end of a tagged message.
const TagSize = sha256.Size

// encodingTagged is the flag in the encoding byte of a tagged message. The
// low bits keep the encoding, plain or DEFLATE.
const encodingTagged byte = 0x80

// Reasons of rejected messages, for logs and counters.
const (
	// RejectUntagged is a message without a tag on a connection that
	// requires one.
	RejectUntagged = "untagged"
	// RejectBadTag is a message whose tag does not verify: forged, altered,
	// replayed, reordered, or sent under another connection's keys.
	RejectBadTag = "bad_tag"
)

// TagError is the error of Opener.Open; Reason is RejectUntagged or
// RejectBadTag.
type TagError struct {
	Reason  string
	Counter uint64
	Size    int
}

func (e *TagError) Error() string {
	if e.Reason == RejectUntagged {
		return fmt.Sprintf("message %d (%d bytes) has no authentication tag, which this connection requires",
			e.Counter, e.Size)
	}
	return fmt.Sprintf("message %d (%d bytes) failed its authentication tag: forged, altered, replayed, "+
		"reordered or from another connection", e.Counter, e.Size)
}

// Sealer tags the messages of one direction of one connection. It is not
// safe for concurrent use; the connection's one writer uses it.
type Sealer struct {
	mac     hash.Hash
	counter uint64
}

// NewSealer returns a Sealer with key whose counter starts at 0.
func NewSealer(key []byte) *Sealer {
	return &Sealer{mac: hmac.New(sha256.New, key)}
}

// Seal sets the tag flag in message's encoding byte and returns message
// with the tag appended; it may reuse message's array. The counter
// advances once per call.
func (s *Sealer) Seal(message []byte) []byte {
	if len(message) == 0 {
		return message
	}
	message[0] |= encodingTagged
	tag := computeTag(s.mac, s.counter, message)
	s.counter++
	return append(message, tag...)
}

// Opener checks the tags of the messages of one direction of one
// connection. It is not safe for concurrent use; the connection's one
// reader uses it.
type Opener struct {
	mac     hash.Hash
	counter uint64
}

// NewOpener returns an Opener with key whose counter starts at 0.
func NewOpener(key []byte) *Opener {
	return &Opener{mac: hmac.New(sha256.New, key)}
}

// Open checks the tag of message against the next counter value and
// returns the message without its tag and flag, for Codec.Decode. It
// changes message's array. A failure returns a *TagError and leaves the
// counter, because the connection must then end.
func (o *Opener) Open(message []byte) ([]byte, error) {
	if len(message) == 0 || message[0]&encodingTagged == 0 {
		return nil, &TagError{Reason: RejectUntagged, Counter: o.counter, Size: len(message)}
	}
	if len(message) < 1+TagSize {
		return nil, &TagError{Reason: RejectBadTag, Counter: o.counter, Size: len(message)}
	}
	body, tag := message[:len(message)-TagSize], message[len(message)-TagSize:]
	if !hmac.Equal(tag, computeTag(o.mac, o.counter, body)) {
		return nil, &TagError{Reason: RejectBadTag, Counter: o.counter, Size: len(message)}
	}
	o.counter++
	body[0] &^= encodingTagged
	return body, nil
}

// Tagged reports whether message carries the tag flag. It is only a hint
// for a receiver that has no keys yet; Open is the check.
func Tagged(message []byte) bool {
	return len(message) > 0 && message[0]&encodingTagged != 0
}

// StripTag returns a tagged message without its tag and flag, unchecked,
// for the one message that must be read before its keys exist: the Welcome
// of a SCRAM handshake. The caller checks the tag with Open on a copy taken
// before StripTag. It returns nil for a message too short to carry a tag.
func StripTag(message []byte) []byte {
	if !Tagged(message) || len(message) < 1+TagSize {
		return nil
	}
	body := append([]byte(nil), message[:len(message)-TagSize]...)
	body[0] &^= encodingTagged
	return body
}

func computeTag(mac hash.Hash, counter uint64, message []byte) []byte {
	var prefix [8]byte
	binary.BigEndian.PutUint64(prefix[:], counter)
	mac.Reset()
	mac.Write(prefix[:])
	mac.Write(message)
	return mac.Sum(nil)
}
