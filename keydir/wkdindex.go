package keydir

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/sealgate/sealgate/keydir/wkd"
)

// wkdIndex returns the domain and the WKD hash of the local part of the
// normalised address a, the columns LookupWKD searches. The local part is
// already lower-cased in full (see NormalizeAddress), so the hash is the
// one for the lower-case address, whichever letters the client lowered.
func wkdIndex(a string) (domain, hash string) {
	at := strings.LastIndexByte(a, '@')
	return a[at+1:], wkd.Hash(a[:at])
}

// LookupWKD returns the keys with an address in domain (normalised: case,
// trailing dot, IDNA) whose local part has WKD hash hash, ordered by
// fingerprint; an empty slice when there is none. Each key's Addresses
// holds only the matching addresses, so the caller can keep just those
// user IDs (draft-koch-openpgp-webkey-service §3.1 serves the key with the
// user ID of the requested address).
func (s *SQLStore) LookupWKD(ctx context.Context, domain, hash string) ([]Key, error) {
	d, err := normalizeDomain(domain)
	if err != nil {
		return nil, fmt.Errorf("keydir: lookup wkd: %w", err)
	}
	const query = `SELECT k.fingerprint, k.kind, k.data, k.created_at, k.updated_at, a.address
		FROM key_addresses a JOIN keys k ON k.fingerprint = a.fingerprint
		WHERE a.domain = ? AND a.wkd_hash = ?` + keyOrder
	keys, err := s.queryKeys(ctx, query, d, hash)
	if err != nil {
		return nil, fmt.Errorf("keydir: lookup wkd %s: %w", d, err)
	}
	return keys, nil
}

// backfillWKD fills the WKD columns of the addresses stored before schema
// version 2 (SQL has no portable SHA-1 or z-base-32). All rows are read
// before the first update: a connection runs one statement at a time.
func backfillWKD(ctx context.Context, tx *sql.Tx, d dialect) error {
	addrs, err := queryStringsTx(ctx, tx, `SELECT DISTINCT address FROM key_addresses WHERE wkd_hash = ''`)
	if err != nil {
		return fmt.Errorf("backfill wkd index: %w", err)
	}
	slices.Sort(addrs)
	const update = `UPDATE key_addresses SET domain = ?, wkd_hash = ? WHERE address = ?`
	for _, a := range addrs {
		if !strings.Contains(a, "@") {
			return errors.New("backfill wkd index: stored address without '@'")
		}
		domain, hash := wkdIndex(a)
		if _, err := tx.ExecContext(ctx, d.rebind(update), domain, hash, a); err != nil {
			return fmt.Errorf("backfill wkd index: %w", err)
		}
	}
	return nil
}
