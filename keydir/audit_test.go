package keydir

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func auditStores(t *testing.T) map[string]func(t *testing.T) *SQLStore {
	return map[string]func(t *testing.T) *SQLStore{
		"sqlite":   func(t *testing.T) *SQLStore { return openTestSQLite(t, filepath.Join(t.TempDir(), "a.db")) },
		"postgres": func(t *testing.T) *SQLStore { return openTestPostgres(t, newTestSchema(t)) },
	}
}

func rec(i int) AuditRecord {
	return AuditRecord{
		Time: time.Date(2026, 11, 25, 10, 0, i, 0, time.UTC), TxID: fmt.Sprintf("tx%d", i), MessageID: "<m@firm.example>",
		Sender: "s@firm.example", Recipient: fmt.Sprintf("r%d@client.example", i%3), Decision: "encrypted",
		Format: "pgp", Fingerprint: "ABCD", KeySource: "directory", Rule: "default", Outcome: "250 2.0.0 Ok",
	}
}

func TestAuditChain(t *testing.T) {
	for name, open := range auditStores(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			s := open(t)
			for i := 0; i < 6; i += 2 {
				if _, err := s.AppendAudit(ctx, []AuditRecord{rec(i), rec(i + 1)}); err != nil {
					t.Fatal(err)
				}
			}
			n, head, err := s.VerifyAudit(ctx)
			if err != nil || n != 6 || head == "" {
				t.Fatalf("verify: n=%d head=%q err=%v", n, head, err)
			}
			got, err := s.Audit(ctx, AuditFilter{Recipient: "r1@client.example"})
			if err != nil || len(got) != 2 || got[0].Seq != 2 || got[1].Seq != 5 {
				t.Fatalf("filter by recipient: %+v %v", got, err)
			}
			got, _ = s.Audit(ctx, AuditFilter{Since: rec(4).Time})
			if len(got) != 2 {
				t.Fatalf("filter since: %d records", len(got))
			}
			if got[1].Hash != head || got[1].PrevHash != got[0].Hash {
				t.Fatal("returned chain does not link")
			}
			tamper := []struct {
				name string
				sql  []string
			}{
				{"changed", []string{`UPDATE audit SET outcome = '550 5.7.1 refused' WHERE seq = 3`}},
				{"removed", []string{`DELETE FROM audit WHERE seq = 3`}},
				{"reordered", []string{`UPDATE audit SET seq = -2 WHERE seq = 2`, `UPDATE audit SET seq = 2 WHERE seq = 4`, `UPDATE audit SET seq = 4 WHERE seq = -2`}},
			}
			for _, tc := range tamper {
				t.Run(tc.name, func(t *testing.T) {
					err := withTampered(t, s, tc.sql, func() error { _, _, err := s.VerifyAudit(ctx); return err })
					if !errors.Is(err, ErrAuditBroken) {
						t.Fatalf("verify after the record was %s: %v", tc.name, err)
					}
				})
			}
		})
	}
}

// withTampered applies a change, runs check, and undoes the change.
func withTampered(t *testing.T, s *SQLStore, change []string, check func() error) error {
	t.Helper()
	ctx := context.Background()
	backup := "CREATE TABLE audit_backup AS SELECT * FROM audit"
	if _, err := s.db.ExecContext(ctx, backup); err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, q := range []string{"DELETE FROM audit", "INSERT INTO audit SELECT * FROM audit_backup", "DROP TABLE audit_backup"} {
			if _, err := s.db.ExecContext(ctx, q); err != nil {
				t.Fatal(err)
			}
		}
		if _, _, err := s.VerifyAudit(ctx); err != nil {
			t.Fatalf("restored chain does not verify: %v", err)
		}
	}()
	for _, q := range change {
		if _, err := s.db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	return check()
}

func TestAuditConcurrentAppendsKeepOneChain(t *testing.T) {
	for name, open := range auditStores(t) {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			var wg sync.WaitGroup
			errs := make(chan error, 8)
			for w := 0; w < 8; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < 10; i++ {
						if _, err := s.AppendAudit(context.Background(), []AuditRecord{rec(i)}); err != nil {
							errs <- err
							return
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			if n, _, err := s.VerifyAudit(context.Background()); err != nil || n != 80 {
				t.Fatalf("verify: %d %v", n, err)
			}
		})
	}
}

// TestChainHashStable pins the hash of known records: a change to how
// records are hashed would break every chain already stored.
func TestChainHashStable(t *testing.T) {
	r := rec(7)
	r.Seq, r.PrevHash = 42, strings.Repeat("ab", 32)
	long := AuditRecord{
		Seq: 1, Time: time.Date(2026, 1, 2, 3, 4, 5, 123456000, time.FixedZone("CET", 3600)),
		Recipient: "ünïcode@exämple.org", Outcome: strings.Repeat("5", 700),
	}
	for _, tc := range []struct {
		r    AuditRecord
		want string
	}{
		{r, "018a4e21962c93b96d629cd697f4ef1d480f2311332c46ceba0d264d943a819f"},
		{long, "8b972f7d131e6e8e3301203db921b8d8c755785e1a5ee30bd5de673503d58f5c"},
		{AuditRecord{}, "46f2c27dddf203584f458b2275e508b216f12f31edb48a4d5cd9a97c5f89decc"},
	} {
		if got := chainHash(tc.r); got != tc.want {
			t.Errorf("chainHash(%+v) = %s; want %s", tc.r, got, tc.want)
		}
	}
}

func TestAuditChunks(t *testing.T) {
	for n := range 3*auditInsertMaxRows + 2 {
		sum := 0
		for _, c := range auditChunks(n) {
			if c < 1 || c > auditInsertMaxRows || c&(c-1) != 0 {
				t.Fatalf("auditChunks(%d) = %v: %d is not a power of two up to %d", n, auditChunks(n), c, auditInsertMaxRows)
			}
			sum += c
		}
		if sum != n {
			t.Fatalf("auditChunks(%d) = %v; sum %d", n, auditChunks(n), sum)
		}
	}
}

// TestAuditBatchSizes appends batches that take one INSERT, several, and
// several of the largest, and reads every record back as returned.
func TestAuditBatchSizes(t *testing.T) {
	for name, open := range auditStores(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			s := open(t)
			var want []AuditRecord
			for _, n := range []int{1, 0, 13, auditInsertMaxRows, auditInsertMaxRows + 1, 2*auditInsertMaxRows + 7} {
				recs := make([]AuditRecord, n)
				for i := range recs {
					recs[i] = rec(len(want) + i)
					recs[i].Time = recs[i].Time.Add(time.Duration(i) * time.Nanosecond) // dropped below a microsecond
				}
				got, err := s.AppendAudit(ctx, recs)
				if err != nil || len(got) != n {
					t.Fatalf("AppendAudit(%d records) = %d, %v", n, len(got), err)
				}
				for i, r := range got {
					if r.Seq != int64(len(want)+1) || r.TxID != recs[i].TxID || !r.Time.Equal(dbTime(recs[i].Time)) {
						t.Fatalf("record %d of %d returned as %+v", i, n, r)
					}
					want = append(want, r)
				}
			}
			stored, err := s.Audit(ctx, AuditFilter{})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(stored, want) {
				t.Fatalf("stored records differ from the returned ones:\n%+v\n%+v", stored, want)
			}
			if n, head, err := s.VerifyAudit(ctx); err != nil || n != int64(len(want)) || head != want[len(want)-1].Hash {
				t.Fatalf("verify: %d %q %v", n, head, err)
			}
		})
	}
}
