package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Group commit: every write of the SQLite store runs on one writer
// goroutine, which takes the requests waiting at that moment, runs each in
// its own savepoint of one transaction and commits them together. With
// synchronous(FULL) a commit costs a sync of the WAL file, so concurrent
// outcomes, checkpoints and assignments share one sync instead of queueing
// for one each. The writer does not wait for more requests to arrive: the
// requests that come in while a batch commits form the next batch, so an
// idle store commits a lone request at once.
//
// Each request keeps its own result. A request whose function fails is
// rolled back to its savepoint and gets its error while the others go on.
// A failed commit returns its error to every request of the batch, and
// none of them returns a result, so the coordinator acknowledges nothing
// of a batch that is not on disk.

// maxBatchRequests bounds the requests of one batch, so that one commit
// does not hold the write lock, and the callers of the batch, for long.
// NOTE: 128 is a chosen bound, not a tuned one. Under the load tool's 50
// workers, batches stay near 25 requests.
const maxBatchRequests = 128

// batchTimeout bounds the statements and the commit of one batch.
const batchTimeout = 30 * time.Second

// maxCachedStatements bounds each prepared statement cache. The store's
// queries are a few dozen fixed texts, so the bound only matters for
// queries built from their input, such as a list of placeholders.
const maxCachedStatements = 256

// maxCachedParameters is the maximum number of bound parameters of a
// cached statement.
// Queries with more are built from long lists, such as the task IDs of a
// listing, whose every length would take its own cache entry.
const maxCachedParameters = 64

// ErrClosed is returned by a write on a closed store.
var ErrClosed = errors.New("store is closed")

// writeFunc is the body of one write request. It runs in its own
// savepoint of the batch's transaction, and ctx is the batch's context.
type writeFunc func(ctx context.Context, tx *txn) error

// writeRequest is one write waiting for the writer.
type writeRequest struct {
	ctx  context.Context
	fn   writeFunc
	done chan error
}

// writer runs the group commit loop on the store's write connection pool,
// which holds a single connection.
type writer struct {
	db    *sql.DB
	stmts *stmtCache
	queue chan *writeRequest
	// stop is closed by close, and exited when the loop returned.
	stop   chan struct{}
	exited chan struct{}
	once   sync.Once
	// batches counts committed batches, for tests and benchmarks.
	batches atomic.Int64
	// observer, when set, is called after each committed batch.
	observer atomic.Pointer[func(BatchCommit)]
}

// BatchCommit describes one committed batch of the group-commit writer.
type BatchCommit struct {
	// Requests is the number of write requests in the batch.
	Requests int
	// Duration runs from the start of the batch's transaction to the end
	// of its commit: the time the batch's callers wait once the writer
	// took their requests.
	Duration time.Duration
	// Commit is the time of the COMMIT alone, which includes the sync of
	// the WAL file.
	Commit time.Duration
}

// SetCommitObserver makes the store call observe after every committed
// batch, such as to record commit latency in a metric. observe runs on the
// writer goroutine, so it must return quickly. nil removes the observer.
func (s *SQLite) SetCommitObserver(observe func(BatchCommit)) {
	if observe == nil {
		s.writer.observer.Store(nil)
		return
	}
	s.writer.observer.Store(&observe)
}

func newWriter(db *sql.DB) *writer {
	w := &writer{
		db:     db,
		stmts:  newStmtCache(db),
		queue:  make(chan *writeRequest, maxBatchRequests),
		stop:   make(chan struct{}),
		exited: make(chan struct{}),
	}
	go w.run()
	return w
}

// do runs fn in the next batch and returns its error, or the batch's
// commit error. It returns ctx's error when ctx ends before the writer
// takes the request. Once taken, the request finishes with its batch,
// which batchTimeout bounds, so a caller never learns of a commit after
// it gave up.
func (w *writer) do(ctx context.Context, fn writeFunc) error {
	req := &writeRequest{ctx: ctx, fn: fn, done: make(chan error, 1)}
	select {
	case w.queue <- req:
	case <-ctx.Done():
		return fmt.Errorf("wait for the store writer: %w", ctx.Err())
	case <-w.stop:
		return ErrClosed
	}
	select {
	case err := <-req.done:
		return err
	case <-w.exited:
		// The loop may have sent the result just before it exited.
		select {
		case err := <-req.done:
			return err
		default:
			return ErrClosed
		}
	}
}

// close stops the loop after the batch in progress and fails the requests
// still queued with ErrClosed.
func (w *writer) close() {
	w.once.Do(func() { close(w.stop) })
	<-w.exited
	w.stmts.close()
}

func (w *writer) run() {
	defer close(w.exited)
	for {
		var first *writeRequest
		select {
		case first = <-w.queue:
		case <-w.stop:
			w.failQueued()
			return
		}
		batch := []*writeRequest{first}
	collect:
		for len(batch) < maxBatchRequests {
			select {
			case req := <-w.queue:
				batch = append(batch, req)
			default:
				break collect
			}
		}
		w.runBatch(batch)
	}
}

func (w *writer) failQueued() {
	for {
		select {
		case req := <-w.queue:
			req.done <- ErrClosed
		default:
			return
		}
	}
}

// runBatch runs the requests of one batch in one transaction and sends
// each request its result.
func (w *writer) runBatch(batch []*writeRequest) {
	ctx, cancel := context.WithTimeout(context.Background(), batchTimeout)
	defer cancel()
	errs := make([]error, len(batch))
	tx := &txn{stmts: w.stmts}
	start := time.Now()
	err := w.runRequests(ctx, tx, batch, errs)
	var commitStart time.Time
	if err == nil {
		commitStart = time.Now()
		err = w.commit(tx)
	} else if tx.Tx != nil {
		_ = tx.Rollback()
	}
	if err == nil {
		w.batches.Add(1)
		if observe := w.observer.Load(); observe != nil {
			end := time.Now()
			(*observe)(BatchCommit{Requests: len(batch), Duration: end.Sub(start), Commit: end.Sub(commitStart)})
		}
	}
	for i, req := range batch {
		if err != nil {
			req.done <- err
			continue
		}
		req.done <- errs[i]
	}
	// Prepare the statements the batch ran unprepared, now that the
	// connection is free again.
	w.stmts.prepareMissed(ctx)
}

// runRequests begins the transaction and runs each request in a savepoint.
// The error it returns fails the whole batch, while the error of a single
// request goes into errs.
func (w *writer) runRequests(ctx context.Context, tx *txn, batch []*writeRequest, errs []error) error {
	var err error
	if tx.Tx, err = w.db.BeginTx(ctx, nil); err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	for i, req := range batch {
		if err := req.ctx.Err(); err != nil {
			errs[i] = fmt.Errorf("wait for the store writer: %w", err)
			continue
		}
		if _, err := tx.ExecContext(ctx, `SAVEPOINT request`); err != nil {
			return fmt.Errorf("begin savepoint: %w", err)
		}
		if errs[i] = req.fn(ctx, tx); errs[i] != nil {
			// SQLite rolls back the whole transaction on some errors, such
			// as a full disk. The savepoint is then gone and the batch
			// fails.
			if _, err := tx.ExecContext(ctx, `ROLLBACK TO request`); err != nil {
				return fmt.Errorf("roll back a failed request (%v): %w", errs[i], err)
			}
		}
		if _, err := tx.ExecContext(ctx, `RELEASE request`); err != nil {
			return fmt.Errorf("release savepoint: %w", err)
		}
	}
	return nil
}

// commit commits the batch. When COMMIT fails and leaves the transaction
// open, as on a deferred constraint, the driver (modernc.org/sqlite
// v1.62.0, tx.go) rolls it back before it returns the connection, so the
// next batch starts clean.
func (w *writer) commit(tx *txn) error {
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// txn is the write transaction of one batch. Its statements use the
// writer's prepared statements where the cache has them.
type txn struct {
	*sql.Tx
	stmts *stmtCache
}

// ExecContext runs query in the transaction, prepared when the cache has it.
func (t *txn) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if stmt := t.stmts.forWrite(query); stmt != nil {
		return t.Tx.StmtContext(ctx, stmt).ExecContext(ctx, args...)
	}
	return t.Tx.ExecContext(ctx, query, args...)
}

// QueryContext runs query in the transaction, prepared when the cache has it.
func (t *txn) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if stmt := t.stmts.forWrite(query); stmt != nil {
		return t.Tx.StmtContext(ctx, stmt).QueryContext(ctx, args...)
	}
	return t.Tx.QueryContext(ctx, query, args...)
}

// QueryRowContext runs query in the transaction, prepared when the cache
// has it.
func (t *txn) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if stmt := t.stmts.forWrite(query); stmt != nil {
		return t.Tx.StmtContext(ctx, stmt).QueryRowContext(ctx, args...)
	}
	return t.Tx.QueryRowContext(ctx, query, args...)
}

// stmtCache keeps prepared statements by query text, because database/sql
// prepares again on every call that passes SQL text. Under the dispatch
// load of docs/benchmarks.md, parsing took 28 % of the coordinator's CPU,
// about as much as running the statements.
type stmtCache struct {
	db *sql.DB
	mu sync.Mutex
	// stmts are the prepared statements, and missed are the texts that ran
	// unprepared in a write transaction and wait to be prepared.
	stmts  map[string]*sql.Stmt
	missed map[string]bool
}

func newStmtCache(db *sql.DB) *stmtCache {
	return &stmtCache{db: db, stmts: map[string]*sql.Stmt{}, missed: map[string]bool{}}
}

// forWrite returns the prepared statement of query, or nil after noting
// query for prepareMissed. A write transaction holds the only connection
// of the write pool, so it cannot prepare on the pool itself.
func (c *stmtCache) forWrite(query string) *sql.Stmt {
	c.mu.Lock()
	defer c.mu.Unlock()
	if stmt := c.stmts[query]; stmt != nil {
		return stmt
	}
	if cacheable(query) && len(c.stmts)+len(c.missed) < maxCachedStatements {
		c.missed[query] = true
	}
	return nil
}

// prepareMissed prepares the statements noted by forWrite. A statement
// that fails to prepare keeps running unprepared and is tried again after
// its next use.
func (c *stmtCache) prepareMissed(ctx context.Context) {
	c.mu.Lock()
	missed := c.missed
	c.missed = map[string]bool{}
	c.mu.Unlock()
	for query := range missed {
		stmt, err := c.db.PrepareContext(ctx, query)
		if err != nil {
			continue
		}
		c.mu.Lock()
		c.stmts[query] = stmt
		c.mu.Unlock()
	}
}

// forRead returns the prepared statement of query, preparing it on the
// pool when the cache has room, or nil.
func (c *stmtCache) forRead(ctx context.Context, query string) *sql.Stmt {
	c.mu.Lock()
	stmt, full := c.stmts[query], len(c.stmts) >= maxCachedStatements
	c.mu.Unlock()
	if stmt != nil || full || !cacheable(query) {
		return stmt
	}
	stmt, err := c.db.PrepareContext(ctx, query)
	if err != nil {
		// Running the query unprepared reports the same error.
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if existing := c.stmts[query]; existing != nil {
		_ = stmt.Close()
		return existing
	}
	c.stmts[query] = stmt
	return stmt
}

func cacheable(query string) bool {
	return strings.Count(query, "?") <= maxCachedParameters
}

func (c *stmtCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for query, stmt := range c.stmts {
		_ = stmt.Close()
		delete(c.stmts, query)
	}
}

// readDB is the store's read pool with prepared statements.
type readDB struct {
	db    *sql.DB
	stmts *stmtCache
}

// QueryContext runs query on the read pool, prepared when the cache has room.
func (r *readDB) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if stmt := r.stmts.forRead(ctx, query); stmt != nil {
		return stmt.QueryContext(ctx, args...)
	}
	return r.db.QueryContext(ctx, query, args...)
}

// QueryRowContext runs query on the read pool, prepared when the cache has
// room.
func (r *readDB) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if stmt := r.stmts.forRead(ctx, query); stmt != nil {
		return stmt.QueryRowContext(ctx, args...)
	}
	return r.db.QueryRowContext(ctx, query, args...)
}
