package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/dtf-io/dtf/coordinator"
	coordconfig "github.com/dtf-io/dtf/coordinator/config"
	"github.com/dtf-io/dtf/coordinator/store"
	"github.com/dtf-io/dtf/protocol"
)

// defaultRotateGrace is how long the old credentials of a worker keep
// working after `dtf credentials rotate`, so that the new secret can reach
// the worker first.
const defaultRotateGrace = time.Hour

// credentialsFlags are the flags of the credentials subcommands.
type credentialsFlags struct {
	config     *string
	worker     *string
	expires    *time.Duration
	grace      *time.Duration
	credential *string
	secretFile *string
	output     *string
}

// runCredentials runs `dtf credentials create|list|rotate|revoke`. The
// commands open the coordinator's SQLite store in data_dir directly, which
// WAL mode allows while the coordinator runs. A running coordinator detects
// a revocation within a second.
func (a *App) runCredentials(ctx context.Context, args []string) int {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return a.errorf("credentials needs a subcommand: create, list, rotate or revoke, " +
			"for example dtf credentials create -config coordinator.hcl -worker worker-1")
	}
	sub, args := args[0], args[1:]
	fs := a.newFlagSet("credentials "+sub, "-config FILE -worker ID")
	flags := credentialsFlags{
		config: fs.String("config", "", "coordinator config file in HCL, whose data_dir contains the store (required)"),
		worker: fs.String("worker", "", "worker_id whose credentials to change or list"),
	}
	switch sub {
	case "create":
		flags.expires = fs.Duration("expires", 0, "lifetime of the credential, for example 720h; 0 never expires")
		flags.secretFile = secretFileFlag(fs)
	case "rotate":
		flags.grace = fs.Duration("grace", defaultRotateGrace,
			"how long the worker's old credentials keep working, for example 10m")
		flags.expires = fs.Duration("expires", 0, "lifetime of the new credential; 0 never expires")
		flags.secretFile = secretFileFlag(fs)
	case "revoke":
		flags.credential = fs.String("credential", "",
			"id of the credential to revoke; empty revokes every credential of the worker")
	case "list":
		flags.output = outputFlag(fs)
	default:
		return a.errorf("unknown credentials subcommand %q; use create, list, rotate or revoke", sub)
	}
	if err := fs.Parse(args); err != nil {
		return helpOrUsageError(err)
	}
	if !a.noArgs(fs) {
		return ExitError
	}
	if flags.output != nil {
		if err := checkOutput(*flags.output); err != nil {
			return a.errorf("%v", err)
		}
	}
	if *flags.config == "" {
		return a.errorf("credentials %s needs -config FILE, the coordinator's config", sub)
	}
	if *flags.worker == "" && sub != "list" {
		return a.errorf("credentials %s needs -worker ID, the worker's worker_id", sub)
	}
	if sub == "create" {
		if err := protocol.CheckWorkerID(*flags.worker); err != nil {
			return a.errorf("invalid -worker: %v", err)
		}
	}

	st, created, err := openOrCreateStore(ctx, *flags.config, sub == "create")
	if err != nil {
		return a.errorf("%v", err)
	}
	defer st.Close()
	if created != "" {
		// A mistyped data_dir would otherwise go unnoticed until the
		// worker's login fails.
		fmt.Fprintf(a.Stderr, "Created a new, empty coordinator store at %s, because data_dir of %s had "+
			"none. If the coordinator already has a store, fix data_dir in %s and delete this one.\n",
			created, *flags.config, *flags.config)
	}
	switch sub {
	case "create":
		_, code := a.createCredential(ctx, st, flags, false)
		return code
	case "rotate":
		return a.rotateCredential(ctx, st, flags)
	case "revoke":
		return a.revokeCredentials(ctx, st, flags)
	default:
		return a.listCredentials(ctx, st, *flags.worker, *flags.output)
	}
}

func secretFileFlag(fs *flag.FlagSet) *string {
	return fs.String("secret-file", "", "write the secret to this file (mode 0600) instead of printing it; "+
		"a worker whose secret_file names it uses the new secret at its next handshake")
}

// openCoordinatorStore opens the SQLite store of the coordinator config at
// path. Only create makes a store that does not exist yet.
func openCoordinatorStore(ctx context.Context, path string, create bool) (*store.SQLite, error) {
	st, _, err := openOrCreateStore(ctx, path, create)
	return st, err
}

// openOrCreateStore is openCoordinatorStore that also returns the path of
// the store when it created one, or "" when the store existed.
func openOrCreateStore(ctx context.Context, path string, create bool) (*store.SQLite, string, error) {
	cfg, err := coordconfig.Load(path)
	if err != nil {
		return nil, "", err
	}
	storePath := filepath.Join(cfg.DataDir, coordinator.StoreFile)
	created := ""
	if _, err := os.Stat(storePath); errors.Is(err, os.ErrNotExist) {
		if !create {
			return nil, "", fmt.Errorf("no coordinator store at %s; check data_dir in %s", storePath, path)
		}
		if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
			return nil, "", fmt.Errorf("create data_dir %s: %w", cfg.DataDir, err)
		}
		created = storePath
	}
	st, err := store.OpenSQLite(ctx, storePath)
	if err != nil {
		return nil, "", err
	}
	return st, created, nil
}

// createCredential creates a credential and hands out its secret once:
// printed alone on standard output, or written to -secret-file, with the
// guidance on standard error. replaceFile lets -secret-file name an
// existing file, as rotate does; create refuses it, because that file may
// hold the secret of another worker. It returns the credential's id and
// the exit code.
func (a *App) createCredential(ctx context.Context, st *store.SQLite, flags credentialsFlags,
	replaceFile bool) (string, int) {
	if path := *flags.secretFile; path != "" && !replaceFile {
		if _, err := os.Lstat(path); err == nil {
			return "", a.errorf("-secret-file %s exists and may hold another worker's secret; "+
				"choose a new path, remove the file, or use dtf credentials rotate to replace the secret "+
				"of the worker that uses it", path)
		}
	}
	secret, verifier, err := protocol.NewCredential()
	if err != nil {
		return "", a.errorf("%v", err)
	}
	now := a.now()
	cred := store.Credential{
		WorkerID:     *flags.worker,
		CredentialID: verifier.CredentialID,
		Salt:         verifier.Salt,
		Iterations:   verifier.Iterations,
		StoredKey:    verifier.StoredKey,
		ServerKey:    verifier.ServerKey,
		Created:      now,
	}
	if *flags.expires < 0 {
		return "", a.errorf("-expires %s is negative; give a lifetime such as 720h, or 0 for none", *flags.expires)
	}
	if *flags.expires > 0 {
		cred.Expires = now.Add(*flags.expires)
	}
	// The secret file is written first, so a failure cannot leave a stored
	// credential whose secret was never written anywhere.
	if *flags.secretFile != "" {
		if err := writeSecretFile(*flags.secretFile, secret); err != nil {
			return "", a.errorf("%v", err)
		}
	}
	if err := st.CreateCredential(ctx, cred); err != nil {
		return "", a.errorf("%v", err)
	}

	fmt.Fprintf(a.Stderr, "Created credential %s for worker %s", cred.CredentialID, cred.WorkerID)
	if !cred.Expires.IsZero() {
		fmt.Fprintf(a.Stderr, ", expires %s", cred.Expires.Format(time.RFC3339))
	}
	fmt.Fprintln(a.Stderr, ".")
	if *flags.secretFile != "" {
		// worker.hcl resolves a relative path against its own folder, not
		// against the folder this command ran in.
		path, err := filepath.Abs(*flags.secretFile)
		if err != nil {
			path = *flags.secretFile
		}
		fmt.Fprintf(a.Stderr, "The secret is in %s. Set secret_file = %q in the coordinator block of "+
			"the worker's worker.hcl.\n", path, path)
		return cred.CredentialID, ExitOK
	}
	fmt.Fprintf(a.Stderr, "The secret follows on standard output, shown only this once (the coordinator "+
		"keeps only a verifier). Give it to the worker in worker.hcl, for example as\n"+
		"  coordinator { secret = env(\"DTF_WORKER_SECRET\") }\n"+
		"with DTF_WORKER_SECRET set in the worker's environment, or write it to a file that only the "+
		"worker's user can read and set secret_file = \"PATH\" instead.\n")
	fmt.Fprintln(a.Stdout, secret)
	return cred.CredentialID, ExitOK
}

// rotateCredential creates a new credential and lets the worker's other
// active credentials expire after the grace period.
func (a *App) rotateCredential(ctx context.Context, st *store.SQLite, flags credentialsFlags) int {
	if *flags.grace < 0 {
		return a.errorf("-grace %s is negative; give a duration such as 1h, or 0 to end the old "+
			"credentials at once", *flags.grace)
	}
	// A mistyped worker_id would otherwise get a first credential and a
	// success message while the credential to replace stays active.
	active, err := st.ActiveCredentials(ctx, *flags.worker, a.now())
	if err != nil {
		return a.errorf("%v", err)
	}
	if len(active) == 0 {
		return a.errorf("worker %q has no active credential to rotate; check the worker_id with "+
			"dtf credentials list -config FILE, or create a first one with dtf credentials create", *flags.worker)
	}
	newest, code := a.createCredential(ctx, st, flags, true)
	if code != ExitOK {
		return code
	}
	until := a.now().Add(*flags.grace)
	changed, err := st.ExpireCredentials(ctx, *flags.worker, newest, until)
	if err != nil {
		return a.errorf("%v", err)
	}
	for _, id := range changed {
		fmt.Fprintf(a.Stderr, "Old credential %s of worker %s expires %s.\n", id, *flags.worker,
			until.Format(time.RFC3339))
	}
	return ExitOK
}

// revokeCredentials revokes one or every credential of a worker. A running
// coordinator closes the worker's connections within a second.
func (a *App) revokeCredentials(ctx context.Context, st *store.SQLite, flags credentialsFlags) int {
	revoked, err := st.RevokeCredentials(ctx, *flags.worker, *flags.credential, a.now())
	if err != nil {
		return a.errorf("%v; list them with dtf credentials list -config FILE -worker %s", err, *flags.worker)
	}
	for _, id := range revoked {
		fmt.Fprintf(a.Stdout, "Revoked credential %s of worker %s.\n", id, *flags.worker)
	}
	return ExitOK
}

// credentialRecord is a credential in the JSON output of credentials list:
// its identity and lifetime, without the verifier.
type credentialRecord struct {
	WorkerID     string    `json:"worker_id"`
	CredentialID string    `json:"credential_id"`
	State        string    `json:"state"`
	Created      time.Time `json:"created"`
	Expires      time.Time `json:"expires,omitzero"`
	Revoked      time.Time `json:"revoked,omitzero"`
}

// listCredentials prints the credentials of one worker, or of all, without
// any secret: the store has none.
func (a *App) listCredentials(ctx context.Context, st *store.SQLite, workerID, output string) int {
	creds, err := st.ListCredentials(ctx, workerID)
	if err != nil {
		return a.errorf("%v", err)
	}
	now := a.now()
	if output == "json" {
		records := make([]credentialRecord, 0, len(creds))
		for _, c := range creds {
			records = append(records, credentialRecord{WorkerID: c.WorkerID, CredentialID: c.CredentialID,
				State: credentialState(c, now), Created: c.Created, Expires: c.Expires, Revoked: c.Revoked})
		}
		if err := writeJSON(a.Stdout, map[string]any{"credentials": records}); err != nil {
			return a.errorf("write output: %v", err)
		}
		return ExitOK
	}
	table := newTable(a.Stdout)
	fmt.Fprintln(table, "WORKER\tCREDENTIAL\tSTATE\tCREATED\tEXPIRES\tREVOKED")
	for _, c := range creds {
		fmt.Fprintf(table, "%s\t%s\t%s\t%s\t%s\t%s\n", cell(c.WorkerID), c.CredentialID, credentialState(c, now),
			formatTime(c.Created), formatTime(c.Expires), formatTime(c.Revoked))
	}
	if err := table.Flush(); err != nil {
		return a.errorf("write table: %v", err)
	}
	return ExitOK
}

// credentialState returns active, revoked or expired.
func credentialState(c store.Credential, now time.Time) string {
	switch {
	case !c.Revoked.IsZero() && !c.Revoked.After(now):
		return "revoked"
	case !c.ActiveAt(now):
		return "expired"
	}
	return "active"
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// writeSecretFile writes secret to path with mode 0600 through a temporary
// file and a rename, so that a worker that reads the file at the same time
// reads the old secret or the new one, never a part.
func writeSecretFile(path, secret string) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, ".dtf-secret-*")
	if err != nil {
		return fmt.Errorf("write secret file %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("write secret file %s: %w", path, err)
	}
	if _, err := tmp.WriteString(secret + "\n"); err != nil {
		tmp.Close()
		return fmt.Errorf("write secret file %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write secret file %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write secret file %s: %w", path, err)
	}
	return nil
}
