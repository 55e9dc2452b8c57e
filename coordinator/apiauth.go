package coordinator

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/dtf-io/dtf/coordinator/config"
	"github.com/dtf-io/dtf/coordinator/store"
)

// Roles of API tokens. A submit token may do everything a read token may.
const (
	// RoleRead allows the GET endpoints of the HTTP API.
	RoleRead = "read"
	// RoleSubmit allows RoleRead's endpoints plus submitting and
	// cancelling tasks.
	RoleSubmit = "submit"
)

// APITokenPrefix starts every API token, so that a leaked token is easy to
// recognise in logs and by secret scanners.
const APITokenPrefix = "dtfa_"

// apiTokenBytes is the number of random bytes of a token: 256 bits, so
// that neither guessing a token nor reversing its stored SHA-256 is
// practical.
const apiTokenBytes = 32

// ValidRole reports whether role is RoleRead or RoleSubmit.
func ValidRole(role string) bool {
	return role == RoleRead || role == RoleSubmit
}

// NewAPIToken returns a new random token and its record, without a name
// and an expiry, created at now. The token itself is not in the record.
func NewAPIToken(role string, now time.Time) (string, store.APIToken, error) {
	if !ValidRole(role) {
		return "", store.APIToken{}, fmt.Errorf("invalid role %q; use %s or %s", role, RoleRead, RoleSubmit)
	}
	secret := make([]byte, apiTokenBytes)
	id := make([]byte, 8)
	if _, err := rand.Read(secret); err != nil {
		return "", store.APIToken{}, fmt.Errorf("generate API token: %w", err)
	}
	if _, err := rand.Read(id); err != nil {
		return "", store.APIToken{}, fmt.Errorf("generate API token id: %w", err)
	}
	token := APITokenPrefix + base64.RawURLEncoding.EncodeToString(secret)
	return token, store.APIToken{
		ID:      hex.EncodeToString(id),
		Role:    role,
		Hash:    HashAPIToken(token),
		Created: now.UTC(),
	}, nil
}

// HashAPIToken returns the SHA-256 of a token's text, the form the store
// keeps. A plain hash suffices because a token has 256 random bits, which
// no dictionary or brute-force search covers. A slow password hash would
// only add latency to every request.
func HashAPIToken(token string) []byte {
	sum := sha256.Sum256([]byte(token))
	return sum[:]
}

// roleAllows reports whether a token of role may call an endpoint that
// needs required.
func roleAllows(role, required string) bool {
	return role == required || role == RoleSubmit
}

// requireRole wraps an API handler with the bearer token check when the
// config's api.auth is token. Without a valid token the request gets 401,
// and with a token whose role is too weak 403. Both responses name the
// role that the endpoint needs and the command that creates a token.
func (s *Server) requireRole(required string, next http.HandlerFunc) http.HandlerFunc {
	if s.cfg.APIAuthMode() != config.APIAuthToken {
		return next
	}
	return func(w http.ResponseWriter, r *http.Request) {
		token, problem := bearerToken(r)
		if problem != "" {
			s.rejectAPI(w, r, http.StatusUnauthorized, required, problem)
			return
		}
		record, err := s.store.APITokenByHash(r.Context(), HashAPIToken(token))
		switch {
		case errors.Is(err, store.ErrTokenNotFound):
			s.rejectAPI(w, r, http.StatusUnauthorized, required, "invalid API token")
			return
		case err != nil:
			s.log.Named("api").Error("API token lookup failed", "error", err)
			writeError(w, http.StatusInternalServerError, "", "check API token: "+err.Error())
			return
		case !record.ActiveAt(time.Now()):
			s.rejectAPI(w, r, http.StatusUnauthorized, required,
				fmt.Sprintf("API token %s is revoked or expired", record.ID))
			return
		case !roleAllows(record.Role, required):
			s.rejectAPI(w, r, http.StatusForbidden, required,
				fmt.Sprintf("API token %s has role %s", record.ID, record.Role))
			return
		}
		next(w, r)
	}
}

// rejectAPI writes a 401 or 403 with the role the endpoint needs and how to
// get a token, and logs the rejection at debug level, since a client
// without a token can send many.
func (s *Server) rejectAPI(w http.ResponseWriter, r *http.Request, status int, required, problem string) {
	s.log.Named("api").Debug("API request rejected", "method", r.Method, "path", r.URL.Path,
		"status", status, "reason", problem, "remote_addr", r.RemoteAddr)
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="dtf"`)
	}
	writeError(w, status, "", fmt.Sprintf("%s; %s %s needs a token with role %s or higher; create one "+
		"with dtf tokens create -config coordinator.hcl -role %s and send it as Authorization: Bearer TOKEN "+
		"(dtf -token or $DTF_API_TOKEN)", problem, r.Method, r.URL.Path, required, required))
}

// maxSchemeInError bounds the part of an unknown Authorization scheme that
// an error message repeats.
const maxSchemeInError = 20

// bearerToken returns the token of an Authorization: Bearer header, or
// what is wrong with the header: missing, another scheme, or no token.
func bearerToken(r *http.Request) (token, problem string) {
	header := strings.TrimSpace(r.Header.Get("Authorization"))
	if header == "" {
		return "", "missing API token"
	}
	scheme, token, _ := strings.Cut(header, " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return "", fmt.Sprintf("Authorization header uses the scheme %.*q, but the API accepts only Bearer",
			maxSchemeInError, scheme)
	}
	token = strings.TrimSpace(token)
	if token == "" {
		return "", "Authorization header has the Bearer scheme but no token"
	}
	return token, ""
}
