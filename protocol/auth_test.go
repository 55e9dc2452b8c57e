package protocol

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// exchange runs a SCRAM exchange between a worker with secret and a
// coordinator with verifier, and returns both sides after the server-final
// message, or the first error.
func exchange(t *testing.T, workerID, secret string, verifier Verifier) (*ClientHandshake, *ServerHandshake, error) {
	t.Helper()
	client, err := NewClientHandshake(workerID, secret)
	require.NoError(t, err)
	server, err := NewServerHandshake(workerID, verifier)
	require.NoError(t, err)

	clientFirst, err := client.ClientFirst()
	require.NoError(t, err)
	serverFirst, err := server.Challenge(clientFirst)
	if err != nil {
		return client, server, err
	}
	clientFinal, err := client.Respond(serverFirst)
	if err != nil {
		return client, server, err
	}
	serverFinal, err := server.Finish(clientFinal)
	if err != nil {
		return client, server, err
	}
	return client, server, client.Verify(serverFinal)
}

func TestScramExchangeDerivesEqualKeys(t *testing.T) {
	secret, verifier, err := NewCredential()
	require.NoError(t, err)
	client, server, err := exchange(t, "worker-1", secret, verifier)
	require.NoError(t, err)

	transcript := []byte("transcript")
	workerKeys, err := client.SessionKeys("s-1", transcript)
	require.NoError(t, err)
	coordinatorKeys, err := server.SessionKeys("s-1", transcript)
	require.NoError(t, err)
	assert.Equal(t, workerKeys, coordinatorKeys)
	assert.Len(t, workerKeys.ToCoordinator, 32)
	assert.NotEqual(t, workerKeys.ToCoordinator, workerKeys.ToWorker, "directions share a key")

	otherSession, err := client.SessionKeys("s-2", transcript)
	require.NoError(t, err)
	assert.NotEqual(t, workerKeys.ToCoordinator, otherSession.ToCoordinator, "session id not in the key")
	otherTranscript, err := client.SessionKeys("s-1", []byte("changed hello"))
	require.NoError(t, err)
	assert.NotEqual(t, workerKeys.ToCoordinator, otherTranscript.ToCoordinator, "transcript not in the key")
}

func TestScramKeysDifferPerConnection(t *testing.T) {
	secret, verifier, err := NewCredential()
	require.NoError(t, err)
	first, _, err := exchange(t, "worker-1", secret, verifier)
	require.NoError(t, err)
	second, _, err := exchange(t, "worker-1", secret, verifier)
	require.NoError(t, err)

	firstKeys, err := first.SessionKeys("s-1", nil)
	require.NoError(t, err)
	secondKeys, err := second.SessionKeys("s-1", nil)
	require.NoError(t, err)
	assert.NotEqual(t, firstKeys.ToCoordinator, secondKeys.ToCoordinator,
		"a resumed session must get fresh keys from fresh nonces")
}

func TestScramWrongSecretFails(t *testing.T) {
	_, verifier, err := NewCredential()
	require.NoError(t, err)
	otherSecret, _, err := NewCredential()
	require.NoError(t, err)
	// The wrong secret keeps the right credential id, so only the proof
	// can tell them apart.
	id, _, _ := strings.Cut(otherSecret, ".")
	wrong := verifier.CredentialID + strings.TrimPrefix(otherSecret, id)

	_, server, err := exchange(t, "worker-1", wrong, verifier)
	require.ErrorIs(t, err, ErrAuthentication)
	_, err = server.SessionKeys("s-1", nil)
	assert.Error(t, err, "a failed exchange must not yield keys")
}

func TestScramOtherWorkerIDFails(t *testing.T) {
	secret, verifier, err := NewCredential()
	require.NoError(t, err)
	client, err := NewClientHandshake("worker-2", secret)
	require.NoError(t, err)
	server, err := NewServerHandshake("worker-1", verifier)
	require.NoError(t, err)
	clientFirst, err := client.ClientFirst()
	require.NoError(t, err)
	_, err = server.Challenge(clientFirst)
	assert.Error(t, err)
}

// A copy of the coordinator's database has the salt, the iteration count,
// StoredKey and ServerKey. None of them works as the secret, and a proof
// built from them does not verify.
func TestScramDatabaseCopyCannotLogIn(t *testing.T) {
	_, verifier, err := NewCredential()
	require.NoError(t, err)

	for name, value := range map[string][]byte{
		"stored_key": verifier.StoredKey,
		"server_key": verifier.ServerKey,
		"salt":       append(verifier.Salt, verifier.Salt...),
	} {
		t.Run("as secret "+name, func(t *testing.T) {
			padded := make([]byte, SecretBytes)
			copy(padded, value)
			guess := verifier.CredentialID + "." + base64.RawURLEncoding.EncodeToString(padded)
			_, _, err := exchange(t, "worker-1", guess, verifier)
			assert.ErrorIs(t, err, ErrAuthentication)
		})
	}

	for name, clientKey := range map[string][]byte{
		"stored_key as client key": verifier.StoredKey,
		"server_key as client key": verifier.ServerKey,
	} {
		t.Run("forged proof "+name, func(t *testing.T) {
			server, err := NewServerHandshake("worker-1", verifier)
			require.NoError(t, err)
			clientFirst := "n,,n=worker-1,r=attackernonce"
			serverFirst, err := server.Challenge(clientFirst)
			require.NoError(t, err)
			fields, err := scramFields(serverFirst)
			require.NoError(t, err)

			// The attacker has StoredKey, so it can compute the client
			// signature. The proof also needs ClientKey, which it lacks.
			c2wop := "c=" + base64.StdEncoding.EncodeToString([]byte("n,,")) + ",r=" + fields["r"]
			authMessage := "n=worker-1,r=attackernonce," + serverFirst + "," + c2wop
			signature := hmacSHA256(verifier.StoredKey, []byte(authMessage))
			proof := make([]byte, sha256.Size)
			for i := range proof {
				proof[i] = clientKey[i] ^ signature[i]
			}
			_, err = server.Finish(c2wop + ",p=" + base64.StdEncoding.EncodeToString(proof))
			assert.ErrorIs(t, err, ErrAuthentication)
		})
	}
}

// A peer that does not hold the verifier cannot produce the server-final
// message, so the worker notices an impostor coordinator.
func TestScramWorkerRejectsImpostorCoordinator(t *testing.T) {
	secret, verifier, err := NewCredential()
	require.NoError(t, err)
	impostor := verifier
	impostor.ServerKey = make([]byte, len(verifier.ServerKey))

	_, _, err = exchange(t, "worker-1", secret, impostor)
	assert.ErrorIs(t, err, ErrAuthentication)
}

// A peer posing as the coordinator cannot make the worker run PBKDF2 for
// minutes with a huge iteration count, which the worker would otherwise
// compute before it can check the server's signature.
func TestScramWorkerRejectsHugeIterationCount(t *testing.T) {
	secret, verifier, err := NewCredential()
	require.NoError(t, err)
	client, err := NewClientHandshake("worker-1", secret)
	require.NoError(t, err)
	server, err := NewServerHandshake("worker-1", verifier)
	require.NoError(t, err)
	clientFirst, err := client.ClientFirst()
	require.NoError(t, err)
	serverFirst, err := server.Challenge(clientFirst)
	require.NoError(t, err)

	huge := strings.Replace(serverFirst, fmt.Sprintf("i=%d", verifier.Iterations), "i=1000000000", 1)
	require.NotEqual(t, serverFirst, huge, "server-first %q has no iteration count", serverFirst)
	_, err = client.Respond(huge)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "iteration count")
}

func TestCredentialIDOfRejectsMalformedSecrets(t *testing.T) {
	secret, verifier, err := NewCredential()
	require.NoError(t, err)
	id, err := CredentialIDOf(secret)
	require.NoError(t, err)
	assert.Equal(t, verifier.CredentialID, id)

	for name, bad := range map[string]string{
		"empty":          "",
		"no separator":   strings.ReplaceAll(secret, ".", ""),
		"no prefix":      strings.TrimPrefix(secret, credentialIDPrefix),
		"id not hex":     credentialIDPrefix + "zz." + strings.SplitN(secret, ".", 2)[1],
		"short random":   secret[:len(secret)-4],
		"not base64url":  secret[:len(secret)-1] + "!",
		"token instead":  "s3cret-token",
		"standard b64 +": strings.SplitN(secret, ".", 2)[0] + "." + strings.Repeat("+", 43),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := CredentialIDOf(bad)
			require.Error(t, err)
			if bad != "" {
				assert.NotContains(t, err.Error(), strings.SplitN(secret, ".", 2)[1], "error leaks the secret")
			}
		})
	}
}

func TestComputeVerifierMatchesNewCredential(t *testing.T) {
	secret, verifier, err := NewCredential()
	require.NoError(t, err)
	again, err := ComputeVerifier(secret, verifier.Salt, verifier.Iterations)
	require.NoError(t, err)
	assert.Equal(t, verifier, again)
	assert.Equal(t, ScramIterations, verifier.Iterations)
	assert.NotContains(t, string(verifier.StoredKey)+string(verifier.ServerKey), secret)
}
