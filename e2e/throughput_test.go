package e2e

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"
)

// TestThroughput is a benchmark harness, not a correctness test: Postfix's
// smtp-source pushes messages through sealgate into smtp-sink (no dump),
// once with policy "never" and once with every message encrypted to an
// X25519 key, and straight into smtp-sink as the ceiling. Run it with
//
//	SEALGATE_THROUGHPUT=1 go test -run TestThroughput -v ./e2e/
func TestThroughput(t *testing.T) {
	if os.Getenv("SEALGATE_THROUGHPUT") == "" {
		t.Skip("set SEALGATE_THROUGHPUT=1")
	}
	const sessions, count, size = 20, 2000, 4096
	const rcpt = "bench@bench.example"

	sink := freeAddr(t)
	args := []string{sink, "256"}
	if os.Geteuid() == 0 {
		args = append([]string{"-u", "nobody"}, args...)
	}
	daemon(t, "", &syncBuffer{}, false, tool(t, "smtp-sink"), args...).waitGreeting(t, sink)

	never := startGatewayTo(t, sink, "[log]\nlevel = \"warn\"\n\n[[policy]]\nmatch = \"*\"\nencrypt = \"never\"\n")
	encrypted := startGatewayTo(t, sink, "[log]\nlevel = \"warn\"\n\n[[policy]]\nmatch = \"*\"\nencrypt = \"required\"\n")
	gh := newGPGHome(t)
	gpgKey(t, gh, rcpt, "future-default", "default", "never") // ed25519 + cv25519 (X25519)
	encrypted.importKeys(t, gpgExport(t, gh, rcpt))

	rate := func(name, addr string) float64 {
		start := time.Now()
		mustRun(t, cmdOpts{timeout: 10 * time.Minute}, "smtp-source", "-s", strconv.Itoa(sessions), "-m", strconv.Itoa(count),
			"-l", strconv.Itoa(size), "-f", "sender@corp.example", "-t", rcpt, "-M", "e2e.test", addr)
		r := float64(count) / time.Since(start).Seconds()
		t.Logf("%-28s %8.0f messages/s", name, r)
		return r
	}
	ceiling := rate("smtp-source -> smtp-sink", sink)
	plain := rate("via sealgate, never", never.smtpAddr)
	enc := rate("via sealgate, X25519 PGP/MIME", encrypted.smtpAddr)
	t.Logf("encrypted/plaintext ratio %.2f; plaintext/ceiling %.2f (%d sessions, %d messages of %d bytes)",
		enc/plain, plain/ceiling, sessions, count, size)
	fmt.Printf("throughput: ceiling %.0f/s, never %.0f/s, encrypted %.0f/s, ratio %.2f\n", ceiling, plain, enc, enc/plain)
}
