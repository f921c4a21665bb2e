package keydir

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"time"
)

// The directory generation: a counter that every change to the keys or
// their addresses increments, in the same transaction (triggers, so also
// for changes made by another process or another PostgreSQL node). Lookup
// keeps its answers tagged with the generation read before the query, and
// serves one again only while the generation is unchanged, so a revoked or
// removed key is gone from the very next lookup. Reading the generation is
// a point query; on SQLite a shared change counter (changes_unix.go) lets
// lookups skip it while no change has completed (see currentGeneration).

// schemaV4 adds the generation counter. Its triggers differ by dialect
// (generationTriggers).
func schemaV4() []string {
	return []string{
		`CREATE TABLE directory_generation (
			id  INTEGER NOT NULL PRIMARY KEY,
			gen BIGINT NOT NULL
		)`,
		`INSERT INTO directory_generation (id, gen) VALUES (1, 0)`,
	}
}

func generationTriggers(ctx context.Context, tx *sql.Tx, d dialect) error {
	var stmts []string
	const bump = `UPDATE directory_generation SET gen = gen + 1 WHERE id = 1`
	switch d.name {
	case "postgres":
		// Once per transaction: a row whose xmin is this transaction has
		// been bumped by it already (repeated updates of one row in one
		// transaction would each walk all its earlier versions).
		stmts = []string{
			`CREATE FUNCTION sealgate_bump_generation() RETURNS trigger LANGUAGE plpgsql AS $$
			BEGIN ` + bump + ` AND xmin <> pg_current_xact_id()::xid; RETURN NULL; END; $$`,
		}
		// Deferred: the counter's row is locked only at commit, after every
		// other lock the transaction takes, so concurrent writers cannot
		// deadlock on it (a plain trigger locked it mid-transaction).
		for _, table := range []string{"keys", "key_addresses"} {
			stmts = append(stmts, fmt.Sprintf(`CREATE CONSTRAINT TRIGGER %s_generation
				AFTER INSERT OR UPDATE OR DELETE ON %s DEFERRABLE INITIALLY DEFERRED
				FOR EACH ROW EXECUTE FUNCTION sealgate_bump_generation()`, table, table),
				fmt.Sprintf(`CREATE TRIGGER %s_generation_truncate AFTER TRUNCATE ON %s
				FOR EACH STATEMENT EXECUTE FUNCTION sealgate_bump_generation()`, table, table))
		}
	default:
		for _, table := range []string{"keys", "key_addresses"} {
			for _, op := range []string{"INSERT", "UPDATE", "DELETE"} {
				stmts = append(stmts, fmt.Sprintf(`CREATE TRIGGER %s_generation_%s AFTER %s ON %s
					BEGIN %s; END`, table, op, op, table, bump))
			}
		}
	}
	for _, s := range stmts {
		if _, err := tx.ExecContext(ctx, s); err != nil {
			return err
		}
	}
	return nil
}

const generationQuery = `SELECT gen FROM directory_generation WHERE id = 1`

// changeCounterSuffix names the shared change counter's file after the
// SQLite database's (sealgate.db-changes).
const changeCounterSuffix = "-changes"

// generationRecheck bounds how long a generation read stays in use while
// the shared change counter stands still: a change made around sealgate
// (the sqlite3 shell, or a process that died between its commit and its
// increment) bumps no counter, and applies after at most this long.
const generationRecheck = time.Second

// genSnapshot is a generation read from the database, with the change
// counter's value read before it and the time it was read.
type genSnapshot struct {
	counter uint64
	gen     int64
	at      time.Time
}

// currentGeneration returns the directory generation. On SQLite with the
// shared change counter it reads the database only when the counter moved
// since the last read (or generationRecheck passed): the counter is read
// first, and every writer increments it after its commit, so a snapshot
// whose counter still stands includes every change completed before this
// call. That is the point query lookups paid for on every message (10–20
// µs, SQLite's read transaction), now paid once per change.
func (s *SQLStore) currentGeneration(ctx context.Context) (int64, error) {
	if s.changes == nil {
		return s.generation(ctx)
	}
	counter, now := s.changes.load(), time.Now()
	if g := s.genSeen.Load(); g != nil && g.counter == counter && now.Sub(g.at) < generationRecheck {
		return g.gen, nil
	}
	gen, err := s.generation(ctx)
	if err != nil {
		return 0, err
	}
	s.genSeen.Store(&genSnapshot{counter: counter, gen: gen, at: now})
	return gen, nil
}

// generation reads the directory generation from the database.
func (s *SQLStore) generation(ctx context.Context) (int64, error) {
	s.genQueries.Add(1)
	st, err := s.stmt(ctx, generationQuery)
	if err != nil {
		return 0, err
	}
	var gen int64
	err = st.QueryRowContext(ctx).Scan(&gen)
	return gen, err
}

// lookupCache holds Lookup answers, no keys included, for one generation.
// Answers are shared: callers must not modify a returned Key's Data or
// Addresses (Lookup hands out copies of the slices that hold them).
type lookupCache struct {
	mu  sync.Mutex
	gen int64
	m   map[string][]Key
}

// lookupCacheMax bounds the cache; when full it starts again empty.
const lookupCacheMax = 16384

func (c *lookupCache) get(address string, gen int64) ([]Key, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return nil, false
	}
	keys, ok := c.m[address]
	return keys, ok
}

// put stores an answer read after the generation was gen. An answer from
// an older generation than the cache's is dropped; a newer one empties the
// cache first.
func (c *lookupCache) put(address string, gen int64, keys []Key) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case gen < c.gen:
		return
	case gen > c.gen || c.m == nil || len(c.m) >= lookupCacheMax:
		c.gen, c.m = gen, map[string][]Key{}
	}
	c.m[address] = keys
}

// copyKeys returns keys in new Key and Addresses slices.
func copyKeys(keys []Key) []Key {
	out := make([]Key, len(keys))
	for i, k := range keys {
		k.Addresses = append([]string(nil), k.Addresses...)
		out[i] = k
	}
	return out
}
