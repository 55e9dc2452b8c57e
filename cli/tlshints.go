package cli

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/dtf-io/dtf/coordinator/api"
)

// plainHTTPToTLSBody is the body that Go's net/http server (as of Go 1.26)
// writes, with status 400, when a plain HTTP request reaches a TLS listener.
const plainHTTPToTLSBody = "Client sent an HTTP request to an HTTPS server"

// schemeHint returns advice for a request that failed because -addr and the
// coordinator's listener disagree on TLS, or because the coordinator's
// certificate failed verification. It returns "" for any other error.
func schemeHint(client *api.Client, err error) string {
	var respErr *api.ResponseError
	var unknownAuthority x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var verifyErr *tls.CertificateVerificationError
	switch {
	case errors.As(err, &respErr):
		if respErr.StatusCode == http.StatusBadRequest && strings.Contains(respErr.Body.Error, plainHTTPToTLSBody) {
			return "the coordinator serves https; use -addr " + withScheme(client.BaseURL, "https")
		}
	case errors.Is(err, http.ErrSchemeMismatch):
		return "the coordinator serves plain http; use -addr " + withScheme(client.BaseURL, "http") +
			", or give the coordinator a tls block"
	case errors.As(err, &unknownAuthority) && hasOwnRoots(client):
		return "the coordinator's certificate is not signed by the CA in -ca-file or $" + caFileEnv +
			"; give the PEM file of the CA that signed it"
	case errors.As(err, &unknownAuthority):
		return "the coordinator's certificate is not signed by a CA that dtf trusts; set -ca-file or $" +
			caFileEnv + " to the PEM file of the CA that signed it"
	case errors.As(err, &hostErr):
		return "the coordinator's certificate does not name the host of -addr; use an address whose host " +
			"the certificate names"
	case errors.As(err, &verifyErr):
		return "the coordinator's certificate failed verification, for example because it expired"
	}
	return ""
}

// withScheme returns base with its scheme replaced by scheme.
func withScheme(base, scheme string) string {
	u, err := url.Parse(base)
	if err != nil {
		return scheme + "://HOST:PORT"
	}
	u.Scheme = scheme
	return u.String()
}

// hasOwnRoots reports whether client verifies certificates against its own
// CA pool, as it does with -ca-file, instead of the system roots.
func hasOwnRoots(client *api.Client) bool {
	if client.HTTP == nil {
		return false
	}
	transport, ok := client.HTTP.Transport.(*http.Transport)
	return ok && transport.TLSClientConfig != nil && transport.TLSClientConfig.RootCAs != nil
}
