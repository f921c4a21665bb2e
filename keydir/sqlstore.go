package keydir

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// selectKeys reads keys joined with their addresses, one row per address
// (a key without addresses gives one row with a NULL address). Reading the
// key and its addresses in one statement gives a consistent snapshot.
const selectKeys = `SELECT k.fingerprint, k.kind, k.data, k.created_at, k.updated_at, a.address
	FROM keys k LEFT JOIN key_addresses a ON a.fingerprint = k.fingerprint`

// keyOrder keeps the rows of a key together, as queryKeys needs. It does
// not order a key's addresses: queryKeys sorts them, and leaving them out
// spares SQLite a sort per key.
const keyOrder = ` ORDER BY k.fingerprint`

// Put inserts or replaces key and replaces its address index, in one
// transaction that also records the change: "import" for a new
// fingerprint, "update" for a stored one (or the action set with
// WithAction), by ActorFrom(ctx). Fingerprint is stored upper-case and the
// addresses normalised and deduplicated; a key may have no address.
// Updated is key.Updated, or now when zero. Created is kept when the key
// exists; otherwise it is key.Created, or Updated when zero.
func (s *SQLStore) Put(ctx context.Context, key Key) error {
	k, err := prepareKey(key, time.Now())
	if err != nil {
		return err
	}
	if err := s.inTx(ctx, func(tx *sql.Tx) error { return s.putTx(ctx, tx, k) }); err != nil {
		return fmt.Errorf("keydir: put %s: %w", k.Fingerprint, err)
	}
	return nil
}

// putTx stores the prepared key k and records the event. Row locks are
// taken in one order everywhere, the keys row first, so that concurrent
// changes on PostgreSQL wait for each other instead of deadlocking.
func (s *SQLStore) putTx(ctx context.Context, tx *sql.Tx, k Key) error {
	existed, err := s.upsertKey(ctx, tx, k)
	if err != nil {
		return err
	}
	const clear = `DELETE FROM key_addresses WHERE fingerprint = ? RETURNING address`
	old, err := queryStringsTx(ctx, tx, s.d.rebind(clear), k.Fingerprint)
	if err != nil {
		return err
	}
	const insert = `INSERT INTO key_addresses (address, fingerprint, domain, wkd_hash) VALUES (?, ?, ?, ?)`
	for _, a := range k.Addresses {
		domain, hash := wkdIndex(a)
		if _, err := tx.ExecContext(ctx, s.d.rebind(insert), a, k.Fingerprint, domain, hash); err != nil {
			return err
		}
	}
	if err := s.indexKeyID(ctx, tx, k); err != nil {
		return err
	}
	action := ActionImport
	if existed {
		action = ActionUpdate
	}
	e := Event{
		Actor:       ActorFrom(ctx),
		Action:      actionFrom(ctx, action),
		Fingerprint: k.Fingerprint,
		Addresses:   k.Addresses,
	}
	// The history of an address the update dropped shows the update too.
	return s.recordEvent(ctx, tx, e, append(old, k.Addresses...))
}

// upsertKey writes the keys row and reports whether it existed. It is not
// one INSERT … ON CONFLICT DO UPDATE because that cannot tell an insert
// from an update portably. The first statement is a write: on SQLite the
// transaction holds the write lock from BEGIN IMMEDIATE, so the first
// round settles it. On PostgreSQL the UPDATE locks the row; an INSERT that
// conflicts with a concurrent insert waits for it and then does nothing,
// and the next UPDATE finds the committed row, unless a concurrent Remove
// deleted it meanwhile, in which case the next INSERT succeeds.
func (s *SQLStore) upsertKey(ctx context.Context, tx *sql.Tx, k Key) (existed bool, err error) {
	const update = `UPDATE keys SET kind = ?, data = ?, updated_at = ? WHERE fingerprint = ?`
	const insert = `INSERT INTO keys (fingerprint, kind, data, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?) ON CONFLICT (fingerprint) DO NOTHING`
	const rounds = 10 // each lost round needs another transaction to commit
	for range rounds {
		n, err := execCount(ctx, tx, s.d.rebind(update), string(k.Kind), k.Data, k.Updated, k.Fingerprint)
		if err != nil || n == 1 {
			return n == 1, err
		}
		n, err = execCount(ctx, tx, s.d.rebind(insert), k.Fingerprint, string(k.Kind), k.Data, k.Created, k.Updated)
		if err != nil || n == 1 {
			return false, err
		}
	}
	return false, fmt.Errorf("key changed concurrently %d times; retry", rounds)
}

// execCount runs a statement and returns the number of rows it changed.
func execCount(ctx context.Context, tx *sql.Tx, query string, args ...any) (int64, error) {
	res, err := tx.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// prepareKey validates key and returns it in stored form.
func prepareKey(key Key, now time.Time) (Key, error) {
	fpr, err := normalizeFingerprint(key.Fingerprint)
	if err != nil {
		return Key{}, fmt.Errorf("keydir: put: %w", err)
	}
	if key.Kind != KindPGP && key.Kind != KindX509 {
		return Key{}, fmt.Errorf("keydir: put %s: unknown kind %q", fpr, key.Kind)
	}
	if len(key.Data) == 0 {
		return Key{}, fmt.Errorf("keydir: put %s: empty key data", fpr)
	}
	addrs, err := normalizeAddresses(key.Addresses)
	if err != nil {
		return Key{}, fmt.Errorf("keydir: put %s: %w", fpr, err)
	}
	k := Key{Fingerprint: fpr, Kind: key.Kind, Data: key.Data, Addresses: addrs}
	k.Updated = dbTime(orTime(key.Updated, now))
	k.Created = dbTime(orTime(key.Created, k.Updated))
	return k, nil
}

// orTime returns t, or def when t is zero.
func orTime(t, def time.Time) time.Time {
	if t.IsZero() {
		return def
	}
	return t
}

// normalizeFingerprint returns fpr as stored: upper-case hex. Spaces are
// dropped, so the grouped form tools print ("ABCD 1234 …") is accepted.
func normalizeFingerprint(fpr string) (string, error) {
	f := strings.ToUpper(strings.Join(strings.Fields(fpr), ""))
	if f == "" {
		return "", errors.New("empty fingerprint")
	}
	for _, r := range f {
		if (r < '0' || r > '9') && (r < 'A' || r > 'F') {
			return "", fmt.Errorf("fingerprint %q is not hexadecimal", fpr)
		}
	}
	return f, nil
}

// normalizeAddresses normalises, sorts and deduplicates addrs.
func normalizeAddresses(addrs []string) ([]string, error) {
	out := make([]string, 0, len(addrs))
	for _, a := range addrs {
		n, err := NormalizeAddress(a)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// Get returns the key with fingerprint fpr (any case) or ErrNotFound.
func (s *SQLStore) Get(ctx context.Context, fpr string) (Key, error) {
	f, err := normalizeFingerprint(fpr)
	if err != nil {
		return Key{}, fmt.Errorf("keydir: get: %w", err)
	}
	keys, err := s.queryKeys(ctx, selectKeys+` WHERE k.fingerprint = ?`+keyOrder, f)
	if err != nil {
		return Key{}, fmt.Errorf("keydir: get %s: %w", f, err)
	}
	if len(keys) == 0 {
		return Key{}, fmt.Errorf("keydir: get %s: %w", f, ErrNotFound)
	}
	return keys[0], nil
}

// Lookup returns every key indexed under address, which it normalises
// first, ordered by fingerprint; an empty slice when there is none.
func (s *SQLStore) Lookup(ctx context.Context, address string) ([]Key, error) {
	a, err := NormalizeAddress(address)
	if err != nil {
		return nil, fmt.Errorf("keydir: lookup: %w", err)
	}
	gen, err := s.currentGeneration(ctx)
	if err != nil {
		return nil, fmt.Errorf("keydir: lookup %s: %w", a, err)
	}
	if keys, ok := s.lookups.get(a, gen); ok {
		return copyKeys(keys), nil
	}
	const where = ` WHERE k.fingerprint IN (SELECT fingerprint FROM key_addresses WHERE address = ?)`
	keys, err := s.queryKeys(ctx, selectKeys+where+keyOrder, a)
	if err != nil {
		return nil, fmt.Errorf("keydir: lookup %s: %w", a, err)
	}
	s.lookups.put(a, gen, keys)
	return copyKeys(keys), nil
}

// List returns all keys ordered by fingerprint.
func (s *SQLStore) List(ctx context.Context) ([]Key, error) {
	keys, err := s.queryKeys(ctx, selectKeys+keyOrder)
	if err != nil {
		return nil, fmt.Errorf("keydir: list: %w", err)
	}
	return keys, nil
}

// queryKeys runs a selectKeys query and groups its rows into keys. The
// result is never nil, and sorted in Go so that every database's collation
// gives the same order.
func (s *SQLStore) queryKeys(ctx context.Context, query string, args ...any) (keys []Key, err error) {
	st, err := s.stmt(ctx, s.d.rebind(query))
	if err != nil {
		return nil, err
	}
	rows, err := st.QueryContext(ctx, args...)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, rows.Close()) }()
	keys = []Key{}
	// The key's data repeats in the row of each of its addresses: it is
	// read into one buffer and copied out once, from the key's first row.
	var data sql.RawBytes
	for rows.Next() {
		var k Key
		var kind string
		var addr sql.NullString
		if err := rows.Scan(&k.Fingerprint, &kind, &data, &k.Created, &k.Updated, &addr); err != nil {
			return nil, err
		}
		if n := len(keys); n == 0 || keys[n-1].Fingerprint != k.Fingerprint {
			k.Kind, k.Data, k.Created, k.Updated = Kind(kind), bytes.Clone(data), k.Created.UTC(), k.Updated.UTC()
			k.Addresses = []string{}
			keys = append(keys, k)
		}
		if addr.Valid {
			last := &keys[len(keys)-1]
			last.Addresses = append(last.Addresses, addr.String)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	slices.SortFunc(keys, func(a, b Key) int { return strings.Compare(a.Fingerprint, b.Fingerprint) })
	for i := range keys {
		slices.Sort(keys[i].Addresses)
	}
	return keys, nil
}

// Remove deletes the key with fingerprint fpr (any case) and its address
// index, or returns ErrNotFound. It records a "remove" event.
func (s *SQLStore) Remove(ctx context.Context, fpr string) error {
	f, err := normalizeFingerprint(fpr)
	if err != nil {
		return fmt.Errorf("keydir: remove: %w", err)
	}
	var found bool
	err = s.inTx(ctx, func(tx *sql.Tx) (err error) {
		found, err = s.removeTx(ctx, tx, f, "")
		return err
	})
	if err != nil {
		return fmt.Errorf("keydir: remove %s: %w", f, err)
	}
	if !found {
		return fmt.Errorf("keydir: remove %s: %w", f, ErrNotFound)
	}
	return nil
}

// RemoveAddress deletes every key indexed under address (normalised
// first), including the key's other addresses, and returns the deleted
// fingerprints sorted, or ErrNotFound when there was none. It records a
// "remove" event per key, all in one transaction.
func (s *SQLStore) RemoveAddress(ctx context.Context, address string) ([]string, error) {
	a, err := NormalizeAddress(address)
	if err != nil {
		return nil, fmt.Errorf("keydir: remove address: %w", err)
	}
	var removed []string
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		removed = nil
		const sel = `SELECT fingerprint FROM key_addresses WHERE address = ?`
		fprs, err := queryStringsTx(ctx, tx, s.d.rebind(sel), a)
		if err != nil {
			return err
		}
		// Lock in fingerprint order, so two of these cannot deadlock.
		slices.Sort(fprs)
		for _, f := range fprs {
			found, err := s.removeTx(ctx, tx, f, a)
			if err != nil {
				return err
			}
			if found { // else changed or removed concurrently since the SELECT
				removed = append(removed, f)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("keydir: remove address %s: %w", a, err)
	}
	if len(removed) == 0 {
		return nil, fmt.Errorf("keydir: remove address %s: %w", a, ErrNotFound)
	}
	return removed, nil
}

// removeTx deletes the key with the normalised fingerprint f and records
// the event; found is false when there is no such key, or when withAddress
// is set and the key is no longer indexed under it.
func (s *SQLStore) removeTx(ctx context.Context, tx *sql.Tx, f, withAddress string) (found bool, err error) {
	// Lock the keys row first, as putTx does; the statements after it see
	// the key as the last change committed it (each PostgreSQL statement
	// takes a new snapshot), and nobody can change it before the DELETE.
	lock := `SELECT fingerprint FROM keys WHERE fingerprint = ? {{FOR_UPDATE}}`
	if err := tx.QueryRowContext(ctx, s.d.rebind(lock), f).Scan(new(string)); errors.Is(err, sql.ErrNoRows) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	if withAddress != "" {
		var n int
		const has = `SELECT COUNT(*) FROM key_addresses WHERE fingerprint = ? AND address = ?`
		if err := tx.QueryRowContext(ctx, s.d.rebind(has), f, withAddress).Scan(&n); err != nil || n == 0 {
			return false, err
		}
	}
	const del = `DELETE FROM key_addresses WHERE fingerprint = ? RETURNING address`
	addrs, err := queryStringsTx(ctx, tx, s.d.rebind(del), f)
	if err != nil {
		return false, err
	}
	if _, err := tx.ExecContext(ctx, s.d.rebind(`DELETE FROM keys WHERE fingerprint = ?`), f); err != nil {
		return false, err
	}
	slices.Sort(addrs)
	e := Event{Actor: ActorFrom(ctx), Action: ActionRemove, Fingerprint: f, Addresses: addrs}
	return true, s.recordEvent(ctx, tx, e, addrs)
}

// inTx runs fn in a transaction that may change the directory, committed
// when fn returns nil; then it increments the shared change counter, so
// that every process's next lookup reads the generation.
func (s *SQLStore) inTx(ctx context.Context, fn func(*sql.Tx) error) error {
	err := s.runTx(ctx, fn)
	// Also after a failure: a commit that reported an error may still have
	// happened, and a needless increment costs one generation read.
	if s.changes != nil {
		s.changes.bump()
	}
	return err
}

// runTx runs fn in a transaction, committed when fn returns nil. It is for
// transactions that leave keys and addresses alone (audit appends); the
// others use inTx.
func (s *SQLStore) runTx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback() // the error that caused it is the one to report
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// queryer is what *sql.DB and *sql.Tx share for reading.
type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// queryStringsTx runs a query (already rebound) whose rows are one string
// each; the result is nil when there is no row.
func queryStringsTx(ctx context.Context, q queryer, query string, args ...any) (out []string, err error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, rows.Close()) }()
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}
