package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// API authentication modes of the api block.
const (
	// APIAuthNone serves the HTTP API to any client that reaches the
	// listener, the default on a loopback listener.
	APIAuthNone = "none"
	// APIAuthToken requires a bearer token from `dtf tokens create` on
	// every API request apart from /healthz, the default on any other
	// listener.
	APIAuthToken = "token"
)

// TLS holds the certificate of the listener. With both files set the
// listener serves https and wss only.
type TLS struct {
	// CertFile is the absolute path of the PEM certificate chain, leaf
	// first. KeyFile is the absolute path of its PEM private key.
	CertFile string
	KeyFile  string
}

// Enabled reports whether a certificate is configured.
func (t TLS) Enabled() bool {
	return t.CertFile != "" || t.KeyFile != ""
}

// API holds the settings of the HTTP API.
type API struct {
	// Auth is APIAuthNone, APIAuthToken or empty. Empty picks token on a
	// listener that is not a loopback address and none on a loopback one,
	// so a single-machine setup works without tokens.
	Auth string
}

type fileTLS struct {
	CertFile string `hcl:"cert_file"`
	KeyFile  string `hcl:"key_file"`
}

type fileAPI struct {
	Auth *string `hcl:"auth,optional"`
}

// resolveTLS fills the tls and api blocks, with paths relative to dir.
func (raw *fileConfig) resolveTLS(dir string, cfg *Config) {
	if raw.TLS != nil {
		cfg.TLS = TLS{CertFile: resolvePath(dir, raw.TLS.CertFile), KeyFile: resolvePath(dir, raw.TLS.KeyFile)}
	}
	if raw.API != nil && raw.API.Auth != nil {
		cfg.API.Auth = *raw.API.Auth
	}
}

func resolvePath(dir, path string) string {
	path = strings.TrimSpace(path)
	if path == "" || filepath.IsAbs(path) {
		return path
	}
	return filepath.Join(dir, path)
}

// APIAuthMode returns the effective API authentication mode: the api
// block's auth, or its default for the listener.
func (c *Config) APIAuthMode() string {
	if c.API.Auth != "" {
		return c.API.Auth
	}
	if loopback(c.Listen) {
		return APIAuthNone
	}
	return APIAuthToken
}

// validateTLS checks the tls and api blocks. A certificate that cannot be
// loaded is an error here, so the coordinator fails at start, not on the
// first client.
func validateTLS(c *Config) []error {
	var errs []error
	switch c.API.Auth {
	case "", APIAuthNone, APIAuthToken:
	default:
		errs = append(errs, fmt.Errorf("api.auth %q is invalid; use \"token\" to require bearer tokens "+
			"or \"none\" to serve the API to any client", c.API.Auth))
	}
	if c.TLS.Enabled() {
		if _, err := c.TLS.Certificate(time.Now()); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// Certificate loads the key pair and checks that the leaf certificate is
// valid at now. Errors name the file and the problem.
func (t TLS) Certificate(now time.Time) (tls.Certificate, error) {
	if t.CertFile == "" || t.KeyFile == "" {
		return tls.Certificate{}, errors.New("tls needs both cert_file and key_file; " +
			"set the PEM certificate and its private key")
	}
	certPEM, err := os.ReadFile(t.CertFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("tls.cert_file: %w", err)
	}
	keyPEM, err := os.ReadFile(t.KeyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("tls.key_file: %w", err)
	}

	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("tls.cert_file %s and tls.key_file %s: %w; both must be PEM, "+
			"the certificate first in its chain, and the key must belong to it", t.CertFile, t.KeyFile, err)
	}

	// Go's TLS server does not check its own certificate's validity
	// period, so an expired one would fail only on clients.
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("tls.cert_file %s: parse certificate: %w", t.CertFile, err)
	}
	if now.After(leaf.NotAfter) {
		return tls.Certificate{}, fmt.Errorf("tls.cert_file %s: certificate expired at %s; renew it",
			t.CertFile, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if now.Before(leaf.NotBefore) {
		return tls.Certificate{}, fmt.Errorf("tls.cert_file %s: certificate is not valid before %s; "+
			"check the clock or the certificate", t.CertFile, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	cert.Leaf = leaf
	return cert, nil
}
