package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	// Register the pure Go SQLite driver as "sqlite".
	_ "modernc.org/sqlite"
)

//go:embed migrations/*.sql
var migrations embed.FS

// busyTimeout is how long a connection waits for a lock held by another
// connection before it fails with SQLITE_BUSY.
const busyTimeout = 5 * time.Second

// readConns bounds the reader pool. WAL mode lets readers run beside the
// one writer.
const readConns = 4

// SQLite is the Store on an SQLite file in WAL mode. All writes go through
// one connection, so the transactions of one process never wait on each
// other for SQLite's write lock, and through one writer goroutine, which
// commits the writes that wait at the same time together (writer.go).
type SQLite struct {
	write  *sql.DB
	read   *sql.DB
	writer *writer
	reader *readDB
}

var _ Store = (*SQLite)(nil)

// OpenSQLite opens or creates the store at path and applies the embedded
// migrations that the file does not have yet.
func OpenSQLite(ctx context.Context, path string) (*SQLite, error) {
	if err := restrictMode(path); err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	// SQLite reports SQLITE_BUSY without waiting for busy_timeout when
	// another process holds the file while this one switches it to WAL,
	// as when `dtf tokens create` migrates a new store while the
	// coordinator starts. Such an open is tried again for a bounded time.
	deadline := time.Now().Add(openBusyWait)
	for {
		st, err := openSQLite(ctx, path)
		if err == nil || !isBusy(err) || time.Now().After(deadline) {
			return st, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(openBusyRetry):
		}
	}
}

// openBusyWait bounds the retries of an open that found the store busy,
// and openBusyRetry is the pause between two tries.
const (
	openBusyWait  = 2 * busyTimeout
	openBusyRetry = 50 * time.Millisecond
)

// isBusy reports whether err is SQLite's "database is locked".
func isBusy(err error) bool {
	return strings.Contains(err.Error(), "SQLITE_BUSY")
}

func openSQLite(ctx context.Context, path string) (*SQLite, error) {
	write, err := openDB(path, true)
	if err != nil {
		return nil, err
	}
	write.SetMaxOpenConns(1)
	if err := migrate(ctx, write); err != nil {
		write.Close()
		return nil, fmt.Errorf("migrate store %s: %w", path, err)
	}
	if err := probeWrite(ctx, write); err != nil {
		write.Close()
		return nil, fmt.Errorf("store %s cannot be written: %w; give the coordinator's user write access "+
			"to the file and its folder", path, err)
	}
	read, err := openDB(path, false)
	if err != nil {
		write.Close()
		return nil, err
	}
	read.SetMaxOpenConns(readConns)
	return &SQLite{
		write:  write,
		read:   read,
		writer: newWriter(write),
		reader: &readDB{db: read, stmts: newStmtCache(read)},
	}, nil
}

// storeFileMode is the mode of the store file. The store holds the
// verifiers of worker credentials and the hashes of API tokens, so only
// its owner may read it. SQLite gives the -wal and -shm files that it
// creates next to the store the store's mode.
const storeFileMode = 0o600

// restrictMode creates the store file with storeFileMode, or takes the
// group and other permissions away from an existing one. A file that the
// process may not change keeps its mode; opening it then fails or works
// as it would have.
func restrictMode(path string) error {
	info, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, storeFileMode)
		if errors.Is(err, os.ErrExist) {
			return nil
		}
		if err != nil {
			return err
		}
		return f.Close()
	}
	if err != nil {
		return err
	}
	if info.Mode().Perm()&0o077 != 0 {
		_ = os.Chmod(path, info.Mode().Perm()&^0o077)
	}
	return nil
}

// probeWrite runs a write that changes nothing. SQLite opens a file it may
// not write as read-only without an error, and a store whose migrations
// are all applied would then only fail at the first task.
func probeWrite(ctx context.Context, db *sql.DB) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, "DELETE FROM saved_sessions WHERE 0"); err != nil {
		return err
	}
	return tx.Commit()
}

func openDB(path string, writer bool) (*sql.DB, error) {
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds()))
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "foreign_keys(1)")
	// FULL syncs the WAL on every commit. The coordinator acknowledges a
	// change only after its commit, so the change must survive a power
	// loss, which NORMAL does not promise in WAL mode.
	q.Add("_pragma", "synchronous(FULL)")
	if writer {
		// Take the write lock at BEGIN so that a read-then-write
		// transaction never fails on upgrading its lock.
		q.Set("_txlock", "immediate")
	}
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	if err := db.Ping(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return db, nil
}

// migrate applies every migrations/NNNN_name.sql whose version is not in
// schema_migrations, each in its own transaction.
func migrate(ctx context.Context, db *sql.DB) error {
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER PRIMARY KEY,
		name       TEXT    NOT NULL,
		applied_ms BIGINT  NOT NULL)`); err != nil {
		return err
	}
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return err
	}
	sort.Strings(names)
	seen := map[int]string{}
	for _, name := range names {
		base := strings.TrimPrefix(name, "migrations/")
		version, err := strconv.Atoi(strings.SplitN(base, "_", 2)[0])
		if err != nil {
			return fmt.Errorf("migration %s: name must start with a version number: %w", base, err)
		}
		// Two files with one version would apply only the first, silently.
		if other, dup := seen[version]; dup {
			return fmt.Errorf("migrations %s and %s share version %d; give each its own number",
				other, base, version)
		}
		seen[version] = base
		if err := applyMigration(ctx, db, version, base, name); err != nil {
			return fmt.Errorf("migration %s: %w", base, err)
		}
	}
	return nil
}

func applyMigration(ctx context.Context, db *sql.DB, version int, base, name string) error {
	body, err := migrations.ReadFile(name)
	if err != nil {
		return err
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()

	var count int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM schema_migrations WHERE version = ?`,
		version).Scan(&count); err != nil {
		return err
	}
	if count > 0 {
		return nil
	}
	for _, stmt := range splitStatements(string(body)) {
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("%w in statement %q", err, firstLine(stmt))
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_ms) VALUES (?, ?, ?)`,
		version, base, time.Now().UnixMilli()); err != nil {
		return err
	}
	return tx.Commit()
}

// splitStatements splits a migration at semicolons that end a line, after
// dropping comment lines. Migrations keep one statement per such semicolon.
func splitStatements(body string) []string {
	var stmts []string
	var current strings.Builder
	for _, line := range strings.Split(body, "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "--") || trimmed == "" {
			continue
		}
		current.WriteString(line)
		current.WriteString("\n")
		if strings.HasSuffix(trimmed, ";") {
			stmts = append(stmts, strings.TrimSpace(current.String()))
			current.Reset()
		}
	}
	if rest := strings.TrimSpace(current.String()); rest != "" {
		stmts = append(stmts, rest)
	}
	return stmts
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// Close stops the writer after its current batch and closes both
// connection pools. Writes still waiting fail with ErrClosed.
func (s *SQLite) Close() error {
	s.writer.close()
	s.reader.stmts.close()
	return errors.Join(s.read.Close(), s.write.Close())
}

// inTx runs fn in a write transaction, which it may share with other
// writes, and returns once that transaction committed. fn's changes are
// rolled back alone when fn returns an error; a failed commit fails every
// write of the transaction. fn must use the ctx it is given, which bounds
// the whole transaction, and not the caller's: cancelling a statement
// aborts the transaction of every write in it.
func (s *SQLite) inTx(ctx context.Context, fn writeFunc) error {
	return s.writer.do(ctx, fn)
}

// queryer is the part of *sql.DB and *sql.Tx that reads use.
type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func fromMillis(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

func toMillis(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// placeholders returns "?, ?, ?" for n arguments.
func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}
