package keydir

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// dialect holds what differs between the SQL databases the store runs on.
// Every query in this package is written once, with '?' placeholders and
// the type tokens {{BLOB}}, {{TIMESTAMP}} and {{SERIAL_PK}}, and the
// suffix {{FOR_UPDATE}}; the dialect rewrites them.
// Queries must not contain '?' anywhere but in placeholders.
type dialect struct {
	name string
	// dollarPlaceholders rewrites '?' to $1, $2, … (PostgreSQL).
	dollarPlaceholders bool
	blobType           string
	timestampType      string
	// serialPK declares an auto-incrementing integer primary key.
	serialPK string
	// forUpdate ends a SELECT that must lock the rows it reads until the
	// transaction ends. SQLite needs none (see lockMigrations).
	forUpdate string
	// lockMigrations, when set, runs first in the migration transaction so
	// that concurrent openers migrate one at a time. SQLite needs none: the
	// store opens transactions with BEGIN IMMEDIATE, which takes the lock.
	lockMigrations string
}

var sqliteDialect = dialect{
	name:          "sqlite",
	blobType:      "BLOB",
	timestampType: "TIMESTAMP", // modernc.org/sqlite converts this declared type to time.Time
	// AUTOINCREMENT: a sequence number is never reused, even after the
	// newest row is deleted.
	serialPK: "INTEGER PRIMARY KEY AUTOINCREMENT",
}

// rebind returns query in the dialect's syntax.
func (d dialect) rebind(query string) string {
	if strings.Contains(query, "{{") {
		query = strings.NewReplacer("{{BLOB}}", d.blobType, "{{TIMESTAMP}}", d.timestampType,
			"{{SERIAL_PK}}", d.serialPK, "{{FOR_UPDATE}}", d.forUpdate).Replace(query)
	}
	if !d.dollarPlaceholders {
		return query
	}
	var b strings.Builder
	n := 0
	for _, r := range query {
		if r != '?' {
			b.WriteRune(r)
			continue
		}
		n++
		b.WriteByte('$')
		b.WriteString(strconv.Itoa(n))
	}
	return b.String()
}

// migration is one schema version: SQL statements, then, when set, a Go
// step for what SQL cannot compute portably, in the same transaction.
type migration struct {
	stmts []string
	fill  func(ctx context.Context, tx *sql.Tx, d dialect) error
}

// migrations returns the schema history; entry i brings the schema to
// version i+1. Append only: never edit an entry that has been released.
func migrations() []migration {
	return []migration{
		{stmts: schemaV1()},
		{stmts: schemaV2(), fill: backfillWKD},
		{stmts: schemaV3()},
		{stmts: schemaV4(), fill: generationTriggers},
		{fill: auditSeqRowid},
	}
}

// schemaV1 creates the key and address tables.
func schemaV1() []string {
	return []string{
		`CREATE TABLE keys (
			fingerprint TEXT NOT NULL PRIMARY KEY,
			kind        TEXT NOT NULL CHECK (kind IN ('pgp', 'x509')),
			data        {{BLOB}} NOT NULL,
			created_at  {{TIMESTAMP}} NOT NULL,
			updated_at  {{TIMESTAMP}} NOT NULL
		)`,
		`CREATE TABLE key_addresses (
			address     TEXT NOT NULL,
			fingerprint TEXT NOT NULL REFERENCES keys (fingerprint) ON DELETE CASCADE,
			PRIMARY KEY (address, fingerprint)
		)`,
		// The primary key (address, fingerprint) is the index Lookup uses;
		// a separate index on address alone would duplicate it. The cascade
		// from keys and the reads of a key's addresses go by fingerprint.
		`CREATE INDEX key_addresses_fingerprint ON key_addresses (fingerprint)`,
	}
}

// schemaV2 adds admin tokens, the change history, the key-ID index and
// the WKD index of addresses.
func schemaV2() []string {
	return []string{
		// The WKD index: the domain and WKD hash of every address, filled
		// by Put and, for the rows stored before, by backfillWKD.
		`ALTER TABLE key_addresses ADD COLUMN domain TEXT NOT NULL DEFAULT ''`,
		`ALTER TABLE key_addresses ADD COLUMN wkd_hash TEXT NOT NULL DEFAULT ''`,
		`CREATE INDEX key_addresses_wkd ON key_addresses (domain, wkd_hash)`,
		// secret_hash is SHA-256 of the secret; UNIQUE is the index that
		// AuthenticateToken looks it up by.
		`CREATE TABLE tokens (
			id          TEXT NOT NULL PRIMARY KEY,
			name        TEXT NOT NULL,
			scope       TEXT NOT NULL CHECK (scope IN ('read', 'write')),
			secret_hash {{BLOB}} NOT NULL UNIQUE,
			created_at  {{TIMESTAMP}} NOT NULL,
			revoked_at  {{TIMESTAMP}}
		)`,
		// Events outlive their keys: no foreign key to keys. addresses is
		// the space-separated list shown in the history; event_addresses
		// is the index History reads.
		`CREATE TABLE events (
			seq         {{SERIAL_PK}},
			at          {{TIMESTAMP}} NOT NULL,
			actor       TEXT NOT NULL,
			action      TEXT NOT NULL,
			fingerprint TEXT NOT NULL,
			addresses   TEXT NOT NULL
		)`,
		`CREATE TABLE event_addresses (
			address TEXT NOT NULL,
			seq     BIGINT NOT NULL REFERENCES events (seq) ON DELETE CASCADE,
			PRIMARY KEY (address, seq)
		)`,
		`CREATE INDEX events_fingerprint ON events (fingerprint)`,
		// key_id is the primary key's ID (RFC 9580 §5.5.4): the low 64 bits
		// of a v4 fingerprint, the high 64 bits of a v6 one.
		`CREATE TABLE key_ids (
			key_id      TEXT NOT NULL,
			fingerprint TEXT NOT NULL REFERENCES keys (fingerprint) ON DELETE CASCADE,
			PRIMARY KEY (key_id, fingerprint)
		)`,
		`CREATE INDEX key_ids_fingerprint ON key_ids (fingerprint)`,
		// Backfill for the keys stored before this version; keyIDOf is the
		// same rule in Go, used by Put.
		`INSERT INTO key_ids (key_id, fingerprint)
			SELECT SUBSTR(fingerprint, 25, 16), fingerprint FROM keys
			WHERE kind = 'pgp' AND LENGTH(fingerprint) = 40`,
		`INSERT INTO key_ids (key_id, fingerprint)
			SELECT SUBSTR(fingerprint, 1, 16), fingerprint FROM keys
			WHERE kind = 'pgp' AND LENGTH(fingerprint) = 64`,
	}
}

// migrate brings the database to the newest schema version in one
// transaction and returns that version.
func migrate(ctx context.Context, db *sql.DB, d dialect, steps []migration) (version int, err error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("keydir: migrate: begin: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback() // the error that caused it is the one to report
		}
	}()
	if d.lockMigrations != "" {
		if _, err := tx.ExecContext(ctx, d.lockMigrations); err != nil {
			return 0, fmt.Errorf("keydir: migrate: lock: %w", err)
		}
	}
	current, err := schemaVersion(ctx, tx, d)
	if err != nil {
		return 0, err
	}
	if current > len(steps) {
		return 0, fmt.Errorf("keydir: migrate: database schema version %d is newer than this program (%d)", current, len(steps))
	}
	for v := current + 1; v <= len(steps); v++ {
		if err := applyMigration(ctx, tx, d, v, steps[v-1]); err != nil {
			return 0, err
		}
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("keydir: migrate: commit: %w", err)
	}
	return len(steps), nil
}

// schemaVersion creates the schema_version table if needed and returns the
// highest version applied (0 for a new database).
func schemaVersion(ctx context.Context, tx *sql.Tx, d dialect) (int, error) {
	create := `CREATE TABLE IF NOT EXISTS schema_version (
		version    INTEGER NOT NULL PRIMARY KEY,
		applied_at {{TIMESTAMP}} NOT NULL
	)`
	if _, err := tx.ExecContext(ctx, d.rebind(create)); err != nil {
		return 0, fmt.Errorf("keydir: migrate: create schema_version: %w", err)
	}
	var v sql.NullInt64
	if err := tx.QueryRowContext(ctx, `SELECT MAX(version) FROM schema_version`).Scan(&v); err != nil {
		return 0, fmt.Errorf("keydir: migrate: read schema version: %w", err)
	}
	return int(v.Int64), nil
}

func applyMigration(ctx context.Context, tx *sql.Tx, d dialect, version int, m migration) error {
	for _, s := range m.stmts {
		if _, err := tx.ExecContext(ctx, d.rebind(s)); err != nil {
			return fmt.Errorf("keydir: migrate to version %d: %w", version, err)
		}
	}
	if m.fill != nil {
		if err := m.fill(ctx, tx, d); err != nil {
			return fmt.Errorf("keydir: migrate to version %d: %w", version, err)
		}
	}
	_, err := tx.ExecContext(ctx, d.rebind(`INSERT INTO schema_version (version, applied_at) VALUES (?, ?)`),
		version, dbTime(time.Now()))
	if err != nil {
		return fmt.Errorf("keydir: migrate: record version %d: %w", version, err)
	}
	return nil
}

// dbTime is t as the store keeps it: UTC, microsecond precision (what
// PostgreSQL keeps), so every store returns the same value it was given.
func dbTime(t time.Time) time.Time {
	return t.UTC().Truncate(time.Microsecond)
}
