package protocol

import (
	"bytes"
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/base64"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/dtf-io/dtf/internal/fuzzcorpus"
)

// The fuzz targets of the SCRAM handshake use one fixed credential, so
// that a failure reproduces from its input alone.
const fuzzWorkerID = "w-fuzz"

var fuzzSecret = "dtfc_0011223344556677." + base64.RawURLEncoding.EncodeToString(
	[]byte("0123456789abcdef0123456789abcdef"))

var fuzzSalt = []byte("fuzz-salt-16byte")

// fuzzCredential is the verifier of fuzzSecret and the keys that only the
// secret yields.
type fuzzCredential struct {
	verifier  Verifier
	clientKey []byte
}

var fuzzCredentialOnce = sync.OnceValues(func() (fuzzCredential, error) {
	verifier, err := ComputeVerifier(fuzzSecret, fuzzSalt, ScramIterations)
	if err != nil {
		return fuzzCredential{}, err
	}
	salted, err := pbkdf2.Key(sha256.New, fuzzSecret, fuzzSalt, ScramIterations, sha256.Size)
	if err != nil {
		return fuzzCredential{}, err
	}
	return fuzzCredential{verifier: verifier, clientKey: hmacSHA256(salted, []byte("Client Key"))}, nil
})

func loadFuzzCredential(t *testing.T) fuzzCredential {
	t.Helper()
	cred, err := fuzzCredentialOnce()
	if err != nil {
		t.Fatal(err)
	}
	return cred
}

// mutate returns a copy of s with the byte at at%len(s) XORed with mask.
func mutate(s string, at uint16, mask uint16) string {
	if s == "" || byte(mask) == 0 {
		return s
	}
	b := []byte(s)
	b[int(at)%len(b)] ^= byte(mask)
	return string(b)
}

// FuzzServerHandshake feeds the coordinator's side arbitrary client-first
// and client-final messages, and an honest worker's client-final message
// with one byte changed. Property: an error or the next message, never a
// panic, and Finish succeeds only for a proof made from the secret, which
// shows in the ClientKey recovered from it.
func FuzzServerHandshake(f *testing.F) {
	f.Add("n,,n=w-fuzz,r=abcdefghijklmnop", "c=biws,r=abcdefghijklmnop0123,p=AAAA", uint16(0), uint16(0))
	f.Fuzz(func(t *testing.T, clientFirst, clientFinal string, at, mask uint16) {
		cred := loadFuzzCredential(t)

		server, err := NewServerHandshake(fuzzWorkerID, cred.verifier)
		if err != nil {
			t.Fatal(err)
		}
		if serverFirst, err := server.Challenge(clientFirst); err == nil {
			fields, err := scramFields(serverFirst)
			if err != nil {
				t.Fatalf("server-first %q: %v", serverFirst, err)
			}
			if fields["s"] != base64.StdEncoding.EncodeToString(fuzzSalt) || fields["i"] != strconv.Itoa(ScramIterations) {
				t.Fatalf("server-first %q does not carry the verifier's salt and iteration count", serverFirst)
			}
			if _, err := server.Finish(clientFinal); err == nil && !bytes.Equal(server.clientKey, cred.clientKey) {
				t.Fatalf("the server accepted client-final %q, which was not made from the secret", clientFinal)
			}
		}

		// An honest exchange whose client-final message loses or changes
		// one byte on the way.
		client, err := NewClientHandshake(fuzzWorkerID, fuzzSecret)
		if err != nil {
			t.Fatal(err)
		}
		first, err := client.ClientFirst()
		if err != nil {
			t.Fatal(err)
		}
		server, err = NewServerHandshake(fuzzWorkerID, cred.verifier)
		if err != nil {
			t.Fatal(err)
		}
		serverFirst, err := server.Challenge(first)
		if err != nil {
			t.Fatalf("challenge of an honest client-first %q: %v", first, err)
		}
		final, err := client.Respond(serverFirst)
		if err != nil {
			t.Fatalf("respond to an honest server-first %q: %v", serverFirst, err)
		}
		sent := mutate(final, at, mask)
		serverFinal, err := server.Finish(sent)
		switch {
		case sent == final && err != nil:
			t.Fatalf("an honest client-final %q was rejected: %v", final, err)
		case err == nil && !bytes.Equal(server.clientKey, cred.clientKey):
			t.Fatalf("the server accepted a changed client-final %q (honest %q) with another ClientKey", sent, final)
		case sent == final:
			if err := client.Verify(serverFinal); err != nil {
				t.Fatalf("the client rejected an honest server-final %q: %v", serverFinal, err)
			}
		}
	})
}

// maxFuzzIterations keeps the fuzzer's PBKDF2 work per input small.
// ClientHandshake.Respond accepts counts up to MaxScramIterations, and the
// fuzz target skips inputs above this lower bound to stay fast.
const maxFuzzIterations = 4 * ScramIterations

// fuzzServerKeys caches the ServerKey of fuzzSecret per salt and
// iteration count, because the fuzzer repeats a few of them.
var fuzzServerKeys = struct {
	sync.Mutex
	keys map[string][]byte
}{keys: map[string][]byte{}}

func fuzzServerKey(t *testing.T, salt []byte, iterations int) []byte {
	t.Helper()
	cacheKey := string(salt) + "\x00" + strconv.Itoa(iterations)
	fuzzServerKeys.Lock()
	defer fuzzServerKeys.Unlock()
	if key, ok := fuzzServerKeys.keys[cacheKey]; ok {
		return key
	}
	salted, err := pbkdf2.Key(sha256.New, fuzzSecret, salt, iterations, sha256.Size)
	if err != nil {
		t.Fatal(err)
	}
	key := hmacSHA256(salted, []byte("Server Key"))
	if len(fuzzServerKeys.keys) < 64 {
		fuzzServerKeys.keys[cacheKey] = key
	}
	return key
}

// FuzzClientHandshake feeds the worker's side arbitrary server-first and
// server-final messages. In the server-first message "{nonce}" stands for
// the client's nonce, and in the server-final message "{signature}" for
// the correct "v=" attribute, so the fuzzer reaches the signature check.
// Property: an error, never a panic, and Verify succeeds only for a
// signature made with the ServerKey of the secret.
func FuzzClientHandshake(f *testing.F) {
	salt := base64.StdEncoding.EncodeToString(fuzzSalt)
	f.Add("r={nonce}srv,s="+salt+",i=4096", "{signature}", uint16(0), uint16(0))
	f.Add("r={nonce}srv,s="+salt+",i=4096", "{signature}", uint16(5), uint16(1))
	f.Add("r=other,s="+salt+",i=4096", "v=AAAA", uint16(0), uint16(0))
	f.Fuzz(func(t *testing.T, serverFirst, serverFinal string, at, mask uint16) {
		client, err := NewClientHandshake(fuzzWorkerID, fuzzSecret)
		if err != nil {
			t.Fatal(err)
		}
		first, err := client.ClientFirst()
		if err != nil {
			t.Fatal(err)
		}
		bare := first[strings.Index(first, "n="):]
		_, nonce, _ := strings.Cut(bare, ",r=")
		serverFirst = strings.ReplaceAll(serverFirst, "{nonce}", nonce)
		for _, part := range strings.Split(serverFirst, ",") {
			if value, ok := strings.CutPrefix(part, "i="); ok {
				if n, err := strconv.Atoi(value); err == nil && n > maxFuzzIterations {
					return
				}
			}
		}

		fields, fieldsErr := scramFields(serverFirst)
		final, err := client.Respond(serverFirst)
		if fieldsErr != nil && err == nil {
			t.Fatalf("server-first %q without r, s or i was accepted", serverFirst)
		}
		if err != nil {
			return
		}
		iterations, err := strconv.Atoi(fields["i"])
		if err != nil {
			t.Fatalf("the client accepted server-first %q with an invalid iteration count", serverFirst)
		}

		salt, err := base64.StdEncoding.DecodeString(fields["s"])
		if err != nil {
			t.Fatalf("the client accepted server-first %q with an invalid salt", serverFirst)
		}
		cut := strings.LastIndex(final, ",p=")
		authMessage := bare + "," + serverFirst + "," + final[:cut]
		want := hmacSHA256(fuzzServerKey(t, salt, iterations), []byte(authMessage))
		honest := "v=" + base64.StdEncoding.EncodeToString(want)
		serverFinal = mutate(strings.ReplaceAll(serverFinal, "{signature}", honest), at, mask)

		err = client.Verify(serverFinal)
		if serverFinal == honest && err != nil {
			t.Fatalf("the client rejected the honest server-final %q: %v", honest, err)
		}
		if err != nil {
			return
		}
		// Attributes after the signature are extensions, which the
		// library ignores.
		value, ok := strings.CutPrefix(serverFinal, "v=")
		value, _, _ = strings.Cut(value, ",")
		got, decodeErr := base64.StdEncoding.DecodeString(value)
		if !ok || decodeErr != nil || !bytes.Equal(got, want) {
			t.Fatalf("the client accepted server-final %q; only a signature made with the ServerKey may pass",
				serverFinal)
		}
		if _, err := client.SessionKeys("s-1", nil); err != nil {
			t.Fatalf("session keys after a verified exchange: %v", err)
		}
	})
}

// FuzzOpen seals a fuzzed message under a fixed key after a fuzzed number
// of earlier messages, changes one byte of it, and opens it. Property:
// only the message exactly as sealed opens, a failure leaves the counter
// so the next honest message still opens, and nothing opens twice. An
// arbitrary message opens only if it is the sealed form of its own body.
func FuzzOpen(f *testing.F) {
	f.Add([]byte("\x00frame"), uint16(0), uint16(0), uint16(0))
	f.Add([]byte("\x00frame"), uint16(3), uint16(2), uint16(0x80))
	f.Add([]byte("\x80"+strings.Repeat("t", TagSize)), uint16(1), uint16(40), uint16(1))
	key := []byte("fuzz key of the coordinator side")
	f.Fuzz(func(t *testing.T, message []byte, earlier, at, mask uint16) {
		if len(message) == 0 {
			return
		}
		sealer, opener, witness := NewSealer(key), NewOpener(key), NewSealer(key)
		for range earlier % 16 {
			if _, err := opener.Open(sealer.Seal([]byte("\x00earlier"))); err != nil {
				t.Fatal(err)
			}
			witness.Seal([]byte("\x00earlier"))
		}

		// An arbitrary message as received.
		arbitrary := bytes.Clone(message)
		if body, err := opener.Open(bytes.Clone(message)); err == nil {
			body = bytes.Clone(body)
			if resealed := witness.Seal(body); !bytes.Equal(resealed, arbitrary) {
				t.Fatalf("message %x opened but is not the sealed form of its body", arbitrary)
			}
			return
		}

		// The same bytes sealed honestly, then changed in one byte.
		sealed := sealer.Seal(bytes.Clone(message))
		sent := []byte(mutate(string(sealed), at, mask))
		body, err := opener.Open(bytes.Clone(sent))
		if bytes.Equal(sent, sealed) {
			if err != nil {
				t.Fatalf("an honest message failed: %v", err)
			}
			want := bytes.Clone(message)
			want[0] &^= encodingTagged
			if !bytes.Equal(body, want) {
				t.Fatalf("opened body %x, sealed %x", body, want)
			}
			if _, err := opener.Open(bytes.Clone(sealed)); err == nil {
				t.Fatal("a replayed message opened")
			}
			return
		}
		if err == nil {
			t.Fatalf("a changed message opened: sealed %x, sent %x", sealed, sent)
		}
		if _, err := opener.Open(bytes.Clone(sealed)); err != nil {
			t.Fatalf("the honest message failed after a changed one: %v", err)
		}
	})
}

// TestWriteAuthFuzzCorpus rewrites the seed corpora of the handshake and
// tag fuzz targets: go test ./protocol -run TestWriteAuthFuzzCorpus -update-fuzz-corpus
func TestWriteAuthFuzzCorpus(t *testing.T) {
	if !*updateFuzzCorpus {
		t.Skip("run with -update-fuzz-corpus to rewrite testdata/fuzz")
	}
	salt := base64.StdEncoding.EncodeToString(fuzzSalt)
	proof := base64.StdEncoding.EncodeToString(make([]byte, sha256.Size))
	fuzzcorpus.Write(t, "FuzzServerHandshake",
		[]any{"n,,n=w-fuzz,r=abcdefghijklmnop", "c=biws,r=abcdefghijklmnopXYZ,p=" + proof, uint16(0), uint16(0)},
		[]any{"n,,n=other,r=abc", "c=biws,r=abc,p=" + proof, uint16(7), uint16(1)},
		[]any{"y,,n=w-fuzz,r=abc", "c=eSws,r=abc,p=AAAA", uint16(60), uint16(0x20)},
		[]any{"n,a=w-fuzz,n=w-fuzz,r=abc,e=x", "", uint16(100), uint16(0xff)},
		[]any{"n,,n=w=2Cfuzz,r=" + strings.Repeat("r", 200), "c=biws", uint16(3), uint16(4)},
		[]any{"", "", uint16(0), uint16(0)},
	)
	fuzzcorpus.Write(t, "FuzzClientHandshake",
		[]any{"r={nonce}srv,s=" + salt + ",i=4096", "{signature}", uint16(0), uint16(0)},
		[]any{"r={nonce}srv,s=" + salt + ",i=4096", "{signature}", uint16(10), uint16(1)},
		[]any{"r={nonce}srv,s=" + salt + ",i=4096", "{signature},e=extra", uint16(0), uint16(0)},
		[]any{"r={nonce}srv,s=" + salt + ",i=8192", "e=other-error", uint16(0), uint16(0)},
		[]any{"r={nonce}srv,s=" + salt + ",i=1000", "{signature}", uint16(0), uint16(0)},
		[]any{"r=not-my-nonce,s=" + salt + ",i=4096", "v=AAAA", uint16(0), uint16(0)},
		[]any{"r={nonce}srv,s=***,i=4096", "{signature}", uint16(0), uint16(0)},
		[]any{"m=ext,r={nonce}srv,s=" + salt + ",i=4096", "{signature}", uint16(0), uint16(0)},
	)
	fuzzcorpus.Write(t, "FuzzOpen",
		[]any{[]byte("\x00frame"), uint16(0), uint16(0), uint16(0)},
		[]any{[]byte("\x00frame"), uint16(3), uint16(2), uint16(0x80)},
		[]any{[]byte("\x01deflated"), uint16(1), uint16(0), uint16(0x80)},
		[]any{[]byte("\x80" + strings.Repeat("t", TagSize)), uint16(1), uint16(40), uint16(1)},
		[]any{[]byte("\x00"), uint16(15), uint16(33), uint16(0x01)},
	)
}
