package keydir

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
)

// The directory generation: a counter that every change to the keys or
// their addresses increments, in the same transaction (triggers, so also
// for changes made by another process or another PostgreSQL node). Lookup
// keeps its answers tagged with the generation read before the query, and
// serves one again only while the generation is unchanged: reading the
// counter is a point query (about a tenth of a lookup's cost on SQLite),
// and a revoked or removed key is gone from the very next lookup.

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

// generation reads the directory generation.
func (s *SQLStore) generation(ctx context.Context) (int64, error) {
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
