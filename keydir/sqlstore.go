package keydir

import (
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

const keyOrder = ` ORDER BY k.fingerprint, a.address`

// Put inserts or replaces key and replaces its address index, in one
// transaction. Fingerprint is stored upper-case and the addresses
// normalised and deduplicated; a key may have no address. Updated is
// key.Updated, or now when zero. Created is kept when the key exists;
// otherwise it is key.Created, or Updated when zero.
func (s *SQLStore) Put(ctx context.Context, key Key) (err error) {
	k, err := prepareKey(key, time.Now())
	if err != nil {
		return err
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("keydir: put %s: begin: %w", k.Fingerprint, err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback() // the error that caused it is the one to report
		}
	}()
	if err := s.putTx(ctx, tx, k); err != nil {
		return fmt.Errorf("keydir: put %s: %w", k.Fingerprint, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("keydir: put %s: commit: %w", k.Fingerprint, err)
	}
	return nil
}

func (s *SQLStore) putTx(ctx context.Context, tx *sql.Tx, k Key) error {
	// The upsert comes first: it is the statement that takes the write lock.
	const upsert = `INSERT INTO keys (fingerprint, kind, data, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (fingerprint) DO UPDATE
		SET kind = excluded.kind, data = excluded.data, updated_at = excluded.updated_at`
	if _, err := tx.ExecContext(ctx, s.d.rebind(upsert),
		k.Fingerprint, string(k.Kind), k.Data, k.Created, k.Updated); err != nil {
		return err
	}
	const clear = `DELETE FROM key_addresses WHERE fingerprint = ?`
	if _, err := tx.ExecContext(ctx, s.d.rebind(clear), k.Fingerprint); err != nil {
		return err
	}
	const insert = `INSERT INTO key_addresses (address, fingerprint) VALUES (?, ?)`
	for _, a := range k.Addresses {
		if _, err := tx.ExecContext(ctx, s.d.rebind(insert), a, k.Fingerprint); err != nil {
			return err
		}
	}
	return nil
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
	const where = ` WHERE k.fingerprint IN (SELECT fingerprint FROM key_addresses WHERE address = ?)`
	keys, err := s.queryKeys(ctx, selectKeys+where+keyOrder, a)
	if err != nil {
		return nil, fmt.Errorf("keydir: lookup %s: %w", a, err)
	}
	return keys, nil
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
	rows, err := s.db.QueryContext(ctx, s.d.rebind(query), args...)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, rows.Close()) }()
	keys = []Key{}
	for rows.Next() {
		var k Key
		var kind string
		var addr sql.NullString
		if err := rows.Scan(&k.Fingerprint, &kind, &k.Data, &k.Created, &k.Updated, &addr); err != nil {
			return nil, err
		}
		if n := len(keys); n == 0 || keys[n-1].Fingerprint != k.Fingerprint {
			k.Kind, k.Created, k.Updated = Kind(kind), k.Created.UTC(), k.Updated.UTC()
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
// index, or returns ErrNotFound.
func (s *SQLStore) Remove(ctx context.Context, fpr string) error {
	f, err := normalizeFingerprint(fpr)
	if err != nil {
		return fmt.Errorf("keydir: remove: %w", err)
	}
	res, err := s.db.ExecContext(ctx, s.d.rebind(`DELETE FROM keys WHERE fingerprint = ?`), f)
	if err != nil {
		return fmt.Errorf("keydir: remove %s: %w", f, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("keydir: remove %s: %w", f, err)
	}
	if n == 0 {
		return fmt.Errorf("keydir: remove %s: %w", f, ErrNotFound)
	}
	return nil
}

// RemoveAddress deletes every key indexed under address (normalised
// first), including the key's other addresses, and returns the deleted
// fingerprints sorted, or ErrNotFound when there was none.
func (s *SQLStore) RemoveAddress(ctx context.Context, address string) ([]string, error) {
	a, err := NormalizeAddress(address)
	if err != nil {
		return nil, fmt.Errorf("keydir: remove address: %w", err)
	}
	// One statement, so no key can be added under the address half-way.
	const del = `DELETE FROM keys
		WHERE fingerprint IN (SELECT fingerprint FROM key_addresses WHERE address = ?)
		RETURNING fingerprint`
	fprs, err := s.queryStrings(ctx, del, a)
	if err != nil {
		return nil, fmt.Errorf("keydir: remove address %s: %w", a, err)
	}
	if len(fprs) == 0 {
		return nil, fmt.Errorf("keydir: remove address %s: %w", a, ErrNotFound)
	}
	slices.Sort(fprs)
	return fprs, nil
}

// queryStrings runs a query whose rows are one string each.
func (s *SQLStore) queryStrings(ctx context.Context, query string, args ...any) (out []string, err error) {
	rows, err := s.db.QueryContext(ctx, s.d.rebind(query), args...)
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
