package keydir

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestLookupCacheSeesOtherWriters: node a answers lookups from its cache,
// node b (another process on the same SQLite file, or another PostgreSQL
// node) changes the directory; a's very next lookup must see the change —
// a new key, a replaced (revoked) key, a removed address, a removed key.
func TestLookupCacheSeesOtherWriters(t *testing.T) {
	stores := map[string]func(t *testing.T) (a, b *SQLStore){
		"sqlite": func(t *testing.T) (*SQLStore, *SQLStore) {
			path := filepath.Join(t.TempDir(), "sealgate.db")
			return openTestSQLite(t, path), openTestSQLite(t, path)
		},
		"postgres": func(t *testing.T) (*SQLStore, *SQLStore) {
			u := newTestSchema(t)
			open := func() *SQLStore {
				s, err := OpenPostgres(t.Context(), u)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { s.Close() })
				return s
			}
			return open(), open()
		},
	}
	for name, open := range stores {
		t.Run(name, func(t *testing.T) {
			a, b := open(t)
			ctx := t.Context()
			const addr = "joe.doe@example.org"
			lookup := func(step string) []Key {
				t.Helper()
				keys, err := a.Lookup(ctx, addr)
				if err != nil {
					t.Fatalf("%s: Lookup: %v", step, err)
				}
				again, err := a.Lookup(ctx, addr) // from the cache when nothing changed
				if err != nil || len(again) != len(keys) {
					t.Fatalf("%s: second Lookup = %d keys, %v; first gave %d", step, len(again), err, len(keys))
				}
				return keys
			}
			if keys := lookup("empty directory"); len(keys) != 0 {
				t.Fatalf("empty directory: %d keys", len(keys))
			}
			k := fakeKey(0xabc, addr)
			mustPut(t, b, k)
			if keys := lookup("after b imported"); len(keys) != 1 || keys[0].Fingerprint != k.Fingerprint {
				t.Fatalf("after b imported: %v; want the new key (a cached 'no key')", fingerprints(keys))
			}
			revoked := k
			revoked.Data = []byte("key data with a revocation signature")
			mustPut(t, b, revoked)
			if keys := lookup("after b replaced"); len(keys) != 1 || !bytes.Equal(keys[0].Data, revoked.Data) {
				t.Fatalf("after b replaced the key: a serves %q; want the revoked version", keys[0].Data)
			}
			if _, err := b.RemoveAddress(ctx, addr); err != nil {
				t.Fatal(err)
			}
			if keys := lookup("after b removed the address"); len(keys) != 0 {
				t.Fatalf("after b removed the address: a still serves %v", fingerprints(keys))
			}
			mustPut(t, b, k)
			lookup("re-imported")
			if err := b.Remove(ctx, k.Fingerprint); err != nil {
				t.Fatal(err)
			}
			if keys := lookup("after b removed the key"); len(keys) != 0 {
				t.Fatalf("after b removed the key: a still serves %v", fingerprints(keys))
			}
		})
	}
}

// TestLookupAnswersAreCopies: a caller that changes what Lookup returned
// does not change what the next caller gets from the cache.
func TestLookupAnswersAreCopies(t *testing.T) {
	s := openTestSQLite(t, filepath.Join(t.TempDir(), "sealgate.db"))
	mustPut(t, s, fakeKey(1, "a@example.org", "b@example.org"))
	first, err := s.Lookup(context.Background(), "a@example.org")
	if err != nil || len(first) != 1 {
		t.Fatal(first, err)
	}
	first[0].Fingerprint, first[0].Addresses[0] = "changed", "changed"
	second, err := s.Lookup(context.Background(), "a@example.org")
	if err != nil || second[0].Fingerprint == "changed" || second[0].Addresses[0] == "changed" {
		t.Fatalf("the cache gave back a caller's changes: %+v, %v", second, err)
	}
}

// TestGenerationReadOncePerChange: on SQLite, lookups read the generation
// from the database only after a change (through this process or another
// one, which both increment the shared change counter), and still see
// every change at the very next lookup.
func TestGenerationReadOncePerChange(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sealgate.db")
	a, b := openTestSQLite(t, path), openTestSQLite(t, path)
	if a.changes == nil {
		t.Fatal("no shared change counter on SQLite")
	}
	if fi, err := os.Stat(path + changeCounterSuffix); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("change counter file: %v, %v; want mode 0600", fi, err)
	}
	ctx := t.Context()
	const addr = "joe.doe@example.org"
	lookups := func(step string, want int) {
		t.Helper()
		before := a.genQueries.Load()
		for range 50 {
			keys, err := a.Lookup(ctx, addr)
			if err != nil || len(keys) != want {
				t.Fatalf("%s: Lookup = %d keys, %v; want %d", step, len(keys), err, want)
			}
		}
		if n := a.genQueries.Load() - before; n > 1 {
			t.Fatalf("%s: 50 lookups read the generation %d times; want at most once", step, n)
		}
	}
	lookups("empty directory", 0)
	mustPut(t, b, fakeKey(1, addr)) // the other process
	lookups("after b's import", 1)
	mustPut(t, a, fakeKey(2, addr)) // this one
	lookups("after a's import", 2)
	if err := b.Remove(ctx, fakeKey(1).Fingerprint); err != nil {
		t.Fatal(err)
	}
	lookups("after b's removal", 1)
	// Audit appends change no key and leave the counter alone.
	before := a.changes.load()
	if _, err := b.AppendAudit(ctx, []AuditRecord{{Time: fakeTime(), TxID: "t", Sender: "s@x.example", Recipient: addr, Decision: "plain"}}); err != nil {
		t.Fatal(err)
	}
	if after := a.changes.load(); after != before {
		t.Fatalf("an audit append moved the change counter %d → %d", before, after)
	}
}

// TestGenerationRecheckCatchesChangesAroundSealgate: a change made without
// the change counter (the sqlite3 shell) applies within generationRecheck.
func TestGenerationRecheckCatchesChangesAroundSealgate(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "sealgate.db")
	a, b := openTestSQLite(t, path), openTestSQLite(t, path)
	ctx := t.Context()
	const addr = "joe.doe@example.org"
	mustPut(t, a, fakeKey(1, addr))
	if keys, err := a.Lookup(ctx, addr); err != nil || len(keys) != 1 {
		t.Fatalf("Lookup = %d keys, %v", len(keys), err)
	}
	// Straight SQL on the other connection pool: the triggers move the
	// generation, nothing moves the counter.
	if _, err := b.db.ExecContext(ctx, `DELETE FROM key_addresses WHERE address = ?`, addr); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(generationRecheck + time.Second)
	for {
		keys, err := a.Lookup(ctx, addr)
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the address removed with SQL is still served %v after", generationRecheck+time.Second)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
