package protocol

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/xdg-go/scram"
)

// Worker authentication with SCRAM-SHA-256 (RFC 5802, RFC 7677). The
// worker holds a secret. The coordinator stores only the verifier (salt,
// iteration count, StoredKey and ServerKey), which cannot be used as the
// secret or to build a proof. github.com/xdg-go/scram formats, parses and
// checks the messages. This file adds what the library does not expose: the
// ClientKey on both sides, from which the session keys are derived.

// ScramIterations is the PBKDF2 iteration count of new credentials, the
// minimum that RFC 7677 recommends. The secret is 32 random bytes, so
// stretching adds nothing against guessing it. Only the worker and the
// credentials command run PBKDF2, once per handshake and per credential.
const ScramIterations = 4096

// MaxScramIterations bounds the iteration count a worker accepts in a
// challenge, so that a peer posing as the coordinator cannot keep it in
// PBKDF2 for minutes. dtf creates credentials with ScramIterations.
const MaxScramIterations = 100 * ScramIterations

// SecretBytes is the number of random bytes in a worker secret.
const SecretBytes = 32

// saltBytes is the length of a credential's salt.
const saltBytes = 16

// credentialIDPrefix starts every credential id, so that a secret is
// recognised in a config file or a log it should not be in.
const credentialIDPrefix = "dtfc_"

// secretSeparator separates the credential id from the random part of a
// secret. Neither the id nor base64url uses it.
const secretSeparator = "."

// ErrAuthentication is returned when a SCRAM exchange fails because of the
// credentials: a wrong secret, a proof that does not verify, or a server
// signature that does not match.
var ErrAuthentication = errors.New("authentication failed")

// Verifier is the coordinator's stored record of one credential. It lets the
// coordinator check a proof and prove itself to the worker, but neither
// StoredKey nor ServerKey works as the secret or yields a valid proof.
type Verifier struct {
	CredentialID string
	Salt         []byte
	Iterations   int
	StoredKey    []byte
	ServerKey    []byte
}

// NewCredential creates a credential: a secret of the form
// "<credential id>.<32 random bytes in base64url>" and its verifier. The
// secret is returned once and must not be stored by the coordinator.
func NewCredential() (secret string, verifier Verifier, err error) {
	idBytes := make([]byte, 8)
	random := make([]byte, SecretBytes)
	salt := make([]byte, saltBytes)
	for _, b := range [][]byte{idBytes, random, salt} {
		if _, err := rand.Read(b); err != nil {
			return "", Verifier{}, fmt.Errorf("generate credential: %w", err)
		}
	}
	id := credentialIDPrefix + hex.EncodeToString(idBytes)
	secret = id + secretSeparator + base64.RawURLEncoding.EncodeToString(random)
	verifier, err = ComputeVerifier(secret, salt, ScramIterations)
	return secret, verifier, err
}

// ComputeVerifier derives the verifier of secret with salt and iterations,
// as RFC 5802 section 3 defines StoredKey and ServerKey.
func ComputeVerifier(secret string, salt []byte, iterations int) (Verifier, error) {
	id, err := CredentialIDOf(secret)
	if err != nil {
		return Verifier{}, err
	}
	client, err := scram.SHA256.NewClientUnprepped("", secret, "")
	if err != nil {
		return Verifier{}, fmt.Errorf("compute verifier: %w", err)
	}
	stored, err := client.GetStoredCredentialsWithError(scram.KeyFactors{Salt: string(salt), Iters: iterations})
	if err != nil {
		return Verifier{}, fmt.Errorf("compute verifier: %w", err)
	}
	return Verifier{
		CredentialID: id,
		Salt:         salt,
		Iterations:   iterations,
		StoredKey:    stored.StoredKey,
		ServerKey:    stored.ServerKey,
	}, nil
}

// CredentialIDOf returns the credential id at the start of a secret, or an
// error that describes the expected format. The error never contains the
// secret.
func CredentialIDOf(secret string) (string, error) {
	id, random, ok := strings.Cut(strings.TrimSpace(secret), secretSeparator)
	if !ok || !strings.HasPrefix(id, credentialIDPrefix) || len(id) <= len(credentialIDPrefix) {
		return "", fmt.Errorf("invalid worker secret: expected %q followed by hex digits, %q and "+
			"base64url text, as `dtf credentials create` prints it", credentialIDPrefix, secretSeparator)
	}
	if _, err := hex.DecodeString(strings.TrimPrefix(id, credentialIDPrefix)); err != nil {
		return "", errors.New("invalid worker secret: the credential id before the dot is not hex; " +
			"copy the secret again from the output of `dtf credentials create`")
	}
	raw, err := base64.RawURLEncoding.DecodeString(random)
	if err != nil || len(raw) != SecretBytes {
		return "", fmt.Errorf("invalid worker secret for credential %s: the part after the dot must be "+
			"%d bytes in base64url; copy the secret again from the output of `dtf credentials create`",
			id, SecretBytes)
	}
	return id, nil
}

// ClientHandshake is the worker's side of one SCRAM exchange.
type ClientHandshake struct {
	secret       string
	credentialID string
	conv         *scram.ClientConversation
	serverFirst  string
	clientKey    []byte
	nonce        string
}

// NewClientHandshake starts the worker's side of an exchange for workerID
// with secret.
func NewClientHandshake(workerID, secret string) (*ClientHandshake, error) {
	secret = strings.TrimSpace(secret)
	id, err := CredentialIDOf(secret)
	if err != nil {
		return nil, err
	}
	// The secret is ASCII and the worker id is sent as it is configured, so
	// SASLprep, which rejects some valid ids, is skipped on both sides.
	client, err := scram.SHA256.NewClientUnprepped(workerID, secret, "")
	if err != nil {
		return nil, fmt.Errorf("start SCRAM exchange: %w", err)
	}
	client = client.WithMinIterations(ScramIterations)
	return &ClientHandshake{secret: secret, credentialID: id, conv: client.NewConversation()}, nil
}

// CredentialID returns the id of the credential whose secret the worker
// uses.
func (h *ClientHandshake) CredentialID() string {
	return h.credentialID
}

// ClientFirst returns the client-first message for Hello.
func (h *ClientHandshake) ClientFirst() (string, error) {
	msg, err := h.conv.Step("")
	if err != nil {
		return "", fmt.Errorf("SCRAM client-first message: %w", err)
	}
	return msg, nil
}

// Respond checks the server-first message of a Challenge and returns the
// client-final message for Proof. It also derives the ClientKey for the
// session keys.
func (h *ClientHandshake) Respond(serverFirst string) (string, error) {
	// The count comes from a peer not yet authenticated, and PBKDF2 runs
	// before the server signature can be checked. Every i= attribute is
	// checked, because scramFields keeps only the last one.
	for _, part := range strings.Split(serverFirst, ",") {
		value, ok := strings.CutPrefix(part, "i=")
		if n, err := strconv.Atoi(value); ok && (err != nil || n > MaxScramIterations) {
			return "", fmt.Errorf("invalid SCRAM challenge from the coordinator: iteration count %q is not "+
				"a number up to %d", value, MaxScramIterations)
		}
	}
	clientFinal, err := h.conv.Step(serverFirst)
	if err != nil {
		return "", fmt.Errorf("invalid SCRAM challenge from the coordinator: %w", err)
	}
	fields, err := scramFields(serverFirst)
	if err != nil {
		return "", err
	}
	salt, err := base64.StdEncoding.DecodeString(fields["s"])
	if err != nil {
		return "", fmt.Errorf("invalid SCRAM challenge: salt: %w", err)
	}
	iterations, err := strconv.Atoi(fields["i"])
	if err != nil {
		return "", fmt.Errorf("invalid SCRAM challenge: iteration count: %w", err)
	}
	salted, err := pbkdf2.Key(sha256.New, h.secret, salt, iterations, sha256.Size)
	if err != nil {
		return "", fmt.Errorf("derive SCRAM salted password: %w", err)
	}
	h.clientKey = hmacSHA256(salted, []byte("Client Key"))
	h.serverFirst = serverFirst
	h.nonce = fields["r"]
	return clientFinal, nil
}

// Verify checks the coordinator's server-final message from Welcome. An
// error means that the peer does not hold this credential's verifier and is
// not the coordinator the credential was created for.
func (h *ClientHandshake) Verify(serverFinal string) error {
	if serverFinal == "" {
		return fmt.Errorf("%w: the coordinator's welcome has no SCRAM server signature", ErrAuthentication)
	}
	if _, err := h.conv.Step(serverFinal); err != nil || !h.conv.Valid() {
		return fmt.Errorf("%w: the coordinator's SCRAM server signature does not match credential %s; "+
			"the peer is not the coordinator that created it", ErrAuthentication, h.credentialID)
	}
	return nil
}

// SessionKeys derives the keys of the connection once Verify succeeded.
func (h *ClientHandshake) SessionKeys(sessionID string, transcript []byte) (SessionKeys, error) {
	if !h.conv.Valid() {
		return SessionKeys{}, errors.New("derive session keys: the SCRAM exchange has not completed")
	}
	return DeriveSessionKeys(h.clientKey, h.nonce, sessionID, transcript)
}

// ServerHandshake is the coordinator's side of one SCRAM exchange with a
// known verifier.
type ServerHandshake struct {
	verifier        Verifier
	conv            *scram.ServerConversation
	clientFirstBare string
	serverFirst     string
	nonce           string
	clientKey       []byte
}

// NewServerHandshake starts the coordinator's side of an exchange for
// workerID with the verifier of the credential that Hello named.
func NewServerHandshake(workerID string, verifier Verifier) (*ServerHandshake, error) {
	lookup := func(user string) (scram.StoredCredentials, error) {
		if user != workerID {
			return scram.StoredCredentials{}, fmt.Errorf("SCRAM user %q is not the hello's worker_id %q",
				user, workerID)
		}
		return scram.StoredCredentials{
			KeyFactors: scram.KeyFactors{Salt: string(verifier.Salt), Iters: verifier.Iterations},
			StoredKey:  verifier.StoredKey,
			ServerKey:  verifier.ServerKey,
		}, nil
	}
	server, err := scram.SHA256.NewServer(lookup)
	if err != nil {
		return nil, fmt.Errorf("start SCRAM exchange: %w", err)
	}
	return &ServerHandshake{verifier: verifier, conv: server.NewConversation()}, nil
}

// Challenge checks the client-first message of Hello and returns the
// server-first message for Challenge.
func (h *ServerHandshake) Challenge(clientFirst string) (string, error) {
	serverFirst, err := h.conv.Step(clientFirst)
	if err != nil {
		return "", fmt.Errorf("invalid SCRAM client-first message: %w", err)
	}
	fields, err := scramFields(serverFirst)
	if err != nil {
		return "", err
	}
	// The bare message follows the GS2 header, which ends at the second
	// comma; the library has checked both.
	header := strings.Index(clientFirst, ",")
	header += 1 + strings.Index(clientFirst[header+1:], ",")
	h.clientFirstBare = clientFirst[header+1:]
	h.serverFirst = serverFirst
	h.nonce = fields["r"]
	return serverFirst, nil
}

// Finish checks the client-final message of Proof and returns the
// server-final message for Welcome. It recovers the ClientKey from the
// proof: ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage).
func (h *ServerHandshake) Finish(clientFinal string) (string, error) {
	serverFinal, err := h.conv.Step(clientFinal)
	if err != nil || !h.conv.Valid() {
		return "", fmt.Errorf("%w: the proof does not match credential %s; the worker's secret is wrong",
			ErrAuthentication, h.verifier.CredentialID)
	}
	cut := strings.LastIndex(clientFinal, ",p=")
	if cut < 0 {
		return "", errors.New("invalid SCRAM client-final message: no proof")
	}
	proof, err := base64.StdEncoding.DecodeString(clientFinal[cut+len(",p="):])
	if err != nil || len(proof) != sha256.Size {
		return "", errors.New("invalid SCRAM client-final message: the proof is not 32 bytes in base64")
	}
	authMessage := h.authMessage(clientFinal[:cut])
	signature := hmacSHA256(h.verifier.StoredKey, []byte(authMessage))
	h.clientKey = make([]byte, len(signature))
	for i := range signature {
		h.clientKey[i] = proof[i] ^ signature[i]
	}
	return serverFinal, nil
}

// authMessage rebuilds RFC 5802's AuthMessage from the conversation's
// messages; c2wop is the client-final message without its proof.
func (h *ServerHandshake) authMessage(c2wop string) string {
	return h.clientFirstBare + "," + h.serverFirst + "," + c2wop
}

// SessionKeys derives the keys of the connection once Finish succeeded.
func (h *ServerHandshake) SessionKeys(sessionID string, transcript []byte) (SessionKeys, error) {
	if h.clientKey == nil {
		return SessionKeys{}, errors.New("derive session keys: the SCRAM exchange has not completed")
	}
	return DeriveSessionKeys(h.clientKey, h.nonce, sessionID, transcript)
}

// SessionKeys are the two HMAC-SHA256 keys of one authenticated connection,
// one for each direction, so that a message cannot be reflected back to
// its sender.
type SessionKeys struct {
	ToCoordinator []byte
	ToWorker      []byte
}

// DeriveSessionKeys derives the keys of one connection with HKDF-SHA256
// (RFC 5869). The input key is the SCRAM ClientKey, which only the worker
// and a coordinator that saw this exchange can know. The salt is the
// combined nonce of both sides, fresh for every connection, so a resumed
// session gets new keys. The info names the direction and the session id,
// and contains transcript: the SHA-256 of the handshake messages as sent,
// so that a change to any Hello field, which SCRAM alone does not cover,
// gives the two sides different keys.
func DeriveSessionKeys(clientKey []byte, nonce, sessionID string, transcript []byte) (SessionKeys, error) {
	if len(clientKey) == 0 || nonce == "" || sessionID == "" {
		return SessionKeys{}, errors.New("derive session keys: missing client key, nonce or session id")
	}
	derive := func(direction string) ([]byte, error) {
		info := "dtf.v1 frame key " + direction + "\x00" + sessionID + "\x00" + string(transcript)
		return hkdf.Key(sha256.New, clientKey, []byte(nonce), info, sha256.Size)
	}
	toCoordinator, err := derive("worker-to-coordinator")
	if err != nil {
		return SessionKeys{}, fmt.Errorf("derive session keys: %w", err)
	}
	toWorker, err := derive("coordinator-to-worker")
	if err != nil {
		return SessionKeys{}, fmt.Errorf("derive session keys: %w", err)
	}
	return SessionKeys{ToCoordinator: toCoordinator, ToWorker: toWorker}, nil
}

// Transcript is the SHA-256 of the handshake messages of one connection
// (Hello, Challenge and Proof) as sent, in that order. Both sides feed it
// the same bytes, and DeriveSessionKeys binds the keys to it.
type Transcript struct {
	sum []byte
}

// Add appends one handshake message.
func (t *Transcript) Add(message []byte) {
	h := sha256.New()
	h.Write(t.sum)
	h.Write(message)
	t.sum = h.Sum(nil)
}

// Sum returns the hash of the messages added so far.
func (t *Transcript) Sum() []byte {
	return t.sum
}

// scramFields splits a SCRAM message into its attribute values by name.
func scramFields(message string) (map[string]string, error) {
	fields := map[string]string{}
	for _, part := range strings.Split(message, ",") {
		name, value, ok := strings.Cut(part, "=")
		if !ok || len(name) != 1 {
			continue
		}
		fields[name] = value
	}
	for _, name := range []string{"r", "s", "i"} {
		if fields[name] == "" {
			return nil, fmt.Errorf("invalid SCRAM server-first message: missing %s=", name)
		}
	}
	return fields, nil
}

func hmacSHA256(key, data []byte) []byte {
	mac := hmac.New(sha256.New, key)
	mac.Write(data)
	return mac.Sum(nil)
}
