package connector

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
)

// clientTLSConfig returns the TLS settings of wss:// connections: TLS 1.2
// or later, and the coordinator's certificate checked against the CA
// certificates in caFile only, or against the system roots when caFile is
// empty. The file is read once, when the plugin is configured.
func clientTLSConfig(caFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile == "" {
		return cfg, nil
	}
	data, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("coordinator.ca_file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("coordinator.ca_file %s contains no PEM certificate; give the CA certificate "+
			"in PEM", caFile)
	}
	cfg.RootCAs = pool
	return cfg, nil
}

// certificateHint returns advice for a dial error caused by the
// coordinator's certificate, or "" for any other error.
func certificateHint(cfg *Config, err error) string {
	var verifyErr *tls.CertificateVerificationError
	var unknownAuthority x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invalid x509.CertificateInvalidError
	switch {
	case errors.As(err, &unknownAuthority) && cfg.CAFile != "":
		return fmt.Sprintf("the coordinator's certificate is not signed by a CA in coordinator.ca_file %s; "+
			"give the CA that signed it", cfg.CAFile)
	case errors.As(err, &unknownAuthority):
		return "the coordinator's certificate is not signed by a CA in the system roots; set " +
			"coordinator.ca_file in worker.hcl to the CA that signed it"
	case errors.As(err, &hostErr):
		return "the coordinator's certificate does not name the host of coordinator.url; use a url " +
			"whose host the certificate names, or reissue the certificate"
	case errors.As(err, &invalid):
		return "the coordinator's certificate is invalid, for example expired; renew it"
	case errors.As(err, &verifyErr):
		return "the coordinator's certificate failed verification"
	}
	return ""
}

// plainToTLSHint returns advice for a ws:// url whose server answered with
// Go's 400 reply to a plain HTTP request on a TLS listener, or "".
func plainToTLSHint(url string, status int, body []byte) string {
	if status != http.StatusBadRequest || !strings.HasPrefix(url, "ws://") ||
		!bytes.Contains(body, []byte("HTTP request to an HTTPS server")) {
		return ""
	}
	return "; the coordinator serves TLS: use a wss:// url in coordinator.url of worker.hcl, " +
		"and ca_file if its certificate is not signed by a system CA"
}
