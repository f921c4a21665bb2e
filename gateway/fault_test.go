package gateway

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sealgate/sealgate/gateway/policy"
	"github.com/sealgate/sealgate/gateway/relay"
	"github.com/sealgate/sealgate/keydir"
)

// requiredRules makes every recipient at client.example require encryption.
var requiredRules = []policy.Rule{{Match: "client.example", Encrypt: policy.Required}}

// clientReply is the outcome of one client transaction as the client saw it.
type clientReply struct {
	code     int
	enhanced smtp.EnhancedCode
	took     time.Duration // from the final dot to the reply
	err      error         // a transport error instead of a reply
}

func (r clientReply) String() string {
	if r.code == 0 {
		return fmt.Sprintf("no reply (%v) after %v", r.err, r.took.Round(time.Millisecond))
	}
	e := r.enhanced
	return fmt.Sprintf("%d %d.%d.%d after %v", r.code, e[0], e[1], e[2], r.took.Round(time.Millisecond))
}

// sendTimed sends msg with a real client whose every wait is bounded, and
// returns the reply to the final dot. All recipients must be accepted.
func sendTimed(t *testing.T, addr string, rcpts []string, msg string) clientReply {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.CommandTimeout, c.SubmissionTimeout = 10*time.Second, 10*time.Second
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("sender@firm.example", nil); err != nil {
		t.Fatalf("MAIL: %v", err)
	}
	for _, r := range rcpts {
		if err := c.Rcpt(r, nil); err != nil {
			t.Fatalf("RCPT %s: %v", r, err)
		}
	}
	w, err := c.Data()
	if err != nil {
		t.Fatalf("DATA: %v", err)
	}
	if _, err := w.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = w.Close()
	r := clientReply{took: time.Since(start)}
	var se *smtp.SMTPError
	switch {
	case err == nil:
		r.code, r.enhanced = 250, smtp.EnhancedCode{2, 0, 0}
	case errors.As(err, &se):
		r.code, r.enhanced = se.Code, se.EnhancedCode
	default:
		r.err = err
	}
	return r
}

// TestUpstreamFaults injects each upstream fault (reliability.md G2) into a
// message for two recipients that require encryption (one in To, one Bcc:
// two upstream transactions) carrying the canary everywhere. For every
// fault: the client gets 451 4.4.1 within a bounded time, upstream never
// accepts a message, never receives a final dot before the fault (a
// partial message), never sees the canary in any form, and the spool is
// left empty with no descriptor open.
func TestUpstreamFaults(t *testing.T) {
	t.Parallel()
	var cases []fault
	for _, at := range []step{atConnect, atEHLO, atMail, atRcpt, atData, atDot} {
		for _, code := range []int{421, 451, 554} {
			cases = append(cases, fault{at: at, code: code})
		}
		cases = append(cases, fault{at: at, hang: true})
	}
	cases = append(cases, fault{at: atBody, reset: true}, fault{at: atDot, reset: true},
		// The second transaction fails: the first, whose body is already
		// streamed, must be dropped without its final dot.
		fault{at: atRcpt, code: 554, conn: 2}, fault{at: atData, hang: true, conn: 2},
		fault{at: atBody, reset: true, conn: 2})
	for _, f := range cases {
		t.Run(strings.ReplaceAll(f.String(), " ", "_"), func(t *testing.T) {
			t.Parallel()
			g := startScriptedGateway(t, requiredRules, f, nil)
			g.newKey(t, "alice@client.example")
			g.newKey(t, "carol@client.example")
			msg := canaryMessage("Alice <alice@client.example>", "carol@client.example")
			r := sendTimed(t, g.addr, []string{"alice@client.example", "carol@client.example"}, msg)
			raw, txns := g.up.snapshot()
			t.Logf("fault %s → reply %s → %d connection(s), %d transaction(s), none accepted", f, r, len(raw), len(txns))
			if r.code != 451 || r.enhanced != smtp.EnhancedCode(codeUpstream) {
				t.Errorf("reply %s, want 451 4.4.1 (transient: the sender retries)", r)
			}
			// Hangs end at the relay timeouts; anything near the client's
			// own 10 s timeout means a wait is unbounded.
			if r.took > 5*time.Second {
				t.Errorf("reply took %v", r.took)
			}
			// A reset of the second connection mid-body may surface only when
			// its final dot is due, after the first copy was committed: the
			// documented duplicate window (DESIGN.md), not a loss.
			lateReset := f.conn == 2 && f.at == atBody && f.reset
			for i, tx := range txns {
				if tx.accepted && !(lateReset && i == 0) {
					t.Errorf("transaction %d accepted upstream although the client got %d", i+1, r.code)
				}
				if tx.dot && f.at != atDot && !(lateReset && i == 0) {
					t.Errorf("transaction %d received a final dot: a partial message committed", i+1)
				}
			}
			for i, b := range raw {
				if how := leaks(b, canary); how != "" {
					t.Errorf("canary reached upstream connection %d (%s)", i+1, how)
				}
			}
			checkSpoolClean(t, g.spoolDir)
		})
	}
}

// TestUpstreamFaultsOpportunisticTLS repeats the hangs with the default
// upstream_tls = "opportunistic": the greeting and EHLO then happen inside
// go-smtp's NewClientStartTLS, whose own 5-minute deadlines the relay must
// cap, and an upstream without STARTTLS costs a second connection.
func TestUpstreamFaultsOpportunisticTLS(t *testing.T) {
	t.Parallel()
	for _, f := range []fault{{at: atConnect, hang: true}, {at: atEHLO, hang: true}, {at: atConnect, code: 554},
		{at: atMail, hang: true}, {at: atDot, hang: true}} {
		t.Run(strings.ReplaceAll(f.String(), " ", "_"), func(t *testing.T) {
			t.Parallel()
			g := startScriptedGatewayTLS(t, requiredRules, f, relay.TLSOpportunistic, nil)
			g.newKey(t, "alice@client.example")
			r := sendTimed(t, g.addr, []string{"alice@client.example"}, canaryMessage("alice@client.example", ""))
			raw, txns := g.up.snapshot()
			t.Logf("fault %s (opportunistic TLS) → reply %s → %d connection(s), %d transaction(s)", f, r, len(raw), len(txns))
			if r.code != 451 || r.took > 5*time.Second {
				t.Errorf("reply %s, want 451 4.4.1 within the relay timeouts", r)
			}
			for _, tx := range txns {
				if tx.accepted {
					t.Error("a transaction was accepted upstream")
				}
			}
			checkSpoolClean(t, g.spoolDir)
		})
	}
}

// TestUpstreamStopsReadingBody: upstream answers 354 and then stops
// reading. go-smtp clears the connection deadline after DATA's 354 and sets
// one again only once the final dot is written, so without the relay's own
// per-write deadline the session would block for ever once the socket
// buffers are full, holding its connection slot.
func TestUpstreamStopsReadingBody(t *testing.T) {
	t.Parallel()
	g := startScriptedGateway(t, neverRules, fault{at: atBody, stall: true}, nil)
	line := strings.Repeat("x", 998) + "\r\n"
	msg := "From: s@firm.example\r\nTo: bob@other.example\r\nSubject: big\r\n\r\n" + strings.Repeat(line, 16<<10) // 16 MiB
	r := sendTimed(t, g.addr, []string{"bob@other.example"}, msg)
	t.Logf("fault upstream stops reading mid-body → reply %s", r)
	if r.code != 451 || r.took > 5*time.Second {
		t.Fatalf("reply %s, want 451 within the relay timeouts", r)
	}
}

var neverRules = []policy.Rule{{Match: "*", Encrypt: policy.Never}}

// TestUpstreamRefused: nothing listens upstream.
func TestUpstreamRefused(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	g := startScriptedGateway(t, requiredRules, fault{}, func(o *Options) { o.Relay = mustRelay(t, dead) })
	g.newKey(t, "alice@client.example")
	r := sendTimed(t, g.addr, []string{"alice@client.example"}, canaryMessage("alice@client.example", ""))
	t.Logf("fault connection refused → reply %s → nothing sent", r)
	if r.code != 451 || r.enhanced != smtp.EnhancedCode(codeUpstream) {
		t.Errorf("reply %s, want 451 4.4.1", r)
	}
	checkSpoolClean(t, g.spoolDir)
}

// TestUpstreamFailsAfterFirstCommit: the second transaction's final dot is
// refused after upstream took the first. The client must get a 4xx (a
// retry may duplicate the first copy; DESIGN.md prefers that to a loss).
func TestUpstreamFailsAfterFirstCommit(t *testing.T) {
	t.Parallel()
	for _, f := range []fault{{at: atDot, code: 554, conn: 2}, {at: atDot, hang: true, conn: 2}} {
		t.Run(strings.ReplaceAll(f.String(), " ", "_"), func(t *testing.T) {
			t.Parallel()
			g := startScriptedGateway(t, requiredRules, f, nil)
			g.newKey(t, "alice@client.example")
			g.newKey(t, "carol@client.example")
			r := sendTimed(t, g.addr, []string{"alice@client.example", "carol@client.example"}, canaryMessage("alice@client.example", "carol@client.example"))
			// Upstream marks a copy accepted just after its 250 has gone out.
			var txns []wireTxn
			accepted := 0
			waitFor(2*time.Second, func() bool {
				_, txns = g.up.snapshot()
				accepted = 0
				for _, tx := range txns {
					if tx.accepted {
						accepted++
					}
				}
				return accepted > 0
			})
			t.Logf("fault %s → reply %s → %d of %d copies accepted (a retry duplicates them)", f, r, accepted, len(txns))
			if r.code != 451 {
				t.Errorf("reply %s, want 451", r)
			}
			if len(txns) != 2 || accepted != 1 || !txns[0].accepted {
				t.Errorf("want the first of 2 transactions accepted; got %d transactions, %d accepted", len(txns), accepted)
			}
			checkSpoolClean(t, g.spoolDir)
		})
	}
}

// rawClient speaks SMTP byte for byte over TCP.
type rawClient struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawClient {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	rc := &rawClient{t: t, c: c, br: bufio.NewReader(c)}
	if r := rc.reply(); !strings.HasPrefix(r, "220 ") {
		t.Fatalf("greeting %q", r)
	}
	return rc
}

// reply reads one (possibly multi-line) reply and returns its last line;
// "" on a read error or timeout (10 s).
func (rc *rawClient) reply() string {
	_ = rc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		line, err := rc.br.ReadString('\n')
		if err != nil {
			return ""
		}
		if len(line) < 4 || line[3] != '-' {
			return strings.TrimRight(line, "\r\n")
		}
	}
}

func (rc *rawClient) write(s string) {
	rc.t.Helper()
	if _, err := rc.c.Write([]byte(s)); err != nil {
		rc.t.Fatalf("write: %v", err)
	}
}

// cmd sends one command line and requires a reply starting with want.
func (rc *rawClient) cmd(line, want string) string {
	rc.t.Helper()
	rc.write(line + "\r\n")
	r := rc.reply()
	if !strings.HasPrefix(r, want) {
		rc.t.Fatalf("%q: reply %q, want %s", line, r, want)
	}
	return r
}

func (rc *rawClient) envelope(rcpts ...string) {
	rc.t.Helper()
	rc.cmd("EHLO client.test", "250")
	rc.cmd("MAIL FROM:<sender@firm.example>", "250")
	for _, r := range rcpts {
		rc.cmd("RCPT TO:<"+r+">", "250")
	}
}

// waitFor polls cond every 10 ms for up to d.
func waitFor(d time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

// TestClientDisconnectsMidData (reliability.md G6): the client sends part
// of a message — enough to spill the spool to disk — and hangs up. Nothing
// may reach upstream (not even a connection), the spool file must be gone,
// and the next client must be served.
func TestClientDisconnectsMidData(t *testing.T) {
	t.Parallel()
	// All but the end: DATA buffers 32 KiB per read, so what is sent must
	// clearly exceed the 64 KiB the spool keeps in memory.
	part := canaryMessage("alice@client.example", "")
	for _, mode := range []string{"DATA", "BDAT"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			g := startScriptedGateway(t, requiredRules, fault{}, nil)
			g.newKey(t, "alice@client.example")
			rc := dialRaw(t, g.addr)
			rc.envelope("alice@client.example")
			if mode == "DATA" {
				rc.cmd("DATA", "354")
				rc.write(part)
			} else {
				// A chunk that is not the last, cut short.
				rc.write(fmt.Sprintf("BDAT %d\r\n%s", 2*len(part), part))
			}
			if !waitFor(5*time.Second, func() bool { return spoolFDs(t, g.spoolDir) > 0 }) {
				t.Fatal("the message never spilled to the spool")
			}
			rc.c.Close()
			if !waitFor(5*time.Second, func() bool { return spoolFDs(t, g.spoolDir) == 0 }) {
				t.Fatal("spool file still open 5 s after the client left")
			}
			checkSpoolClean(t, g.spoolDir)
			if raw, _ := g.up.snapshot(); len(raw) != 0 {
				t.Fatalf("upstream got %d connection(s) for an aborted message", len(raw))
			}
			t.Logf("fault client disconnects mid-%s → no reply (connection gone) → nothing relayed, spool clean", mode)
			if r := sendTimed(t, g.addr, []string{"alice@client.example"}, testMsg); r.code != 250 {
				t.Fatalf("next client: %s", r)
			}
		})
	}
}

// stalledDirectory answers no lookup until the lookup's deadline.
type stalledDirectory struct{}

func (stalledDirectory) Lookup(ctx context.Context, _ string) ([]keydir.Key, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// TestFailClosedDirectoryFaults (reliability.md G1): when the directory
// cannot answer for a recipient — the database is gone, a lookup runs out
// of time, or the stored key is garbage or truncated — that recipient is
// deferred (451) or refused (550) at RCPT, never sent plaintext, whether
// policy requires encryption or only wants it (opportunistic: a recipient
// known to have a key is never silently downgraded).
func TestFailClosedDirectoryFaults(t *testing.T) {
	t.Parallel()
	corrupt := func(mangle func([]byte) []byte) func(t *testing.T, path string, _ *keydir.SQLStore) {
		return func(t *testing.T, path string, _ *keydir.SQLStore) {
			db, err := sql.Open("sqlite", path)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			var data []byte
			if err := db.QueryRow("SELECT data FROM keys").Scan(&data); err != nil {
				t.Fatal(err)
			}
			if _, err := db.Exec("UPDATE keys SET data = ?", mangle(data)); err != nil {
				t.Fatal(err)
			}
		}
	}
	garbage := corrupt(func([]byte) []byte { return bytes.Repeat([]byte{0xde, 0xad, 0xbe, 0xef}, 64) })
	truncated := corrupt(func(b []byte) []byte { return b[:len(b)/2] })
	closed := func(t *testing.T, _ string, s *keydir.SQLStore) { s.Close() }
	for _, c := range []struct {
		name     string
		rules    []policy.Rule
		breakDir func(t *testing.T, path string, s *keydir.SQLStore)
		stall    bool
		codes    []int // acceptable RCPT replies
	}{
		{"database closed, required", requiredRules, closed, false, []int{451}},
		{"lookup times out, required", requiredRules, nil, true, []int{451}},
		{"garbage key row, required", requiredRules, garbage, false, []int{451}},
		{"garbage key row, opportunistic", nil, garbage, false, []int{451}},
		{"truncated key row, required", requiredRules, truncated, false, []int{451, 550}},
		{"truncated key row, opportunistic", nil, truncated, false, []int{451, 550}},
	} {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "keys.db")
			store, err := keydir.OpenSQLite(context.Background(), path)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { store.Close() })
			g := startScriptedGateway(t, c.rules, fault{}, func(o *Options) {
				o.Directory, o.LookupTimeout = store, 300*time.Millisecond
				if c.stall {
					o.Directory = stalledDirectory{}
				}
			})
			g.store = store
			g.newKey(t, "alice@client.example")
			if c.breakDir != nil {
				c.breakDir(t, path, store)
			}
			start := time.Now()
			res := g.send(t, "sender@firm.example", []string{"alice@client.example"}, canaryMessage("alice@client.example", ""), nil)
			err = res.rcptErrs["alice@client.example"]
			t.Logf("fault %s → RCPT %v in %v", c.name, err, time.Since(start).Round(time.Millisecond))
			if !slices.Contains(c.codes, smtpCode(err)) {
				t.Errorf("RCPT reply %v, want one of %v", err, c.codes)
			}
			raw, _ := g.up.snapshot()
			for i, b := range raw {
				if how := leaks(b, canary); how != "" {
					t.Errorf("canary reached upstream connection %d (%s)", i+1, how)
				}
			}
			if len(raw) != 0 {
				t.Errorf("upstream got %d connection(s) for a recipient that was not accepted", len(raw))
			}
		})
	}
}

// TestLeakCheckFindsEveryForm proves the canary check can fail: each form
// the canary message carries is found on its own.
func TestLeakCheckFindsEveryForm(t *testing.T) {
	msg := canaryMessage("a@b.example", "")
	for _, part := range strings.Split(msg, "--b1\r\n")[1:4] {
		if leaks([]byte(part), canary) == "" {
			t.Errorf("canary not found in %q", part[:min(len(part), 120)])
		}
	}
	for align := range 3 {
		enc := base64.StdEncoding.EncodeToString(append(bytes.Repeat([]byte{'x'}, align), canary...))
		folded := enc[:10] + "\r\n" + enc[10:]
		if leaks([]byte(folded), canary) == "" {
			t.Errorf("base64 at alignment %d not found", align)
		}
	}
	if got := leaks([]byte("nothing to see"), canary); got != "" {
		t.Errorf("false positive: %s", got)
	}
	if bareAt([]byte("a\r\nb\r\n")) != -1 || bareAt([]byte("a\r\nb\rc")) != 4 || bareAt([]byte("a\nb")) != 1 {
		t.Error("bareAt")
	}
}
