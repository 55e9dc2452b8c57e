package config

import (
	"fmt"
	"time"

	"github.com/hashicorp/hcl/v2"
)

// Defaults of the HTTP server's timeouts, which apply to the HTTP API,
// /healthz and the WebSocket upgrade of /v1/connect. An upgraded worker
// connection is no longer bound by them: it has its own handshake and
// heartbeat timeouts.
const (
	// DefaultHTTPReadHeaderTimeout bounds the time a client has to send
	// its request line and headers, so that connections that trickle
	// bytes (slowloris) do not hold sockets and goroutines.
	DefaultHTTPReadHeaderTimeout = 10 * time.Second
	// DefaultHTTPReadTimeout bounds reading a whole request, headers and
	// body. A client that sends a body of the default max_body_bytes
	// (4 MiB) needs at least about 70 KB/s to finish in time.
	DefaultHTTPReadTimeout = time.Minute
	// DefaultHTTPIdleTimeout bounds how long a keep-alive connection waits
	// for its next request.
	DefaultHTTPIdleTimeout = 2 * time.Minute
)

// resolveHTTP fills the HTTP server's timeouts from the file.
func resolveHTTP(raw *fileConfig, cfg *Config, diags *hcl.Diagnostics) {
	*diags = append(*diags, decodeDuration(raw.HTTPReadHeaderTimeout, "http_read_header_timeout",
		&cfg.HTTPReadHeaderTimeout)...)
	*diags = append(*diags, decodeDuration(raw.HTTPReadTimeout, "http_read_timeout", &cfg.HTTPReadTimeout)...)
	*diags = append(*diags, decodeDuration(raw.HTTPIdleTimeout, "http_idle_timeout", &cfg.HTTPIdleTimeout)...)
}

// validateHTTP checks the HTTP server's timeouts of any configuration.
// Zero, which net/http reads as no limit, is rejected, so that a
// configuration built in code cannot drop the bound by leaving a field
// out.
func validateHTTP(c *Config) []error {
	errs := []error{
		positive("http_read_header_timeout", c.HTTPReadHeaderTimeout),
		positive("http_read_timeout", c.HTTPReadTimeout),
		positive("http_idle_timeout", c.HTTPIdleTimeout),
	}
	if c.HTTPReadHeaderTimeout > 0 && c.HTTPReadTimeout > 0 && c.HTTPReadTimeout < c.HTTPReadHeaderTimeout {
		errs = append(errs, fmt.Errorf("http_read_timeout %s is shorter than http_read_header_timeout %s; "+
			"it bounds the headers and the body together, so raise it to at least %s",
			c.HTTPReadTimeout, c.HTTPReadHeaderTimeout, formatDuration(c.HTTPReadHeaderTimeout)))
	}
	return errs
}
