package keydir

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// The PostgreSQL tests need a server; they fail, never skip, without one.
// DESIGN.md: 127.0.0.1:5432, trust auth, database "test" on development and
// CI machines (the test command starts one where none answers).
// SEALGATE_TEST_POSTGRES overrides the URL.
const defaultTestPostgres = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable&connect_timeout=10"

func testPostgresURL() string {
	if u := os.Getenv("SEALGATE_TEST_POSTGRES"); u != "" {
		return u
	}
	return defaultTestPostgres
}

// newTestSchema creates a schema of its own for the test, dropped when the
// test ends, and returns a database URL whose search_path is that schema.
func newTestSchema(t testing.TB) string {
	t.Helper()
	base := testPostgresURL()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("SEALGATE_TEST_POSTGRES is not a URL: %v", err)
	}
	db, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatalf("open PostgreSQL %s: %v", u.Redacted(), err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		t.Fatalf("PostgreSQL is not reachable at %s: %v\n"+
			"The keydir tests need it (trust auth, database \"test\"; see DESIGN.md). "+
			"Start it, or set SEALGATE_TEST_POSTGRES to another server's URL.", u.Redacted(), err)
	}
	// rand.Text is base32: letters and digits, safe unquoted in SQL.
	schema := "sg_test_" + strings.ToLower(rand.Text()[:16])
	if _, err := db.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		_ = db.Close()
		t.Fatalf("create schema %s: %v", schema, err)
	}
	t.Cleanup(func() {
		// t.Context is done by now; the drop gets its own deadline.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := db.ExecContext(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
		if err := db.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

func openTestPostgres(t testing.TB, databaseURL string) *SQLStore {
	t.Helper()
	s, err := OpenPostgres(t.Context(), databaseURL)
	if err != nil {
		t.Fatalf("OpenPostgres: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestPostgresStore(t *testing.T) {
	testStore(t, func(t *testing.T) Store {
		return openTestPostgres(t, newTestSchema(t))
	})
}

func TestPostgresOpenByConfig(t *testing.T) {
	s, err := Open(t.Context(), newTestSchema(t), "")
	if err != nil {
		t.Fatalf("Open(postgres URL): %v", err)
	}
	mustPut(t, s, fakeKey(1, "alice@example.org"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestPostgresTwoNodes is two gateway nodes sharing one database: opened
// at the same time (so their migrations race), each sees the other's
// changes at once.
func TestPostgresTwoNodes(t *testing.T) {
	databaseURL := newTestSchema(t)
	const openers = 4 // two nodes, and two more to widen the race
	stores := make([]*SQLStore, openers)
	errs := make([]error, openers)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range openers {
		wg.Go(func() {
			<-start
			stores[i], errs[i] = OpenPostgres(t.Context(), databaseURL)
		})
	}
	close(start)
	wg.Wait()
	for i, s := range stores {
		if errs[i] != nil {
			t.Fatalf("concurrent OpenPostgres %d: %v", i, errs[i])
		}
		t.Cleanup(func() {
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
	a, b := stores[0], stores[1]
	var versions int
	if err := a.db.QueryRowContext(t.Context(), `SELECT COUNT(*) FROM schema_version`).Scan(&versions); err != nil || versions != len(migrations()) {
		t.Errorf("schema_version rows = %d, %v; want %d (each migration once)", versions, err, len(migrations()))
	}

	ctx := WithActor(t.Context(), "token:node0001")
	k := fakeKey(0xabc, "Joe.Doe@example.org")
	if err := a.Put(ctx, k); err != nil {
		t.Fatal(err)
	}
	keys, err := b.Lookup(t.Context(), "joe.doe@example.org")
	if err != nil || len(keys) != 1 || keys[0].Fingerprint != k.Fingerprint {
		t.Fatalf("Lookup on node b right after Put on node a = %v, %v; want the key", fingerprints(keys), err)
	}
	if keys, err := b.LookupWKD(t.Context(), "example.org", joeHash); err != nil || len(keys) != 1 {
		t.Errorf("LookupWKD on node b = %v, %v; want the key", fingerprints(keys), err)
	}
	if keys, err := b.LookupKeyID(t.Context(), "0000000000000ABC"); err != nil || len(keys) != 1 {
		t.Errorf("LookupKeyID on node b = %v, %v; want the key", fingerprints(keys), err)
	}
	if ev, err := b.History(t.Context(), "joe.doe@example.org"); err != nil || len(ev) != 1 || ev[0].Actor != "token:node0001" {
		t.Errorf("History on node b = %+v, %v; want a's import", ev, err)
	}

	secret, tok, err := b.CreateToken(t.Context(), "shared", ScopeWrite)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.AuthenticateToken(t.Context(), secret); err != nil {
		t.Errorf("node a authenticates node b's token: %v", err)
	}
	if err := b.Remove(t.Context(), k.Fingerprint); err != nil {
		t.Fatal(err)
	}
	if err := b.RevokeToken(t.Context(), tok.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Get(t.Context(), k.Fingerprint); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get on node a after Remove on node b: err = %v; want ErrNotFound", err)
	}
	if _, err := a.AuthenticateToken(t.Context(), secret); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("node a after node b revoked the token: err = %v; want ErrUnauthorized", err)
	}
}

func TestPostgresMigrationBackfill(t *testing.T) {
	cfg, err := pgx.ParseConfig(newTestSchema(t))
	if err != nil {
		t.Fatal(err)
	}
	db := stdlib.OpenDB(*cfg)
	t.Cleanup(func() { _ = db.Close() })
	testMigrationBackfill(t, db, pgDialect)
}

func TestPostgresRefusesNewerSchema(t *testing.T) {
	databaseURL := newTestSchema(t)
	s := openTestPostgres(t, databaseURL)
	_, err := s.db.ExecContext(t.Context(), `INSERT INTO schema_version (version, applied_at) VALUES ($1, $2)`,
		len(migrations())+1, dbTime(fakeTime()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenPostgres(t.Context(), databaseURL); err == nil {
		t.Error("OpenPostgres of a newer schema: want a refusal")
	}
}
