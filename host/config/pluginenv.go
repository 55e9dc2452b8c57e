package config

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/hashicorp/hcl/v2"

	dtfplugin "github.com/dtf-io/dtf/plugin"
	"github.com/dtf-io/dtf/protocol"
)

// Environment variables that hold the worker's credentials by convention:
// the shipped worker.hcl and `dtf credentials create` name them.
const (
	SecretEnv = "DTF_WORKER_SECRET"
	TokenEnv  = "DTF_WORKER_TOKEN"
)

// maxSecretFileBytes bounds the read of secret_file for checkPluginEnv. A
// secret is about 60 bytes, and the reconnection plugin rejects a file
// larger than this.
const maxSecretFileBytes = 4 << 10

// checkPluginEnv rejects a plugin other than the connector whose env lists
// SecretEnv, TokenEnv or any variable whose value contains the worker's secret
// or equals its token, because the plugin would receive that value. The
// connector gets the credentials in its configuration, so no plugin needs
// them in its environment. lookup reads the host's environment
// (os.LookupEnv in production). Diagnostics never contain a value.
func checkPluginEnv(
	block pluginBlock,
	coord Coordinator,
	lookup func(string) (string, bool),
) hcl.Diagnostics {
	if block.Kind == dtfplugin.KindConnector || (len(block.Env) == 0 && len(block.Args) == 0) {
		return nil
	}
	secret := coord.Secret
	if secret == "" && coord.SecretFile != "" {
		secret = readSecretFileForCheck(coord.SecretFile)
	}
	if _, err := protocol.CredentialIDOf(secret); err != nil {
		// Load reports an invalid literal secret, and a short value
		// would match variables by chance.
		secret = ""
	}
	token := strings.TrimSpace(coord.Token)

	var diags hcl.Diagnostics
	for _, name := range block.Env {
		var reason string
		value, set := lookup(name)
		switch {
		case name == SecretEnv:
			reason = "by convention contains the worker's secret"
		case name == TokenEnv:
			reason = "by convention contains the worker's token"
		case !set:
			continue
		case secret != "" && strings.Contains(value, secret):
			reason = "contains the worker's secret"
		case token != "" && strings.TrimSpace(value) == token:
			reason = "equals the worker's token"
		default:
			continue
		}
		diags = append(diags, errorAt(block.EnvRange, "Worker credential in plugin env", fmt.Sprintf(
			"Plugin %q of kind %q lists %s in env, and that variable %s, so the plugin would receive it. "+
				"Remove %s from env: only the reconnection plugin needs the credential, and the worker "+
				"passes it in that plugin's configuration.", block.Name, block.Kind, name, reason, name)))
	}
	// Arguments are visible to every local user in the process list, so a
	// credential there leaks even further than in the environment.
	for i, arg := range block.Args {
		var reason string
		switch {
		case secret != "" && strings.Contains(arg, secret):
			reason = "contains the worker's secret"
		case token != "" && strings.Contains(arg, token):
			reason = "contains the worker's token"
		default:
			continue
		}
		diags = append(diags, errorAt(block.ArgsRange, "Worker credential in plugin args", fmt.Sprintf(
			"Argument %d of plugin %q of kind %q %s, so the plugin, and any local user who lists "+
				"processes, would see it. Remove it: only the reconnection plugin needs the credential, "+
				"and the worker passes it in that plugin's configuration.", i+1, block.Name, block.Kind, reason)))
	}
	return diags
}

// readSecretFileForCheck returns the trimmed content of the secret file,
// or "" when it cannot be read. The reconnection plugin reports an
// unreadable file when it starts.
func readSecretFileForCheck(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxSecretFileBytes+1))
	if err != nil || len(data) > maxSecretFileBytes {
		return ""
	}
	return strings.TrimSpace(string(data))
}
