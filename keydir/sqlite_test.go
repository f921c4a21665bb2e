package keydir

import (
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func openTestSQLite(t testing.TB, path string) *SQLStore {
	t.Helper()
	s, err := OpenSQLite(t.Context(), path)
	if err != nil {
		t.Fatalf("OpenSQLite: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestSQLiteStore(t *testing.T) {
	testStore(t, func(t *testing.T) Store {
		return openTestSQLite(t, filepath.Join(t.TempDir(), "sealgate.db"))
	})
}

func TestSQLiteReopenPersists(t *testing.T) {
	// '?' and '#' in the path must not be read as URI syntax.
	path := filepath.Join(t.TempDir(), "dir with ?odd# name", "sealgate.db")
	s, err := OpenSQLite(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, s, fakeKey(1, "alice@example.org"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("database not at the given path: %v", err)
	}

	s2 := openTestSQLite(t, path)
	keys, err := s2.Lookup(t.Context(), "Alice@Example.org")
	if err != nil || len(keys) != 1 || keys[0].Fingerprint != fakeKey(1).Fingerprint {
		t.Fatalf("Lookup after reopen = %v, %v; want key 1", fingerprints(keys), err)
	}
	var version int
	if err := s2.db.QueryRowContext(t.Context(), `SELECT MAX(version) FROM schema_version`).Scan(&version); err != nil {
		t.Fatal(err)
	}
	if version != len(migrations()) {
		t.Errorf("schema version = %d; want %d", version, len(migrations()))
	}
}

func TestSQLiteFileModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	path := filepath.Join(dir, "sealgate.db")
	s := openTestSQLite(t, path)
	mustPut(t, s, fakeKey(1, "alice@example.org")) // creates the WAL file

	checkMode(t, dir, 0o700)
	checkMode(t, path, 0o600)
	for _, suffix := range []string{"-wal", "-shm"} {
		if _, err := os.Stat(path + suffix); err == nil {
			checkMode(t, path+suffix, 0o600)
		}
	}
}

func checkMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("mode of %s = %o; want %o", filepath.Base(path), got, want)
	}
}

func TestSQLitePragmas(t *testing.T) {
	s := openTestSQLite(t, filepath.Join(t.TempDir(), "sealgate.db"))
	want := map[string]string{"journal_mode": "wal", "busy_timeout": "5000", "foreign_keys": "1", "synchronous": "1", "temp_store": "2",
		"wal_autocheckpoint": "0", "journal_size_limit": "67108864"}
	for pragma, w := range want {
		var got string
		if err := s.db.QueryRowContext(t.Context(), "PRAGMA "+pragma).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != w {
			t.Errorf("PRAGMA %s = %q; want %q", pragma, got, w)
		}
	}
}

// TestSQLiteBackgroundCheckpoint: commits never checkpoint themselves
// (wal_autocheckpoint 0), so without the store's checkpointer the database
// file would not grow while the store stays open; with it, what was
// committed reaches the database file within a few ticks.
func TestSQLiteBackgroundCheckpoint(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sealgate.db")
	s := openTestSQLite(t, path)
	size := func() int64 {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	before := size()
	for i := range 200 {
		rec := AuditRecord{Time: fakeTime(), TxID: fmt.Sprintf("tx%d", i), Sender: "s@firm.example",
			Recipient: "r@client.example", Rule: "default", Decision: "plain", Outcome: strings.Repeat("x", 400)}
		if _, err := s.AppendAudit(t.Context(), []AuditRecord{rec}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for size() < before+64<<10 {
		if time.Now().After(deadline) {
			t.Fatalf("database file still %d bytes (was %d) 5 s after 80 KB of commits: no checkpoint ran", size(), before)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestSQLiteRefusesNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sealgate.db")
	s := openTestSQLite(t, path)
	_, err := s.db.ExecContext(t.Context(), `INSERT INTO schema_version (version, applied_at) VALUES (?, ?)`,
		len(migrations())+1, dbTime(fakeTime()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenSQLite(t.Context(), path); err == nil || !strings.Contains(err.Error(), "newer than this program") {
		t.Errorf("OpenSQLite of a newer schema: err = %v; want a refusal", err)
	}
}

func TestMigrateAppliesOnlyNewSteps(t *testing.T) {
	s := openTestSQLite(t, filepath.Join(t.TempDir(), "sealgate.db"))
	steps := append(migrations(), migration{stmts: []string{`CREATE TABLE extra (id INTEGER)`}})
	for range 2 { // the second run must find nothing to do
		v, err := migrate(t.Context(), s.db, s.d, steps)
		if err != nil || v != len(steps) {
			t.Fatalf("migrate = %d, %v; want %d", v, err, len(steps))
		}
	}
	bad := append(slices.Clone(steps), migration{stmts: []string{`CREATE TABLE extra2 (id INTEGER)`, `NOT SQL`}})
	want := fmt.Sprintf("migrate to version %d", len(bad))
	if _, err := migrate(t.Context(), s.db, s.d, bad); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("migrate with a failing step: err = %v; want %q", err, want)
	}
	var n int
	if err := s.db.QueryRowContext(t.Context(), `SELECT COUNT(*) FROM schema_version`).Scan(&n); err != nil || n != len(steps) {
		t.Errorf("schema_version rows = %d, %v; want %d (failed migration rolled back)", n, err, len(steps))
	}
	err := s.db.QueryRowContext(t.Context(), `SELECT name FROM sqlite_master WHERE name = 'extra2'`).Scan(new(string))
	if !errors.Is(err, sql.ErrNoRows) {
		t.Errorf("table of the failed migration exists (err %v); want it rolled back", err)
	}
}

func TestRebind(t *testing.T) {
	got := pgDialect.rebind(`INSERT INTO t (a, b, c) VALUES (?, ?, ?) -- {{BLOB}} {{TIMESTAMP}} {{SERIAL_PK}}`)
	want := `INSERT INTO t (a, b, c) VALUES ($1, $2, $3) -- BYTEA TIMESTAMPTZ BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY`
	if got != want {
		t.Errorf("rebind = %q; want %q", got, want)
	}
	if got, want := pgDialect.rebind(`SELECT x FROM t WHERE y = ? {{FOR_UPDATE}}`), `SELECT x FROM t WHERE y = $1 FOR UPDATE`; got != want {
		t.Errorf("rebind = %q; want %q", got, want)
	}
	if got, want := sqliteDialect.rebind(`SELECT x FROM t WHERE y = ? {{FOR_UPDATE}}`), `SELECT x FROM t WHERE y = ? `; got != want {
		t.Errorf("sqlite rebind = %q; want %q", got, want)
	}
	if got := sqliteDialect.rebind(`x = ? AND y = ?`); got != `x = ? AND y = ?` {
		t.Errorf("sqlite rebind changed placeholders: %q", got)
	}
}

func TestOpen(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "sealgate-data")
	s, err := Open(t.Context(), "", dataDir)
	if err != nil {
		t.Fatalf(`Open("", dataDir): %v`, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dataDir, SQLiteFileName)); err != nil {
		t.Errorf("no database in the data directory: %v", err)
	}

	// Nothing listens on port 1; a URL that does not parse fails before
	// any connection. Neither error may show the password.
	for _, u := range []string{
		"postgres://u:hunter2@127.0.0.1:1/test?sslmode=disable&connect_timeout=5",
		"PostgreSQL://u:hunter2@127.0.0.1:1/test?sslmode=disable",
		"postgres://u:hunter2@db:notaport/test",
		"postgresql://u:hunter2@[::1/test",
	} {
		_, err := Open(t.Context(), u, dataDir)
		if err == nil || strings.Contains(err.Error(), "hunter2") || !strings.HasPrefix(err.Error(), "keydir: open postgres: ") {
			t.Errorf("Open(%q): err = %v; want a keydir error without the password", u, err)
		}
	}
	_, err = Open(t.Context(), "mysql://admin:hunter2@db/keys", dataDir)
	if err == nil || strings.Contains(err.Error(), "hunter2") || !strings.HasPrefix(err.Error(), "keydir: ") {
		t.Errorf("Open(mysql URL): err = %v; want an error that does not echo the password", err)
	}
	if _, err := Open(t.Context(), "", ""); err == nil {
		t.Error(`Open("", ""): want an error for the empty data directory`)
	}
}

func TestSQLiteForeignKeysCascade(t *testing.T) {
	s := openTestSQLite(t, filepath.Join(t.TempDir(), "sealgate.db"))
	mustPut(t, s, fakeKey(1, "a@example.org", "b@example.org"))
	if err := s.Remove(t.Context(), fakeKey(1).Fingerprint); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := s.db.QueryRowContext(t.Context(), `SELECT COUNT(*) FROM key_addresses`).Scan(&n); err != nil || n != 0 {
		t.Errorf("key_addresses rows after Remove = %d, %v; want 0", n, err)
	}
	_, err := s.db.ExecContext(t.Context(), `INSERT INTO key_addresses (address, fingerprint) VALUES ('x@example.org', 'NOPE')`)
	if err == nil {
		t.Error("insert of an address for a missing key succeeded; foreign keys are off")
	}
}
