package keydir

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"math/bits"
	"strconv"
	"strings"
	"sync"
	"time"
)

// AuditRecord is what the gateway did for one recipient of one message.
// It never holds a subject or body.
type AuditRecord struct {
	Seq         int64     // position in the chain, from 1; set by AppendAudit
	Time        time.Time // when the decision was final
	TxID        string    // the gateway's transaction ID (also in its log)
	MessageID   string    // the Message-ID header, when DATA was received
	Sender      string    // envelope sender
	Recipient   string    // normalised envelope recipient
	Decision    string    // "encrypted", "plain", "refused", "deferred"
	Format      string    // "pgp", "smime" or "" (plaintext or no decision)
	Fingerprint string    // the key or certificate used, if any
	KeySource   string    // where the key came from ("directory")
	Rule        string    // the policy rule that matched
	Outcome     string    // upstream's reply, or the reply the client got
	PrevHash    string    // Hash of the record before (hex); "" for the first
	Hash        string    // SHA-256 over PrevHash and this record (hex)
}

// AuditTrail is the store's hash-chained record of what the gateway did.
type AuditTrail interface {
	AppendAudit(ctx context.Context, records []AuditRecord) ([]AuditRecord, error)
	Audit(ctx context.Context, f AuditFilter) ([]AuditRecord, error)
	VerifyAudit(ctx context.Context) (n int64, head string, err error)
}

// AuditFilter selects records for Audit; zero fields match everything.
type AuditFilter struct {
	Since     time.Time
	Recipient string // normalised address
	Limit     int    // 0: no limit
}

// auditLockID serialises appends on PostgreSQL, where several nodes may
// append to one chain (SQLite's BEGIN IMMEDIATE already does).
const auditLockID = 0x5ea1a0d17

// auditLockQuery takes the lock. It is a statement of its own, before the
// head is read: a READ COMMITTED statement reads the snapshot taken when it
// starts, so a head read in the statement that waited for the lock could
// miss the append it waited for.
var auditLockQuery = fmt.Sprintf("SELECT pg_advisory_xact_lock(%d)", auditLockID)

// chainHash links a record to the one before it. Every field that says
// what happened is covered, and so is the sequence number, so a changed,
// removed or reordered record breaks the chain (see VerifyAudit). Each
// field is hashed as "<length>:<value>;", the length in decimal bytes, so
// no two different records hash alike.
func chainHash(r AuditRecord) string {
	// Big enough for a typical record, so that it takes no allocation but
	// the result.
	var buf [1024]byte
	var num [64]byte
	b := appendHashField(buf[:0], r.PrevHash)
	b = appendHashField(b, strconv.AppendInt(num[:0], r.Seq, 10))
	b = appendHashField(b, r.Time.UTC().AppendFormat(num[:0], time.RFC3339Nano))
	for _, f := range [...]string{r.TxID, r.MessageID, r.Sender, r.Recipient, r.Decision, r.Format,
		r.Fingerprint, r.KeySource, r.Rule, r.Outcome} {
		b = appendHashField(b, f)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// appendHashField appends f to b as chainHash hashes it.
func appendHashField[T string | []byte](b []byte, f T) []byte {
	b = strconv.AppendInt(b, int64(len(f)), 10)
	b = append(b, ':')
	b = append(b, f...)
	return append(b, ';')
}

// auditInsertSizes is how many INSERT statements AppendAudit uses: they
// write 1, 2, 4, … auditInsertMaxRows records, and a batch is written with
// those that add up to its length (13 records: 8, 4 and 1), so an append
// runs a few statements instead of one per record. 64 rows of 14 columns
// stay far below the placeholder limits (SQLite's 32766, PostgreSQL's 65535).
const (
	auditInsertSizes   = 7
	auditInsertMaxRows = 1 << (auditInsertSizes - 1)
)

// auditChunks returns the row counts of the INSERTs that write n records,
// largest first.
func auditChunks(n int) []int {
	var out []int
	for n > 0 {
		c := auditInsertMaxRows
		for c > n {
			c /= 2
		}
		out, n = append(out, c), n-c
	}
	return out
}

// auditInserts holds the INSERT statements of auditChunks by dialect name,
// for n rows at index log2(n).
var auditInserts = sync.OnceValue(func() map[string][auditInsertSizes]string {
	m := map[string][auditInsertSizes]string{}
	for _, d := range []dialect{sqliteDialect, pgDialect} {
		var qs [auditInsertSizes]string
		for i := range qs {
			qs[i] = d.rebind(auditInsert(1 << i))
		}
		m[d.name] = qs
	}
	return m
})

// auditInsert returns the INSERT of n audit records.
func auditInsert(n int) string {
	const row = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
	var b strings.Builder
	b.WriteString("INSERT INTO audit (" + auditColumns + ") VALUES ")
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(row)
	}
	return b.String()
}

const auditInsertColumns = 14

// AppendAudit adds records to the end of the hash chain in one
// transaction and returns them with Seq, PrevHash and Hash set.
func (s *SQLStore) AppendAudit(ctx context.Context, records []AuditRecord) ([]AuditRecord, error) {
	if len(records) == 0 {
		return []AuditRecord{}, nil
	}
	chunks := auditChunks(len(records))
	// Prepared before the transaction: preparing inside it could wait for
	// a pooled connection held by another append waiting for this one's lock.
	head, err := s.stmt(ctx, auditHeadQuery)
	if err != nil {
		return nil, fmt.Errorf("keydir: append audit: %w", err)
	}
	var inserts [auditInsertSizes]*sql.Stmt
	for _, n := range chunks {
		if i := bits.Len(uint(n)) - 1; inserts[i] == nil {
			if inserts[i], err = s.stmt(ctx, auditInserts()[s.d.name][i]); err != nil {
				return nil, fmt.Errorf("keydir: append audit: %w", err)
			}
		}
	}
	out := make([]AuditRecord, len(records))
	args := make([]any, 0, chunks[0]*auditInsertColumns)
	err = s.runTx(ctx, func(tx *sql.Tx) error { // no key changes: no counter bump
		if s.d.name == "postgres" {
			if _, err := tx.ExecContext(ctx, auditLockQuery); err != nil {
				return err
			}
		}
		seq, prev, err := auditHead(ctx, tx.StmtContext(ctx, head))
		if err != nil {
			return err
		}
		for i, r := range records {
			seq++
			r.Seq, r.PrevHash, r.Time = seq, prev, dbTime(r.Time)
			r.Hash = chainHash(r)
			prev, out[i] = r.Hash, r
		}
		rest := out
		for _, n := range chunks {
			args = args[:0]
			for _, r := range rest[:n] {
				args = append(args, r.Seq, r.Time, r.TxID, r.MessageID, r.Sender, r.Recipient, r.Decision,
					r.Format, r.Fingerprint, r.KeySource, r.Rule, r.Outcome, r.PrevHash, r.Hash)
			}
			if _, err := tx.StmtContext(ctx, inserts[bits.Len(uint(n))-1]).ExecContext(ctx, args...); err != nil {
				return err
			}
			rest = rest[n:]
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("keydir: append audit: %w", err)
	}
	return out, nil
}

const auditHeadQuery = `SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1`

func auditHead(ctx context.Context, st *sql.Stmt) (int64, string, error) {
	var seq int64
	var hash string
	err := st.QueryRowContext(ctx).Scan(&seq, &hash)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, "", nil
	}
	return seq, hash, err
}

const auditColumns = `seq, at, tx_id, message_id, sender, recipient, decision, format,
	fingerprint, key_source, rule, outcome, prev_hash, hash`

// Audit returns the records matching f, oldest first.
func (s *SQLStore) Audit(ctx context.Context, f AuditFilter) ([]AuditRecord, error) {
	var where []string
	var args []any
	if !f.Since.IsZero() {
		where, args = append(where, "at >= ?"), append(args, dbTime(f.Since))
	}
	if f.Recipient != "" {
		where, args = append(where, "recipient = ?"), append(args, f.Recipient)
	}
	q := "SELECT " + auditColumns + " FROM audit"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY seq"
	if f.Limit > 0 {
		q += " LIMIT " + strconv.Itoa(f.Limit)
	}
	var out []AuditRecord
	err := s.scanAudit(ctx, s.d.rebind(q), args, func(r AuditRecord) error {
		out = append(out, r)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("keydir: audit: %w", err)
	}
	return out, nil
}

func (s *SQLStore) scanAudit(ctx context.Context, query string, args []any, fn func(AuditRecord) error) (err error) {
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, rows.Close()) }()
	for rows.Next() {
		var r AuditRecord
		if err := rows.Scan(&r.Seq, &r.Time, &r.TxID, &r.MessageID, &r.Sender, &r.Recipient, &r.Decision,
			&r.Format, &r.Fingerprint, &r.KeySource, &r.Rule, &r.Outcome, &r.PrevHash, &r.Hash); err != nil {
			return err
		}
		r.Time = r.Time.UTC()
		if err := fn(r); err != nil {
			return err
		}
	}
	return rows.Err()
}

// ErrAuditBroken is returned (wrapped, with the first bad record) when the
// audit chain does not verify.
var ErrAuditBroken = errors.New("keydir: audit chain broken")

// VerifyAudit walks the whole chain and reports the number of records and
// the hash of the newest. A changed record fails its own hash; a removed
// one leaves a gap in the sequence and breaks the link of the next; a
// reordered one breaks the links around it. Removing the newest records
// leaves a shorter valid chain: compare the head with one noted earlier.
func (s *SQLStore) VerifyAudit(ctx context.Context) (n int64, head string, err error) {
	var prev string
	q := "SELECT " + auditColumns + " FROM audit ORDER BY seq"
	err = s.scanAudit(ctx, q, nil, func(r AuditRecord) error {
		n++
		switch {
		case r.Seq != n:
			return fmt.Errorf("%w: record %d found where %d belongs (a record was removed or renumbered)", ErrAuditBroken, r.Seq, n)
		case r.PrevHash != prev:
			return fmt.Errorf("%w: record %d does not follow record %d (removed, reordered or changed)", ErrAuditBroken, r.Seq, r.Seq-1)
		case chainHash(r) != r.Hash:
			return fmt.Errorf("%w: record %d was changed", ErrAuditBroken, r.Seq)
		}
		prev = r.Hash
		return nil
	})
	if err != nil {
		if errors.Is(err, ErrAuditBroken) {
			return n, "", err
		}
		return n, "", fmt.Errorf("keydir: verify audit: %w", err)
	}
	return n, prev, nil
}

// schemaV3 adds the audit trail: one row per recipient decision, hash-chained.
func schemaV3() []string {
	return []string{
		`CREATE TABLE audit (
			seq         BIGINT NOT NULL PRIMARY KEY,
			at          {{TIMESTAMP}} NOT NULL,
			tx_id       TEXT NOT NULL,
			message_id  TEXT NOT NULL,
			sender      TEXT NOT NULL,
			recipient   TEXT NOT NULL,
			decision    TEXT NOT NULL,
			format      TEXT NOT NULL,
			fingerprint TEXT NOT NULL,
			key_source  TEXT NOT NULL,
			rule        TEXT NOT NULL,
			outcome     TEXT NOT NULL,
			prev_hash   TEXT NOT NULL,
			hash        TEXT NOT NULL
		)`,
		`CREATE INDEX audit_recipient ON audit (recipient, seq)`,
		`CREATE INDEX audit_at ON audit (at)`,
	}
}

// auditSeqRowid (schema v5) makes seq the audit table's rowid on SQLite.
// Version 3 declared it BIGINT PRIMARY KEY, which SQLite keeps as a
// separate unique index beside the rowid, so every append wrote one more
// B-tree page than needed. PostgreSQL's table is unchanged.
func auditSeqRowid(ctx context.Context, tx *sql.Tx, d dialect) error {
	if d.name != "sqlite" {
		return nil
	}
	// The v3 table, with seq as INTEGER (the rowid alias) under a new name,
	// then v3's indexes on the renamed table.
	v3 := schemaV3()
	create := strings.NewReplacer("CREATE TABLE audit (", "CREATE TABLE audit_v5 (",
		"seq         BIGINT NOT NULL PRIMARY KEY", "seq         INTEGER NOT NULL PRIMARY KEY").Replace(d.rebind(v3[0]))
	if !strings.Contains(create, "audit_v5") || !strings.Contains(create, "INTEGER NOT NULL PRIMARY KEY") {
		return errors.New("audit table definition not as expected")
	}
	stmts := []string{
		create,
		`INSERT INTO audit_v5 (` + auditColumns + `) SELECT ` + auditColumns + ` FROM audit ORDER BY seq`,
		`DROP TABLE audit`,
		`ALTER TABLE audit_v5 RENAME TO audit`,
	}
	for _, q := range append(stmts, v3[1:]...) {
		if _, err := tx.ExecContext(ctx, d.rebind(q)); err != nil {
			return err
		}
	}
	return nil
}
