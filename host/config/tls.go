package config

import (
	"crypto/x509"
	"fmt"
	"os"
	"strings"

	"github.com/hashicorp/hcl/v2"
)

// decodeCAFile reads ca_file and checks, at load time, that the file
// contains at least one PEM certificate and that the url uses TLS, so that
// a wrong path stops the worker at start with the attribute's position.
func decodeCAFile(block coordinatorBlock, dir string, out *Coordinator) hcl.Diagnostics {
	if block.CAFile == nil {
		return nil
	}
	if strings.TrimSpace(*block.CAFile) == "" {
		return hcl.Diagnostics{errorAt(block.CAFileRange, "Invalid ca_file",
			"ca_file must name a PEM file of the CA certificates that signed the coordinator's certificate.")}
	}
	url := strings.ToLower(block.URL)
	if !strings.HasPrefix(url, "wss://") && !strings.HasPrefix(url, "https://") {
		return hcl.Diagnostics{errorAt(block.CAFileRange, "ca_file without TLS",
			fmt.Sprintf("ca_file is set but url %q does not use TLS; use a wss:// or https:// url, "+
				"or remove ca_file.", block.URL))}
	}
	out.CAFile = resolvePath(dir, *block.CAFile)
	data, err := os.ReadFile(out.CAFile)
	if err != nil {
		return hcl.Diagnostics{errorAt(block.CAFileRange, "Invalid ca_file",
			fmt.Sprintf("Read ca_file: %v.", err))}
	}
	if !x509.NewCertPool().AppendCertsFromPEM(data) {
		return hcl.Diagnostics{errorAt(block.CAFileRange, "Invalid ca_file",
			fmt.Sprintf("%s contains no PEM certificate; give the CA certificate in PEM "+
				"(-----BEGIN CERTIFICATE-----).", out.CAFile))}
	}
	return nil
}
