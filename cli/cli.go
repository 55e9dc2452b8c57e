// Package cli implements the dtf command: the coordinator and worker
// servers, and the client commands that submit, list, watch and cancel tasks
// through the coordinator's HTTP API. cmd/dtf only calls Main.
package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/mattn/go-isatty"

	"github.com/dtf-io/dtf/coordinator/api"
)

// Version is the dtf release; builds may set it with
// -ldflags "-X github.com/dtf-io/dtf/cli.Version=...".
var Version = "0.1.0-dev"

// Exit codes of the dtf command.
const (
	// ExitOK means the command did what it was asked and, for watch and
	// run, every task succeeded.
	ExitOK = 0
	// ExitTasksFailed means watch or run saw a task end failed, timed out
	// or cancelled.
	ExitTasksFailed = 1
	// ExitError means a usage error, an invalid task file, a failed request
	// or a server that stopped with an error.
	ExitError = 2
)

// Environment variables of the API client commands.
const (
	// addrEnv sets the coordinator address.
	addrEnv = "DTF_ADDR"
	// tokenEnv sets the API token, which dtf tokens create prints.
	tokenEnv = "DTF_API_TOKEN"
	// caFileEnv sets the PEM file of the CA that signed an https
	// coordinator's certificate.
	caFileEnv = "DTF_CA_FILE"
)

// App is one run of the dtf command with its streams and environment, so
// that tests can drive it without a process.
type App struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Getenv reads the environment; nil reads nothing.
	Getenv func(string) string
	// Terminal reports that Stdout is a terminal, which turns on the live
	// progress bar of watch.
	Terminal bool
	// Now returns the current time; nil means time.Now.
	Now func() time.Time

	// token and caFile are the -token and -ca-file flags of the running
	// API client command, set by addrFlag.
	token  *string
	caFile *string
}

// command is one subcommand.
type command struct {
	name    string
	summary string
	run     func(a *App, ctx context.Context, args []string) int
}

func commands() []command {
	return []command{
		{"coordinator", "run the coordinator server", (*App).runCoordinator},
		{"worker", "run a worker host", (*App).runWorker},
		{"validate", "check a worker or coordinator config without starting it", (*App).runValidate},
		{"submit", "submit tasks from a task file or flags", (*App).runSubmit},
		{"run", "submit tasks and watch them until they end", (*App).runRun},
		{"tasks", "list tasks", (*App).runTasks},
		{"workers", "list workers", (*App).runWorkers},
		{"watch", "follow a batch of tasks until every task ends", (*App).runWatch},
		{"cancel", "cancel tasks by id", (*App).runCancel},
		{"credentials", "create, list, rotate or revoke worker credentials", (*App).runCredentials},
		{"tokens", "create, list or revoke API tokens", (*App).runTokens},
		{"version", "print the dtf version", (*App).runVersion},
	}
}

// Main runs the dtf command with the process's streams and returns the exit
// code. SIGINT and SIGTERM cancel the command's context.
func Main(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	app := &App{
		Stdin:    os.Stdin,
		Stdout:   os.Stdout,
		Stderr:   os.Stderr,
		Getenv:   os.Getenv,
		Terminal: isatty.IsTerminal(os.Stdout.Fd()),
	}
	return app.Run(ctx, args)
}

// Run parses args, which exclude the program name, and runs the subcommand.
func (a *App) Run(ctx context.Context, args []string) int {
	global := flag.NewFlagSet("dtf", flag.ContinueOnError)
	global.SetOutput(a.Stderr)
	addr := global.String("addr", "", "coordinator HTTP address (default $"+addrEnv+" or "+api.DefaultAddr+")")
	token := global.String("token", "", "API token sent to the coordinator (default $"+tokenEnv+")")
	caFile := global.String("ca-file", "", "PEM file of the CA of an https coordinator (default $"+caFileEnv+
		" or the system roots)")
	global.Usage = func() { a.usage(global) }
	if err := global.Parse(args); err != nil {
		return helpOrUsageError(err)
	}
	if global.NArg() == 0 {
		a.usage(global)
		return ExitError
	}

	name, rest := global.Arg(0), global.Args()[1:]
	if *addr != "" {
		// A global -addr acts as the subcommand's default.
		a.Getenv = overrideEnv(a.Getenv, addrEnv, *addr)
	}
	if *token != "" {
		a.Getenv = overrideEnv(a.Getenv, tokenEnv, *token)
	}
	if *caFile != "" {
		a.Getenv = overrideEnv(a.Getenv, caFileEnv, *caFile)
	}
	for _, cmd := range commands() {
		if cmd.name == name {
			return cmd.run(a, ctx, rest)
		}
	}
	if name == "help" {
		a.usage(global)
		return ExitOK
	}
	fmt.Fprintf(a.Stderr, "dtf: unknown command %q; run dtf help for the list\n", name)
	return ExitError
}

func (a *App) usage(global *flag.FlagSet) {
	w := a.Stderr
	fmt.Fprintln(w, "Usage: dtf [-addr URL] COMMAND [flags] [args]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Commands:")
	for _, cmd := range commands() {
		fmt.Fprintf(w, "  %-12s %s\n", cmd.name, cmd.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Global flags:")
	global.PrintDefaults()
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run dtf COMMAND -h for the flags of a command. Exit status: 0 success,")
	fmt.Fprintln(w, "1 a watched task failed, timed out or was cancelled, 2 any other error.")
}

// helpOrUsageError maps a flag parse error to an exit code; the flag package
// has already printed the problem or the help text.
func helpOrUsageError(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return ExitOK
	}
	return ExitError
}

func (a *App) getenv(name string) string {
	if a.Getenv == nil {
		return ""
	}
	return a.Getenv(name)
}

func overrideEnv(getenv func(string) string, name, value string) func(string) string {
	return func(key string) string {
		if key == name {
			return value
		}
		if getenv == nil {
			return ""
		}
		return getenv(key)
	}
}

func (a *App) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

// errorf prints a dtf error line and returns ExitError.
func (a *App) errorf(format string, args ...any) int {
	fmt.Fprintf(a.Stderr, "dtf: "+format+"\n", args...)
	return ExitError
}

// newFlagSet returns a subcommand's flag set that prints its usage line and
// defaults to Stderr.
func (a *App) newFlagSet(name, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet("dtf "+name, flag.ContinueOnError)
	fs.SetOutput(a.Stderr)
	fs.Usage = func() {
		fmt.Fprintf(a.Stderr, "Usage: dtf %s %s\n\nFlags:\n", name, usage)
		fs.PrintDefaults()
	}
	return fs
}

// addrFlag adds -addr to fs with the default from DTF_ADDR, and the
// -token and -ca-file flags that a.client uses, with defaults from
// DTF_API_TOKEN and DTF_CA_FILE.
func (a *App) addrFlag(fs *flag.FlagSet) *string {
	def := a.getenv(addrEnv)
	if def == "" {
		def = api.DefaultAddr
	}
	// The default stays empty, and client reads the variable, so that -h
	// never prints a token from the environment.
	a.token = fs.String("token", "", "API token for a coordinator whose api.auth is token (default $"+
		tokenEnv+")")
	a.caFile = fs.String("ca-file", a.getenv(caFileEnv), "PEM file of the CA that signed the coordinator's "+
		"certificate, in place of the system roots; $"+caFileEnv+" sets the default")
	return fs.String("addr", def, "coordinator HTTP address, http:// or https://; $"+addrEnv+" sets the default")
}

// outputFlag adds -output to fs; its value is checked by checkOutput.
func outputFlag(fs *flag.FlagSet) *string {
	return fs.String("output", "table", "output format: table or json")
}

func checkOutput(format string) error {
	if format != "table" && format != "json" {
		return fmt.Errorf("invalid -output %q; use table or json", format)
	}
	return nil
}

// client returns an API client for addr with the command's -token and
// -ca-file.
func (a *App) client(addr string) (*api.Client, error) {
	client, err := api.NewClient(addr)
	if err != nil {
		return nil, err
	}
	if a.token != nil {
		token := *a.token
		if token == "" {
			token = a.getenv(tokenEnv)
		}
		client.Token = strings.TrimSpace(token)
	}
	if a.caFile != nil && *a.caFile != "" {
		pool, err := loadCAFile(*a.caFile)
		if err != nil {
			return nil, fmt.Errorf("-ca-file: %w", err)
		}
		client.HTTP = &http.Client{
			Timeout:   clientTimeout,
			Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}},
		}
	}
	return client, nil
}

// clientTimeout bounds one API request, as api.Client does by default.
const clientTimeout = 30 * time.Second

// loadCAFile reads a PEM file of CA certificates into a pool.
func loadCAFile(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("%s contains no PEM certificate; give the CA certificate in PEM", path)
	}
	return pool, nil
}

// requestError describes a failed API request. When the coordinator could
// not be reached at all, it adds how to start it or point dtf elsewhere, and
// when TLS failed, the fix that schemeHint names.
func requestError(client *api.Client, err error) string {
	if hint := schemeHint(client, err); hint != "" {
		return err.Error() + "; " + hint
	}
	var respErr *api.ResponseError
	if errors.As(err, &respErr) {
		return err.Error()
	}
	var netErr *net.OpError
	if errors.As(err, &netErr) || errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Sprintf("%v; is the coordinator running at %s? "+
			"start it with dtf coordinator -config FILE, or set -addr or $%s",
			err, client.BaseURL, addrEnv)
	}
	return err.Error()
}

func (a *App) runVersion(_ context.Context, args []string) int {
	fs := a.newFlagSet("version", "[-output table|json]")
	output := outputFlag(fs)
	if err := fs.Parse(args); err != nil {
		return helpOrUsageError(err)
	}
	if !a.noArgs(fs) {
		return ExitError
	}
	if err := checkOutput(*output); err != nil {
		return a.errorf("%v", err)
	}
	if *output == "json" {
		err := writeJSON(a.Stdout, map[string]string{
			"version": Version, "go": runtime.Version(), "os": runtime.GOOS, "arch": runtime.GOARCH,
		})
		if err != nil {
			return a.errorf("write output: %v", err)
		}
		return ExitOK
	}
	fmt.Fprintf(a.Stdout, "dtf %s (%s %s/%s)\n", Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return ExitOK
}

// noArgs reports an error for positional arguments a command does not take.
func (a *App) noArgs(fs *flag.FlagSet) bool {
	if fs.NArg() == 0 {
		return true
	}
	a.errorf("%s takes no arguments, got %q; flags go before arguments",
		fs.Name(), strings.Join(fs.Args(), " "))
	return false
}
