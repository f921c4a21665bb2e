package keydir

import (
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// benchStores opens an empty store of each kind for a benchmark.
var benchStores = []struct {
	name string
	open func(b *testing.B) *SQLStore
}{
	{"sqlite", func(b *testing.B) *SQLStore { return openTestSQLite(b, filepath.Join(b.TempDir(), "sealgate.db")) }},
	{"postgres", func(b *testing.B) *SQLStore { return openTestPostgres(b, newTestSchema(b)) }},
}

// BenchmarkLookup is the gateway's per-recipient key lookup in a
// directory of 10,000 keys, each with its own address and a shared one.
func BenchmarkLookup(b *testing.B) {
	const n = 10000
	for _, st := range benchStores {
		b.Run(st.name, func(b *testing.B) {
			s := st.open(b)
			fillStore(b, s, n)
			i := 0
			defer reportCPU(b)()
			for b.Loop() {
				addr := fmt.Sprintf("user%d@example.org", i%n)
				keys, err := s.Lookup(b.Context(), addr)
				if err != nil || len(keys) != 1 {
					b.Fatalf("Lookup(%s) = %d keys, %v", addr, len(keys), err)
				}
				i += 7919 // a prime: spread lookups over the table
			}
		})
	}
}

// BenchmarkAppendAudit is the gateway's audit writer: one call per group
// commit, carrying batch records (one per recipient of the messages that
// were waiting).
func BenchmarkAppendAudit(b *testing.B) {
	for _, st := range benchStores {
		for _, batch := range []int{1, 16, 128} {
			b.Run(fmt.Sprintf("%s/batch=%d", st.name, batch), func(b *testing.B) {
				s := st.open(b)
				recs := make([]AuditRecord, batch)
				now := time.Now()
				for i := range recs {
					recs[i] = AuditRecord{
						Time: now, TxID: fmt.Sprintf("01JD3ZQ7XK%06d", i), MessageID: fmt.Sprintf("<%d.1732528800@mail.firm.example>", i),
						Sender: "clerk@firm.example", Recipient: fmt.Sprintf("client%d@client.example", i),
						Decision: "encrypted", Format: "pgp", Fingerprint: "0F1E2D3C4B5A69788796A5B4C3D2E1F00F1E2D3C",
						KeySource: "directory", Rule: "policy[0] match=*@client.example encrypt=required format=pgp",
						Outcome: "upstream: 250 2.0.0 Ok: queued as 4Xyz",
					}
				}
				defer reportCPU(b)()
				for b.Loop() {
					if _, err := s.AppendAudit(b.Context(), recs); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/record")
			})
		}
	}
}

// reportCPU, deferred right before the benchmark loop, reports the CPU
// time the process spent per operation ("cpu-ns/op"): the benchmark's
// ns/op also counts waits for I/O and, on PostgreSQL, the server.
func reportCPU(b *testing.B) func() {
	start := processCPU()
	return func() {
		if used := processCPU() - start; used > 0 && b.N > 0 {
			b.ReportMetric(float64(used.Nanoseconds())/float64(b.N), "cpu-ns/op")
		}
	}
}

// fillStore inserts n keys directly in one transaction (Put per key would
// dominate the benchmark's set-up time).
func fillStore(b *testing.B, s *SQLStore, n int) {
	b.Helper()
	tx, err := s.db.BeginTx(b.Context(), nil)
	if err != nil {
		b.Fatal(err)
	}
	data := make([]byte, 2048) // about an Ed25519 certificate with a few UIDs
	for i := range n {
		k, err := prepareKey(fakeKey(i, fmt.Sprintf("user%d@example.org", i), "team@example.org"), fakeTime())
		if err != nil {
			b.Fatal(err)
		}
		k.Data = data
		if err := s.putTx(b.Context(), tx, k); err != nil {
			b.Fatal(errors.Join(err, tx.Rollback()))
		}
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
	// PostgreSQL's autovacuum would have analysed the tables by the time a
	// gateway runs; nothing runs ANALYZE on SQLite.
	if s.d.name == "postgres" {
		if _, err := s.db.ExecContext(b.Context(), "ANALYZE"); err != nil {
			b.Fatal(err)
		}
	}
}
