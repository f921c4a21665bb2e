package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/sealgate/sealgate/keydir"
)

func TestAuditCommands(t *testing.T) {
	cfg := writeConfig(t)
	store, err := openConfiguredStore(cfg)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	recs := []keydir.AuditRecord{
		{Time: now.Add(-48 * time.Hour), TxID: "t1", Sender: "s@firm.example", Recipient: "old@client.example", Decision: "plain", Rule: "default", Outcome: "upstream: 250 ok"},
		{Time: now, TxID: "t2", Sender: "s@firm.example", Recipient: "alice@client.example", Decision: "encrypted", Format: "pgp", Fingerprint: "ABCD", KeySource: "directory", Rule: "default", Outcome: "upstream: 250 ok"},
		{Time: now, TxID: "t2", Sender: "s@firm.example", Recipient: "clerk@court.example", Decision: "refused", Rule: "policy[0]", Outcome: "550 5.7.1 no key"},
	}
	if _, err := store.AppendAudit(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
	store.Close()

	out, _, err := cli(t, "audit", "--config", cfg, "--since", "24h")
	if err != nil || strings.Contains(out, "old@client.example") || !strings.Contains(out, "clerk@court.example") {
		t.Fatalf("audit --since: %v\n%s", err, out)
	}
	out, _, err = cli(t, "audit", "--config", cfg, "--recipient", "ALICE@client.example", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var line auditLine
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 1 || json.Unmarshal([]byte(lines[0]), &line) != nil || line.Fingerprint != "ABCD" {
		t.Fatalf("audit --recipient --json:\n%s", out)
	}
	out, _, err = cli(t, "audit", "verify", "--config", cfg)
	if err != nil || !strings.Contains(out, "audit trail OK: 3 records") {
		t.Fatalf("verify: %v %s", err, out)
	}
	// Change one record behind the store's back: verify must fail.
	db, err := sql.Open("sqlite", filepath.Join(filepath.Dir(cfg), "data", "sealgate.db"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE audit SET decision = 'plain' WHERE seq = 3`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, stderr, err := cli(t, "audit", "verify", "--config", cfg)
	if code, ok := err.(exitError); !ok || code != 1 || !strings.Contains(stderr, "record 3 was changed") {
		t.Fatalf("verify after tampering: %v %q", err, stderr)
	}
}
