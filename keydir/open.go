package keydir

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

// SQLiteFileName is the database file Open uses inside the data directory.
const SQLiteFileName = "sealgate.db"

// sqliteMaxConns bounds the connection pool. WAL lets readers run in
// parallel with the single writer; more connections than this only add
// contention on the write lock.
const sqliteMaxConns = 8

// Open opens the store the configuration names: database "" is SQLite in
// dataDir (see SQLiteFileName); a postgres:// or postgresql:// URL is
// PostgreSQL. The caller closes the store.
func Open(ctx context.Context, database, dataDir string) (Store, error) {
	switch {
	case database == "":
		if dataDir == "" {
			return nil, errors.New("keydir: open: data directory is empty")
		}
		return OpenSQLite(ctx, filepath.Join(dataDir, SQLiteFileName))
	case isPostgresURL(database):
		return OpenPostgres(ctx, database)
	default:
		// Never echo database: it may hold a password.
		return nil, errors.New(`keydir: open: unsupported database setting: want "" (SQLite in data_dir) or a postgres:// URL`)
	}
}

func isPostgresURL(s string) bool {
	l := strings.ToLower(s)
	return strings.HasPrefix(l, "postgres://") || strings.HasPrefix(l, "postgresql://")
}

// SQLStore is the SQL implementation of Store on SQLite and PostgreSQL;
// the queries are written once and adapted by the dialect.
type SQLStore struct {
	db *sql.DB
	d  dialect

	// stmts caches prepared statements of the hot paths (key lookups and
	// audit appends): preparing costs more than running them.
	stmtMu sync.Mutex
	stmts  map[string]*sql.Stmt

	lookups lookupCache // see lookupcache.go

	// SQLite only: the shared change counter (changes_unix.go), nil where
	// there is none, and the generation last read with the counter value
	// read before it (see currentGeneration).
	changes *changeCounter
	genSeen atomic.Pointer[genSnapshot]
	// genQueries counts generation reads from the database, for tests.
	genQueries atomic.Int64

	// SQLite only: the background checkpointer (see checkpointLoop).
	stopCkpt chan struct{}
	ckptDone chan struct{}
}

// stmt returns the prepared statement for query (already rebound),
// preparing it on first use.
func (s *SQLStore) stmt(ctx context.Context, query string) (*sql.Stmt, error) {
	s.stmtMu.Lock()
	defer s.stmtMu.Unlock()
	if st, ok := s.stmts[query]; ok {
		return st, nil
	}
	st, err := s.db.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	if s.stmts == nil {
		s.stmts = map[string]*sql.Stmt{}
	}
	s.stmts[query] = st
	return st, nil
}

// OpenSQLite opens (creating if needed) the SQLite database at path and
// brings its schema up to date. A new database file and its directory are
// private to the owner (0600 and 0700).
func OpenSQLite(ctx context.Context, path string) (*SQLStore, error) {
	if path == "" {
		return nil, errors.New("keydir: open sqlite: empty path")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("keydir: open sqlite: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
		return nil, fmt.Errorf("keydir: open sqlite: %w", err)
	}
	if err := createPrivateFile(abs); err != nil {
		return nil, err
	}
	db, err := sql.Open("sqlite", sqliteDSN(abs))
	if err != nil {
		return nil, fmt.Errorf("keydir: open sqlite %s: %w", abs, err)
	}
	db.SetMaxOpenConns(sqliteMaxConns)
	db.SetMaxIdleConns(sqliteMaxConns)
	s := &SQLStore{db: db, d: sqliteDialect}
	if err := s.init(ctx); err != nil {
		return nil, errors.Join(fmt.Errorf("keydir: open sqlite %s: %w", abs, err), db.Close())
	}
	// Without the counter (no shared memory here) every lookup reads the
	// generation from the database, as on PostgreSQL: slower, as correct.
	if c, err := openChangeCounter(abs + changeCounterSuffix); err == nil {
		s.changes = c
		c.bump() // a migration just run may have changed the directory
	}
	s.stopCkpt, s.ckptDone = make(chan struct{}), make(chan struct{})
	go s.checkpointLoop(checkpointEvery)
	return s, nil
}

// checkpointEvery is how often the checkpointer copies the WAL into the
// database file. It bounds the WAL to what is written in that time.
const checkpointEvery = 250 * time.Millisecond

// checkpointLoop runs SQLite's WAL checkpoints in the background. SQLite
// would otherwise run one inside whichever commit grows the WAL past 1,000
// pages — with its fsyncs of the WAL and the database file, about 7 ms on
// our machines — so every few hundred messages one SMTP reply (and every
// session waiting on the same audit batch) took that much longer. Here
// connections do not checkpoint (wal_autocheckpoint 0) and this goroutine
// does, PASSIVE: it never waits for readers or writers, and what it cannot
// copy now it copies at the next tick. Commits stay durable as before
// (synchronous=NORMAL; see sqliteDSN).
func (s *SQLStore) checkpointLoop(every time.Duration) {
	defer close(s.ckptDone)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.stopCkpt:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			_, _ = s.db.ExecContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)")
			cancel()
		}
	}
}

func (s *SQLStore) init(ctx context.Context) error {
	if err := s.db.PingContext(ctx); err != nil {
		return err
	}
	_, err := migrate(ctx, s.db, s.d, migrations())
	return err
}

// createPrivateFile creates path with mode 0600 unless it exists, so that
// SQLite (which gives its -wal and -shm files the database file's mode)
// never creates anything readable by others. An existing file keeps the
// mode its operator chose.
func createPrivateFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("keydir: create %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("keydir: create %s: %w", path, err)
	}
	return nil
}

// sqliteDSN is the modernc.org/sqlite data source name for the absolute
// path. The path is a URI so that '?' or '#' in it cannot be taken for
// parameters; the pragmas run on every new connection.
func sqliteDSN(abs string) string {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(5000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "foreign_keys(1)")
	// In WAL mode, NORMAL syncs the WAL at checkpoints, not at every
	// commit: a committed transaction survives a crash of the process, and
	// the database stays consistent after a power failure or an operating
	// system crash, which may lose the transactions committed since the last
	// checkpoint. FULL would sync the WAL at every commit.
	q.Add("_pragma", "synchronous(NORMAL)")
	// Statement journals (the undo log of a statement that writes several
	// rows, such as an audit batch) in memory, not in a temporary file:
	// they hold a few pages each, and spilling them to disk costs a write
	// system call per page.
	q.Add("_pragma", "temp_store(MEMORY)")
	// Checkpoints run in the background (SQLStore.checkpointLoop), not in
	// the commit that happens to fill the WAL; after a checkpoint the WAL
	// file is cut back to this size.
	q.Add("_pragma", "wal_autocheckpoint(0)")
	q.Add("_pragma", "journal_size_limit(67108864)")
	// BEGIN IMMEDIATE: every transaction here writes, and taking the write
	// lock up front makes busy_timeout apply instead of failing with
	// SQLITE_BUSY when a read snapshot cannot be upgraded.
	q.Set("_txlock", "immediate")
	// A format SQLite's own date functions understand.
	q.Set("_time_format", "sqlite")
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(abs), RawQuery: q.Encode()}
	return u.String()
}

// Close closes the database.
func (s *SQLStore) Close() error {
	if s.stopCkpt != nil {
		close(s.stopCkpt)
		<-s.ckptDone
		s.stopCkpt = nil
	}
	s.stmtMu.Lock()
	for _, st := range s.stmts {
		_ = st.Close()
	}
	s.stmts = nil
	s.stmtMu.Unlock()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("keydir: close: %w", err)
	}
	return nil
}
