package keydir

import (
	"database/sql"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// openRawSQLite opens a new SQLite database with no schema, closed when
// the test ends.
func openRawSQLite(t *testing.T) *sql.DB {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sealgate.db")
	if err := createPrivateFile(path); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", sqliteDSN(path))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func TestSQLiteMigrationBackfill(t *testing.T) {
	db := openRawSQLite(t)
	testMigrationBackfill(t, db, sqliteDialect)
}

// testMigrationBackfill stores keys in a version 1 database, as the first
// release did, and checks that migrating fills the key-ID and WKD indexes.
func testMigrationBackfill(t *testing.T, db *sql.DB, d dialect) {
	ctx := t.Context()
	all := migrations()
	if _, err := migrate(ctx, db, d, all[:1]); err != nil {
		t.Fatalf("migrate to version 1: %v", err)
	}
	v4 := fakeKey(0xabc, "joe.doe@example.org", "joe.doe@other.example")
	v6 := fakeKey(6, "joe.doe@example.org")
	v6.Fingerprint = "CB186C4F0609A697E4D52DFA6C722B0C1F1E27C18A56708F6525EC27BAD9ACC9"
	x509 := fakeKey(0x5abc, "x@example.org")
	x509.Kind = KindX509
	for _, k := range []Key{v4, v6, x509} {
		_, err := db.ExecContext(ctx, d.rebind(`INSERT INTO keys (fingerprint, kind, data, created_at, updated_at)
			VALUES (?, ?, ?, ?, ?)`), k.Fingerprint, string(k.Kind), k.Data, dbTime(fakeTime()), dbTime(fakeTime()))
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range k.Addresses {
			_, err := db.ExecContext(ctx, d.rebind(`INSERT INTO key_addresses (address, fingerprint) VALUES (?, ?)`), a, k.Fingerprint)
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	if v, err := migrate(ctx, db, d, all); err != nil || v != len(all) {
		t.Fatalf("migrate from version 1 = %d, %v", v, err)
	}

	s := &SQLStore{db: db, d: d}
	for id, want := range map[string][]string{
		"0000000000000ABC": {v4.Fingerprint},
		"CB186C4F0609A697": {v6.Fingerprint},
		"0000000000005ABC": {},
	} {
		keys, err := s.LookupKeyID(ctx, id)
		if err != nil || !slices.Equal(fingerprints(keys), want) {
			t.Errorf("LookupKeyID(%s) after migration = %v, %v; want %v", id, fingerprints(keys), err, want)
		}
	}
	keys, err := s.LookupWKD(ctx, "example.org", joeHash)
	if err != nil || !slices.Equal(fingerprints(keys), []string{v4.Fingerprint, v6.Fingerprint}) {
		t.Errorf("LookupWKD after migration = %v, %v; want the v4 and v6 keys", fingerprints(keys), err)
	}
	keys, err = s.LookupWKD(ctx, "other.example", joeHash)
	if err != nil || len(keys) != 1 || strings.Join(keys[0].Addresses, " ") != "joe.doe@other.example" {
		t.Errorf("LookupWKD(other.example) after migration = %v, %v", keys, err)
	}
	// The migrated store takes changes as a new one does.
	if err := s.Put(WithActor(ctx, "cli:test"), fakeKey(0xabc, "joe.doe@example.org")); err != nil {
		t.Fatal(err)
	}
	if ev, err := s.History(ctx, "joe.doe@other.example"); err != nil || len(ev) != 1 || ev[0].Action != ActionUpdate {
		t.Errorf("History after an update of a migrated key = %+v, %v; want one update", ev, err)
	}
}

// TestSQLiteAuditSeqRowid migrates an audit trail written by schema v4
// (seq BIGINT, kept by SQLite in an index of its own) to v5 (seq is the
// rowid): the chain, its filters and later appends are unchanged.
func TestSQLiteAuditSeqRowid(t *testing.T) {
	ctx := t.Context()
	db := openRawSQLite(t)
	all := migrations()
	if _, err := migrate(ctx, db, sqliteDialect, all[:4]); err != nil {
		t.Fatalf("migrate to version 4: %v", err)
	}
	s := &SQLStore{db: db, d: sqliteDialect}
	var before []AuditRecord
	for i := 0; i < 9; i += 3 {
		recs, err := s.AppendAudit(ctx, []AuditRecord{rec(i), rec(i + 1), rec(i + 2)})
		if err != nil {
			t.Fatal(err)
		}
		before = append(before, recs...)
	}
	indexes := func() []string {
		t.Helper()
		names, err := queryStringsTx(ctx, db, `SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'audit' ORDER BY name`)
		if err != nil {
			t.Fatal(err)
		}
		return names
	}
	if got := indexes(); !slices.Contains(got, "sqlite_autoindex_audit_1") {
		t.Fatalf("version 4 audit indexes = %v; want seq's own index among them", got)
	}

	if v, err := migrate(ctx, db, sqliteDialect, all); err != nil || v != len(all) {
		t.Fatalf("migrate from version 4 = %d, %v", v, err)
	}
	if got, want := indexes(), []string{"audit_at", "audit_recipient"}; !slices.Equal(got, want) {
		t.Errorf("version 5 audit indexes = %v; want %v", got, want)
	}
	var pk string
	if err := db.QueryRowContext(ctx, `SELECT type FROM pragma_table_info('audit') WHERE pk = 1`).Scan(&pk); err != nil || pk != "INTEGER" {
		t.Errorf("audit.seq declared %q (%v); want INTEGER, the rowid", pk, err)
	}
	after, err := s.Audit(ctx, AuditFilter{})
	if err != nil || !slices.Equal(after, before) {
		t.Fatalf("records after migration = %+v, %v\nwant %+v", after, err, before)
	}
	more, err := s.AppendAudit(ctx, []AuditRecord{rec(9)})
	if err != nil || more[0].Seq != 10 || more[0].PrevHash != before[8].Hash {
		t.Fatalf("append after migration = %+v, %v; want seq 10 linked to record 9", more, err)
	}
	if n, head, err := s.VerifyAudit(ctx); err != nil || n != 10 || head != more[0].Hash {
		t.Errorf("verify after migration: n=%d head=%q err=%v", n, head, err)
	}
	if got, err := s.Audit(ctx, AuditFilter{Recipient: "r1@client.example"}); err != nil || len(got) != 3 || got[2].Seq != 8 {
		t.Errorf("filter by recipient after migration = %+v, %v", got, err)
	}
}
