package keydir

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
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

// auditLockID serialises appends on PostgreSQL (SQLite's BEGIN IMMEDIATE
// already does).
const auditLockID = 0x5ea1a0d17

// chainHash links a record to the one before it. Every field that says
// what happened is covered, and so is the sequence number, so a changed,
// removed or reordered record breaks the chain (see VerifyAudit).
func chainHash(r AuditRecord) string {
	h := sha256.New()
	for _, f := range []string{r.PrevHash, strconv.FormatInt(r.Seq, 10), r.Time.UTC().Format(time.RFC3339Nano),
		r.TxID, r.MessageID, r.Sender, r.Recipient, r.Decision, r.Format, r.Fingerprint, r.KeySource, r.Rule, r.Outcome} {
		// Length-prefixed, so no two different records hash alike.
		fmt.Fprintf(h, "%d:%s;", len(f), f)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// AppendAudit adds records to the end of the hash chain in one
// transaction and returns them with Seq, PrevHash and Hash set.
func (s *SQLStore) AppendAudit(ctx context.Context, records []AuditRecord) ([]AuditRecord, error) {
	out := make([]AuditRecord, len(records))
	// Prepared before the transaction: preparing inside it could wait for
	// a pooled connection held by another append waiting for this one's lock.
	head, err := s.stmt(ctx, auditHeadQuery)
	if err != nil {
		return nil, fmt.Errorf("keydir: append audit: %w", err)
	}
	ins, err := s.stmt(ctx, s.d.rebind(auditInsert))
	if err != nil {
		return nil, fmt.Errorf("keydir: append audit: %w", err)
	}
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		if s.d.name == "postgres" {
			if _, err := tx.ExecContext(ctx, fmt.Sprintf("SELECT pg_advisory_xact_lock(%d)", auditLockID)); err != nil {
				return err
			}
		}
		seq, prev, err := auditHead(ctx, tx.StmtContext(ctx, head))
		if err != nil {
			return err
		}
		insTx := tx.StmtContext(ctx, ins)
		for i, r := range records {
			seq++
			r.Seq, r.PrevHash, r.Time = seq, prev, dbTime(r.Time)
			r.Hash = chainHash(r)
			if _, err := insTx.ExecContext(ctx, r.Seq, r.Time, r.TxID, r.MessageID, r.Sender,
				r.Recipient, r.Decision, r.Format, r.Fingerprint, r.KeySource, r.Rule, r.Outcome, r.PrevHash, r.Hash); err != nil {
				return err
			}
			prev, out[i] = r.Hash, r
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("keydir: append audit: %w", err)
	}
	return out, nil
}

const auditInsert = `INSERT INTO audit (seq, at, tx_id, message_id, sender, recipient, decision, format,
	fingerprint, key_source, rule, outcome, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`

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
