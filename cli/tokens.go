package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/dtf-io/dtf/coordinator"
	"github.com/dtf-io/dtf/coordinator/store"
)

// runTokens runs `dtf tokens create|list|revoke`, which manage the bearer
// tokens of the HTTP API in the coordinator's store. Like dtf credentials,
// they open the SQLite file in data_dir directly, which works while the
// coordinator runs. The coordinator reads a token's record on every
// request, so a revocation applies to the next request.
func (a *App) runTokens(ctx context.Context, args []string) int {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return a.errorf("tokens needs a subcommand: create, list or revoke, " +
			"for example dtf tokens create -config coordinator.hcl -role read")
	}
	sub, args := args[0], args[1:]
	fs := a.newFlagSet("tokens "+sub, "-config FILE")
	config := fs.String("config", "", "coordinator config file in HCL, whose data_dir contains the store (required)")
	var role, name, id, output *string
	var expires *time.Duration
	switch sub {
	case "create":
		role = fs.String("role", "", "role of the token: read (GET endpoints) or submit (read, submit and cancel) "+
			"(required)")
		name = fs.String("name", "", "label of the token in dtf tokens list, such as ci")
		expires = fs.Duration("expires", 0, "lifetime of the token, for example 720h; 0 never expires")
	case "revoke":
		id = fs.String("id", "", "id of the token to revoke, from dtf tokens list (required)")
	case "list":
		output = outputFlag(fs)
	default:
		return a.errorf("unknown tokens subcommand %q; use create, list or revoke", sub)
	}
	if err := fs.Parse(args); err != nil {
		return helpOrUsageError(err)
	}
	if !a.noArgs(fs) {
		return ExitError
	}
	if output != nil {
		if err := checkOutput(*output); err != nil {
			return a.errorf("%v", err)
		}
	}
	if *config == "" {
		return a.errorf("tokens %s needs -config FILE, the coordinator's config", sub)
	}
	switch {
	case sub == "create" && !coordinator.ValidRole(*role):
		return a.errorf("tokens create needs -role %s or -role %s, got %q", coordinator.RoleRead,
			coordinator.RoleSubmit, *role)
	case sub == "create" && *expires < 0:
		return a.errorf("-expires %s is negative; give a lifetime such as 720h, or 0 for none", *expires)
	case sub == "revoke" && *id == "":
		return a.errorf("tokens revoke needs -id ID; dtf tokens list -config %s shows the ids", *config)
	}

	st, err := openCoordinatorStore(ctx, *config, sub == "create")
	if err != nil {
		return a.errorf("%v", err)
	}
	defer st.Close()
	switch sub {
	case "create":
		return a.createToken(ctx, st, *role, *name, *expires)
	case "revoke":
		if err := st.RevokeAPIToken(ctx, *id, a.now()); err != nil {
			return a.errorf("%v; dtf tokens list -config %s shows the ids", err, *config)
		}
		fmt.Fprintf(a.Stdout, "Revoked API token %s.\n", *id)
		return ExitOK
	default:
		return a.listTokens(ctx, st, *output)
	}
}

// createToken stores a new token's hash and prints the token once.
func (a *App) createToken(ctx context.Context, st *store.SQLite, role, name string, expires time.Duration) int {
	now := a.now()
	token, record, err := coordinator.NewAPIToken(role, now)
	if err != nil {
		return a.errorf("%v", err)
	}
	record.Name = name
	if expires > 0 {
		record.Expires = now.Add(expires).UTC()
	}
	if err := st.CreateAPIToken(ctx, record); err != nil {
		return a.errorf("%v", err)
	}
	// Only the token goes to standard output, so that a script can take
	// it with TOKEN=$(dtf tokens create ...); the guidance goes to stderr.
	fmt.Fprintf(a.Stderr, "Created API token %s with role %s", record.ID, role)
	if !record.Expires.IsZero() {
		fmt.Fprintf(a.Stderr, ", expires %s", record.Expires.Format(time.RFC3339))
	}
	fmt.Fprintln(a.Stderr, ".")
	fmt.Fprintf(a.Stderr, "The token follows on standard output, shown only this once (the coordinator "+
		"keeps only its SHA-256). Send it with dtf -token TOKEN, or set %s=TOKEN, or as the HTTP header "+
		"Authorization: Bearer TOKEN.\n", tokenEnv)
	fmt.Fprintln(a.Stdout, token)
	return ExitOK
}

// tokenRecord is a token in the JSON output of tokens list, without its
// hash.
type tokenRecord struct {
	ID      string    `json:"id"`
	Name    string    `json:"name,omitempty"`
	Role    string    `json:"role"`
	State   string    `json:"state"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires,omitzero"`
	Revoked time.Time `json:"revoked,omitzero"`
}

// listTokens prints every token's record; the store has no token text.
func (a *App) listTokens(ctx context.Context, st *store.SQLite, output string) int {
	tokens, err := st.ListAPITokens(ctx)
	if err != nil {
		return a.errorf("%v", err)
	}
	now := a.now()
	if output == "json" {
		records := make([]tokenRecord, 0, len(tokens))
		for _, t := range tokens {
			records = append(records, tokenRecord{ID: t.ID, Name: t.Name, Role: t.Role, State: tokenState(t, now),
				Created: t.Created, Expires: t.Expires, Revoked: t.Revoked})
		}
		if err := writeJSON(a.Stdout, map[string]any{"tokens": records}); err != nil {
			return a.errorf("write output: %v", err)
		}
		return ExitOK
	}
	table := newTable(a.Stdout)
	fmt.Fprintln(table, "ID\tNAME\tROLE\tSTATE\tCREATED\tEXPIRES\tREVOKED")
	for _, t := range tokens {
		fmt.Fprintf(table, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, cell(t.Name), t.Role, tokenState(t, now),
			formatTime(t.Created), formatTime(t.Expires), formatTime(t.Revoked))
	}
	if err := table.Flush(); err != nil {
		return a.errorf("write table: %v", err)
	}
	return ExitOK
}

// tokenState returns active, revoked or expired.
func tokenState(t store.APIToken, now time.Time) string {
	switch {
	case !t.Revoked.IsZero() && !t.Revoked.After(now):
		return "revoked"
	case !t.ActiveAt(now):
		return "expired"
	}
	return "active"
}
