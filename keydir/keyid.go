package keydir

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
)

// keyIDOf returns the primary key ID of an OpenPGP key with the
// normalised fingerprint fpr, or "" when it has none we index.
// RFC 9580 §5.5.4.2: a v4 key ID is the low 64 bits of the fingerprint;
// §5.5.4.3: a v6 key ID is the high 64 bits. Migration 2 backfills
// key_ids with the same rule in SQL.
func keyIDOf(kind Kind, fpr string) string {
	if kind != KindPGP {
		return ""
	}
	switch len(fpr) {
	case 40:
		return fpr[24:]
	case 64:
		return fpr[:16]
	}
	return ""
}

// indexKeyID keeps k's row in key_ids in step with its fingerprint and kind.
func (s *SQLStore) indexKeyID(ctx context.Context, tx *sql.Tx, k Key) error {
	id := keyIDOf(k.Kind, k.Fingerprint)
	if id == "" { // also drops the entry if a key changed kind
		_, err := tx.ExecContext(ctx, s.d.rebind(`DELETE FROM key_ids WHERE fingerprint = ?`), k.Fingerprint)
		return err
	}
	const insert = `INSERT INTO key_ids (key_id, fingerprint) VALUES (?, ?) ON CONFLICT DO NOTHING`
	_, err := tx.ExecContext(ctx, s.d.rebind(insert), id, k.Fingerprint)
	return err
}

// normalizeKeyID returns id as stored: 16 upper-case hex digits. Spaces
// and a "0x" prefix are dropped.
func normalizeKeyID(id string) (string, error) {
	k := strings.ToUpper(strings.Join(strings.Fields(id), ""))
	k = strings.TrimPrefix(k, "0X")
	if len(k) != 16 {
		return "", fmt.Errorf("key ID %q is not 16 hexadecimal digits", id)
	}
	for _, r := range k {
		if (r < '0' || r > '9') && (r < 'A' || r > 'F') {
			return "", fmt.Errorf("key ID %q is not hexadecimal", id)
		}
	}
	return k, nil
}

// LookupKeyID returns the OpenPGP keys whose primary key ID is keyID (16
// hex digits, any case, optional "0x"), ordered by fingerprint; an empty
// slice when there is none. Subkey IDs are not indexed.
func (s *SQLStore) LookupKeyID(ctx context.Context, keyID string) ([]Key, error) {
	id, err := normalizeKeyID(keyID)
	if err != nil {
		return nil, fmt.Errorf("keydir: lookup key ID: %w", err)
	}
	const where = ` WHERE k.fingerprint IN (SELECT fingerprint FROM key_ids WHERE key_id = ?)`
	keys, err := s.queryKeys(ctx, selectKeys+where+keyOrder, id)
	if err != nil {
		return nil, fmt.Errorf("keydir: lookup key ID %s: %w", id, err)
	}
	return keys, nil
}
