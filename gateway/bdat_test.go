package gateway

// BDAT and timeout regressions found by the hardening suite. Most were
// bugs of go-smtp's server, which the gateway used before it had its own
// SMTP engine (gateway/smtpd); they stay as regression tests.

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"
)

// TestClientDisconnectsMidLastChunk belongs in fault_test.go. A client
// announces "BDAT n LAST" and hangs up after fewer than n bytes. go-smtp's
// handleBdat copies the chunk with io.Copy(pipe, io.LimitReader(conn, n)),
// which treats the early EOF as success, closes the pipe cleanly and so
// hands the backend a truncated message as complete: the gateway relays it.
func TestClientDisconnectsMidLastChunk(t *testing.T) {
	t.Parallel()
	g := startScriptedGateway(t, neverRules, fault{}, nil)
	rc := dialRaw(t, g.addr)
	rc.envelope("bob@other.example")
	msg := "From: s@firm.example\r\nTo: bob@other.example\r\nSubject: cut\r\n\r\nfirst half only\r\n"
	rc.write(fmt.Sprintf("BDAT %d LAST\r\n%s", 2*len(msg), msg))
	time.Sleep(100 * time.Millisecond)
	rc.c.Close()
	time.Sleep(time.Second)
	if _, txns := g.up.snapshot(); len(txns) != 0 {
		t.Fatalf("a truncated BDAT LAST chunk reached upstream (%d transaction(s), accepted=%v): %q", len(txns), txns[0].accepted, txns[0].data)
	}
}

// TestSlowlorisBDAT belongs in limits_test.go (TestSlowloris). A client
// that announces a BDAT chunk and drips one byte every 0.7 s (data_timeout
// and command_timeout 1 s) is still connected after 6 s. In the committed
// session.go the deadlineReader renews data_timeout on every read, and with
// BDAT every socket read reaches the backend through go-smtp's pipe, so one
// byte per read renews it. Without the renewal (as in the working tree), the
// chunk read times out inside go-smtp, which answers a permanent 554 (see
// TestBDATClientTimeoutIsPermanent), keeps the connection and then runs the
// drip as command fragments until its error limit (see
// TestSlowlorisCommandTimeoutReply).
func TestSlowlorisBDAT(t *testing.T) {
	t.Parallel()
	g := startScriptedGateway(t, neverRules, fault{}, func(o *Options) {
		o.DataTimeout, o.CommandTimeout = time.Second, time.Second
	})
	rc := dialRaw(t, g.addr)
	rc.envelope("bob@other.example")
	rc.write("BDAT 100000 LAST\r\n")
	start := time.Now()
	for time.Since(start) < 6*time.Second {
		if _, err := rc.c.Write([]byte("x")); err != nil {
			t.Logf("connection closed after %v", time.Since(start).Round(time.Millisecond))
			return
		}
		time.Sleep(700 * time.Millisecond)
	}
	t.Fatalf("a client sending one byte every 0.7 s is still connected after %v (data_timeout 1 s)", time.Since(start).Round(time.Millisecond))
}

// TestSlowlorisCommandTimeoutReply belongs in limits_test.go
// (TestSlowloris, command phase). A client dripping a byte every 300 ms
// (command_timeout 1 s) should be cut off with 421 4.4.2 once the timeout
// runs out, as RFC 5321 §4.5.3.2 and Postfix do. Instead bufio.ReadLine
// (under net/textproto, under go-smtp's readLine) returns the bytes read
// before the deadline as a complete line and drops the timeout error, so
// go-smtp runs the fragment as a command ("MAIL" → 502, "FROM:<s" → 500,
// ...) and only its error limit ends the connection, after about five
// timeouts, with "500 5.5.1 Too many errors". Fix idea: treat a read
// timeout as fatal below go-smtp (the listener's conn wrapper closes the
// connection, after a 421 4.4.2 when not under TLS).
func TestSlowlorisCommandTimeoutReply(t *testing.T) {
	t.Parallel()
	g := startScriptedGateway(t, neverRules, fault{}, func(o *Options) { o.CommandTimeout, o.DataTimeout = time.Second, time.Second })
	rc := dialRaw(t, g.addr)
	drip := "MAIL FROM:<sender@firm.example>\r\n"
	start := time.Now()
	var replies []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		for r := rc.reply(); r != ""; r = rc.reply() {
			replies = append(replies, r)
		}
	}()
	for i := 0; i < len(drip); i++ {
		if _, err := rc.c.Write([]byte{drip[i]}); err != nil {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	<-done
	took := time.Since(start)
	if len(replies) == 0 || !strings.HasPrefix(replies[len(replies)-1], "421 4.4.2") || took > 2500*time.Millisecond {
		t.Fatalf("replies %q, closed after %v; want 421 4.4.2 and a close within about one timeout", replies, took.Round(time.Millisecond))
	}
}

// TestBDATClientTimeoutIsPermanent belongs in limits_test.go. A client
// that stops sending inside a BDAT chunk hits data_timeout inside go-smtp's
// handleBdat, which writes dataErrorToStatus(err) for the read error: a
// permanent "554 5.0.0 Error: transaction failed: read tcp
// 127.0.0.1:A->127.0.0.1:B: i/o timeout". The sender bounces the message
// for a transient fault, and the reply reveals internal addresses
// (STYLE.md rules 4 and 5).
func TestBDATClientTimeoutIsPermanent(t *testing.T) {
	t.Parallel()
	g := startScriptedGateway(t, neverRules, fault{}, func(o *Options) { o.DataTimeout, o.CommandTimeout = time.Second, time.Second })
	rc := dialRaw(t, g.addr)
	rc.envelope("bob@other.example")
	rc.write("BDAT 100000 LAST\r\nSubject: x\r\n\r\nthe client stalls here")
	r := rc.reply()
	if r != "" && !strings.HasPrefix(r, "4") || strings.Contains(r, "127.0.0.1") {
		t.Fatalf("reply %q, want a 4xx (or a closed connection) that names no address", r)
	}
}

// TestBDATThenHangUp: a client that sends BDAT and hangs up at once made
// go-smtp's BDAT goroutine dereference the session its Close had already
// cleared (a recovered panic per client, found by FuzzSession with
// "EHLO 00\nMaAL FROM:<>\r\nRCPT TO:<b@e>\r\nBDAT 0"). smtpd reads
// chunks on the connection's goroutine: nothing panics, nothing is relayed.
func TestBDATThenHangUp(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	g := startScriptedGateway(t, neverRules, fault{}, func(o *Options) {
		o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	for i := range 100 {
		c, err := net.Dial("tcp", g.addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		chunk := []string{"BDAT 0", "BDAT 0 LAST", "BDAT 10 LAST\r\nabc", "BDAT 3\r\nabc"}[i%4]
		_, _ = c.Write([]byte("EHLO c\r\nMAIL FROM:<s@firm.example>\r\nRCPT TO:<bob@other.example>\r\n" + chunk))
		_ = c.(*net.TCPConn).CloseWrite()
		_, _ = io.ReadAll(c)
		c.Close()
	}
	time.Sleep(200 * time.Millisecond)
	if n := strings.Count(logs.String(), "panic"); n != 0 {
		t.Fatalf("%d panics logged for 100 clients hanging up after BDAT", n)
	}
	// "BDAT 0 LAST" is a complete (empty) message and may be relayed;
	// every other form was cut short and must not be.
	if _, txns := g.up.snapshot(); len(txns) > 25 {
		t.Fatalf("%d upstream transactions for 25 complete messages", len(txns))
	}
}

// TestBDATResetThenNewTransaction (run with -race): RSET after a
// non-LAST chunk, then a new BDAT transaction, pipelined. go-smtp let the
// aborted transfer's goroutine send its result to the next transaction's
// channel: the new message could be answered with the old error and relayed
// anyway (a duplicate on retry). Every reply must belong to its own command
// and only the second message may go upstream.
func TestBDATResetThenNewTransaction(t *testing.T) {
	t.Parallel()
	g := startScriptedGateway(t, neverRules, fault{}, nil)
	const rounds = 20
	want := []string{"250", "250", "250", "250", "250", "250", "250", "250", "221"}
	for i := range rounds {
		c, err := net.Dial("tcp", g.addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = c.Write([]byte("EHLO c\r\nMAIL FROM:<s@firm.example>\r\nRCPT TO:<bob@other.example>\r\nBDAT 4\r\nabcdRSET\r\n" +
			"MAIL FROM:<a@firm.example>\r\nRCPT TO:<carol@other.example>\r\nBDAT 17 LAST\r\nSubject: x\r\n\r\nx\r\nQUIT\r\n"))
		out, _ := io.ReadAll(c)
		c.Close()
		var got []string
		for _, line := range strings.Split(strings.TrimRight(string(out), "\r\n"), "\r\n") {
			if len(line) >= 4 && line[3] == ' ' && !strings.HasPrefix(line, "220 ") {
				got = append(got, line[:3])
			}
		}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Fatalf("round %d: replies %q, want codes %v", i, out, want)
		}
	}
	// Upstream marks a transaction accepted just after its 250 has gone out.
	var txns []wireTxn
	waitFor(2*time.Second, func() bool {
		_, txns = g.up.snapshot()
		for _, tx := range txns {
			if !tx.accepted {
				return false
			}
		}
		return len(txns) == rounds
	})
	if len(txns) != rounds {
		t.Fatalf("%d upstream transactions, want %d", len(txns), rounds)
	}
	for _, tx := range txns {
		if !strings.Contains(tx.from, "<a@firm.example>") || !tx.accepted {
			t.Fatalf("upstream transaction from %q (accepted %v): only the second message may be relayed", tx.from, tx.accepted)
		}
	}
}
