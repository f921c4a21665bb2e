package keydir

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// migrationLockID is the PostgreSQL advisory lock key that serialises
// schema migrations of every sealgate process on one database (the ASCII
// of "sgkeydir"). It is a transaction lock: released at commit or
// rollback, also when a process dies half-way.
const migrationLockID = 0x73676b6579646972

var pgDialect = dialect{
	name:               "postgres",
	dollarPlaceholders: true,
	blobType:           "BYTEA",
	timestampType:      "TIMESTAMPTZ",
	serialPK:           "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
	forUpdate:          "FOR UPDATE",
	// Taken first in the migration transaction: a second process opening
	// the same database waits here, then finds the schema current. So
	// CREATE TABLE IF NOT EXISTS schema_version never races either.
	lockMigrations: fmt.Sprintf("SELECT pg_advisory_xact_lock(%d)", int64(migrationLockID)),
}

// Connection pool bounds for PostgreSQL. The server's max_connections
// (100 by default) is shared by every node, so each takes a few.
const (
	pgMaxConns        = 16
	pgMaxIdleConns    = 4
	pgConnMaxLifetime = 30 * time.Minute // picks up a failed-over server's new address
)

// OpenPostgres opens the PostgreSQL database at the postgres:// URL and
// brings its schema up to date; processes sharing one database may open
// it at the same time. Tables live in the connection's search_path (set
// it with a search_path=… URL parameter for a schema of their own).
// Errors never contain the URL or its password.
func OpenPostgres(ctx context.Context, databaseURL string) (*SQLStore, error) {
	cfg, err := pgx.ParseConfig(lowerScheme(databaseURL))
	if err != nil {
		// A static message: pgx masks passwords only on a best-effort
		// basis, and the error it wraps may quote the whole URL.
		return nil, errors.New("keydir: open postgres: cannot parse the database URL (not shown: it may hold a password)")
	}
	db := stdlib.OpenDB(*cfg)
	db.SetMaxOpenConns(pgMaxConns)
	db.SetMaxIdleConns(pgMaxIdleConns)
	db.SetConnMaxLifetime(pgConnMaxLifetime)
	s := &SQLStore{db: db, d: pgDialect}
	if err := s.init(ctx); err != nil {
		// Errors from pgx name the user, host and database, never the
		// password; should one ever slip in, it is masked here.
		if msg := scrubPassword(err.Error(), databaseURL); msg != err.Error() {
			err = errors.New(msg)
		}
		return nil, errors.Join(fmt.Errorf("keydir: open postgres: %w", err), db.Close())
	}
	return s, nil
}

// lowerScheme lower-cases the URL scheme, which pgx recognises only in
// lower case ("PostgreSQL://" is a valid URL too).
func lowerScheme(databaseURL string) string {
	scheme, rest, ok := strings.Cut(databaseURL, "://")
	if !ok {
		return databaseURL
	}
	return strings.ToLower(scheme) + "://" + rest
}

// scrubPassword replaces the password of databaseURL, if it has one, in msg.
func scrubPassword(msg, databaseURL string) string {
	u, err := url.Parse(databaseURL)
	if err != nil || u.User == nil {
		return msg
	}
	pw, ok := u.User.Password()
	if !ok || pw == "" {
		return msg
	}
	return strings.ReplaceAll(msg, pw, "xxxxx")
}
