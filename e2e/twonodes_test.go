package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
)

// pgSchema makes a PostgreSQL schema for the test (dropped at cleanup) on
// the server at 127.0.0.1:5432 and returns a URL using it.
func pgSchema(t *testing.T) string {
	t.Helper()
	base := "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	db, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		t.Fatalf("PostgreSQL is not reachable at 127.0.0.1:5432 (the test command starts it): %v", err)
	}
	schema := "sg_e2e_" + strings.ToLower(rand.Text()[:12])
	if _, err := db.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		db.Exec("DROP SCHEMA " + schema + " CASCADE")
		db.Close()
	})
	return base + "&search_path=" + schema
}

// node runs `sealgate serve` on a shared database and returns its HTTP address.
func node(t *testing.T, database string) (httpAddr, config string) {
	t.Helper()
	dir := t.TempDir()
	httpAddr, smtpAddr := freeAddr(t), freeAddr(t)
	config = filepath.Join(dir, "sealgate.toml")
	text := fmt.Sprintf("data_dir = %q\ndatabase = %q\n[smtp]\nlisten = %q\n[http]\nlisten = %q\n[directory]\ndomains = [\"firm.example\"]\n",
		filepath.Join(dir, "data"), database, smtpAddr, httpAddr)
	if err := os.WriteFile(config, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	p := daemon(t, dir, &syncBuffer{}, true, sealgateBin, "serve", "--config", config)
	p.waitGreeting(t, smtpAddr)
	return httpAddr, config
}

// TestTwoNodesShareOnePostgreSQL: two gateways on one PostgreSQL database
// act as one directory: a key published through one's admin API is
// served over WKD by the other at once, and a removal likewise.
func TestTwoNodesShareOnePostgreSQL(t *testing.T) {
	database := pgSchema(t)
	a, configA := node(t, database)
	b, _ := node(t, database)

	home := newGPGHome(t)
	gpgKey(t, home, "Staff <partner@firm.example>", "future-default", "default", "never")
	pub := gpg(t, home, nil, "--export", "partner@firm.example")
	token := strings.TrimSpace(string(mustRun(t, cmdOpts{}, sealgateBin, "tokens", "create", "--name", "e2e", "--scope", "write", "--config", configA)))

	req, _ := http.NewRequest("POST", "http://"+a+"/api/v1/keys", bytes.NewReader(pub))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("publish through node A: %d %s", resp.StatusCode, body)
	}
	hash := strings.Fields(string(mustRun(t, cmdOpts{}, sealgateBin, "wkd", "hash", "partner@firm.example")))[0]
	path := "/.well-known/openpgpkey/firm.example/hu/" + hash
	resp, err = http.Get("http://" + b + path)
	if err != nil {
		t.Fatal(err)
	}
	served, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || len(served) == 0 {
		t.Fatalf("node B does not serve the key published through node A: %d", resp.StatusCode)
	}
	// What B serves is the key A took: gpg reads the same fingerprint.
	other := newGPGHome(t)
	f := filepath.Join(t.TempDir(), "served.pgp")
	os.WriteFile(f, served, 0o600)
	gpg(t, other, nil, "--import", f)
	if a, b := gpgFields(t, home, "partner@firm.example", "fpr", 9), gpgFields(t, other, "partner@firm.example", "fpr", 9); a[0] != b[0] {
		t.Fatalf("fingerprints differ: %s vs %s", a[0], b[0])
	}
	// A removal through A is seen by B at once.
	req, _ = http.NewRequest("DELETE", "http://"+a+"/api/v1/keys/"+gpgFields(t, home, "partner@firm.example", "fpr", 9)[0], nil)
	req.Header.Set("Authorization", "Bearer "+token)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("remove through node A: %v %v", err, resp)
	}
	if resp, err := http.Get("http://" + b + path); err != nil || resp.StatusCode != 404 {
		t.Fatalf("node B still serves a removed key: %v %v", err, resp.StatusCode)
	}
}
