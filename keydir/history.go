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

// recordEvent appends e to the history inside tx, timed now, and indexes
// it under every address in index (normalised; duplicates are dropped).
func (s *SQLStore) recordEvent(ctx context.Context, tx *sql.Tx, e Event, index []string) error {
	const insert = `INSERT INTO events (at, actor, action, fingerprint, addresses)
		VALUES (?, ?, ?, ?, ?) RETURNING seq`
	var seq int64
	err := tx.QueryRowContext(ctx, s.d.rebind(insert), dbTime(time.Now()), e.Actor, e.Action,
		e.Fingerprint, strings.Join(e.Addresses, " ")).Scan(&seq)
	if err != nil {
		return fmt.Errorf("record %s event: %w", e.Action, err)
	}
	index = slices.Clone(index)
	slices.Sort(index)
	const link = `INSERT INTO event_addresses (address, seq) VALUES (?, ?)`
	for _, a := range slices.Compact(index) {
		if _, err := tx.ExecContext(ctx, s.d.rebind(link), a, seq); err != nil {
			return fmt.Errorf("record %s event: %w", e.Action, err)
		}
	}
	return nil
}

// History returns the recorded changes for address (normalised first),
// oldest first; an empty slice when there is none. An event is listed
// under every address the key had before or after the change, so an
// update that drops an address appears in that address's history.
func (s *SQLStore) History(ctx context.Context, address string) (events []Event, err error) {
	a, err := NormalizeAddress(address)
	if err != nil {
		return nil, fmt.Errorf("keydir: history: %w", err)
	}
	const query = `SELECT e.at, e.actor, e.action, e.fingerprint, e.addresses
		FROM event_addresses x JOIN events e ON e.seq = x.seq
		WHERE x.address = ? ORDER BY x.seq`
	rows, err := s.db.QueryContext(ctx, s.d.rebind(query), a)
	if err != nil {
		return nil, fmt.Errorf("keydir: history %s: %w", a, err)
	}
	defer func() { err = errors.Join(err, rows.Close()) }()
	events = []Event{}
	for rows.Next() {
		var e Event
		var addrs string
		if err := rows.Scan(&e.Time, &e.Actor, &e.Action, &e.Fingerprint, &addrs); err != nil {
			return nil, fmt.Errorf("keydir: history %s: %w", a, err)
		}
		e.Time = e.Time.UTC()
		e.Addresses = strings.Fields(addrs)
		events = append(events, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("keydir: history %s: %w", a, err)
	}
	return events, nil
}
