package smtpd_test

// Adversarial review tests (written against the engine as of the review).
// They reuse the helpers of server_test.go. Every read and every wait has
// a deadline, so a failure never hangs the run.

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sealgate/sealgate/gateway/smtpd"
)

// pipeListener hands the server one end of net.Pipe per Dial: no kernel
// buffering at all, so a write the peer does not read blocks until its
// deadline. That makes write-deadline gaps deterministic.
type pipeListener struct {
	ch   chan net.Conn
	once sync.Once
	done chan struct{}
}

func newPipeListener() *pipeListener {
	return &pipeListener{ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

func (l *pipeListener) dial(t *testing.T) net.Conn {
	t.Helper()
	cl, sv := net.Pipe()
	select {
	case l.ch <- sv:
	case <-time.After(readWait):
		t.Fatal("the server did not accept")
	}
	t.Cleanup(func() { _ = cl.Close() })
	return cl
}

func startPipeServer(t *testing.T, be smtpd.Backend, configure func(*smtpd.Server)) (*smtpd.Server, *pipeListener) {
	t.Helper()
	logs := &logBuf{}
	srv := baseServer(be, logs)
	if configure != nil {
		configure(srv)
	}
	l := newPipeListener()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	t.Cleanup(func() {
		_ = srv.Close()
		select {
		case <-served:
		case <-time.After(5 * time.Second):
			t.Errorf("Serve did not return after Close")
		}
	})
	return srv, l
}

// waitLogoutWithin reports whether one more session logged out within d.
func (b *backend) waitLogoutWithin(d time.Duration) bool {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		b.mu.Lock()
		if b.logouts > b.waited {
			b.waited++
			b.mu.Unlock()
			return true
		}
		b.mu.Unlock()
	}
	return false
}

// Regression (found in review): RCPT TO accepts a non-ASCII (UTF-8) mailbox in a transaction that
// did not ask for SMTPUTF8, although MAIL FROM refuses the same thing
// (553 5.6.7). RFC 6531 §3.4: without SMTPUTF8 such an address must be
// refused. The gateway then relays "RCPT TO:<ü@…>" upstream without
// SMTPUTF8 (utf8 false in relay.Begin): an RFC 6531 violation upstream,
// which Postfix/Exchange answer 553/550 — mapped by the gateway to 451, so
// the message is retried until it bounces instead of being refused at once.
func TestRegressionRcptNonASCIIWithoutSMTPUTF8(t *testing.T) {
	t.Parallel()
	_, c := ehloSession(t, nil)
	c.cmd("MAIL FROM:<ü@x.example>", "553 5.6.7") // the sender side is checked
	c.cmd("MAIL FROM:<a@x.example>", "250 ")
	c.write("RCPT TO:<jürgen@y.example>\r\n")
	if got := c.reply(); !strings.HasPrefix(got[len(got)-1], "553 5.6.7") {
		t.Errorf("RCPT TO a UTF-8 mailbox without SMTPUTF8: got %q, want 553 5.6.7", got)
	}
	// With SMTPUTF8 it is fine.
	c.cmd("RSET", "250 ")
	c.cmd("MAIL FROM:<a@x.example> SMTPUTF8", "250 ")
	c.cmd("RCPT TO:<jürgen@y.example>", "250 ")
}

// Regression (found in review): the write deadline is set only in flush(), when the server is
// about to wait. When a pipelined group's replies outgrow the 4 KiB reply
// buffer, bufio.Writer flushes by itself under whatever deadline the last
// flush() set. A client that was idle for longer than WriteTimeout (but
// well within CommandTimeout) and then pipelines ~300 commands (Postfix
// or Exchange sending MAIL + many RCPTs + DATA in one group) meets an
// expired deadline: the write fails, the error sticks in the bufio.Writer,
// every reply of the group is lost and the connection is dropped.
func TestRegressionPipelinedRepliesAfterIdleLongerThanWriteTimeout(t *testing.T) {
	t.Parallel()
	be := newBackend()
	ts := startServer(t, be, func(s *smtpd.Server) {
		s.WriteTimeout = 100 * time.Millisecond
		s.CommandTimeout = 5 * time.Second
		s.MaxRecipients = 1000
	})
	c := dialGreeted(t, ts.addr)
	c.ehlo()
	time.Sleep(300 * time.Millisecond) // idle, well inside CommandTimeout
	const n = 400                      // MAIL + 399 RCPT: 400 replies of 14 bytes, 5600 bytes > 4 KiB
	var group strings.Builder
	group.WriteString("MAIL FROM:<a@x.example>\r\n")
	for i := range n - 1 {
		fmt.Fprintf(&group, "RCPT TO:<r%d@y.example>\r\n", i)
	}
	c.write(group.String())
	for i := range n {
		l, err := c.readLine()
		if err != nil || !strings.HasPrefix(l, "250 ") {
			t.Fatalf("reply %d of %d to a pipelined group: %q, %v (the group's replies were lost)", i+1, n, l, err)
		}
	}
}

// Regression (found in review): after STARTTLS the server clears every deadline
// (tc.SetDeadline(time.Time{}), conn.go:543) and flush() only sets a write
// deadline when it has something to send. Replies that overflow the
// 4 KiB buffer before the first flush are written with no deadline at
// all: a client that pipelines commands over TLS and never reads blocks
// the connection goroutine for ever (WriteTimeout is never applied). Over
// TCP the same happens once the socket buffers fill.
func TestRegressionWriteDeadlineAfterSTARTTLS(t *testing.T) {
	t.Parallel()
	cert, pool := testCert(t)
	be := newBackend()
	_, l := startPipeServer(t, be, func(s *smtpd.Server) {
		// No TLS 1.3 session tickets: over net.Pipe they would be a server
		// write the client never reads.
		s.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, SessionTicketsDisabled: true}
		s.WriteTimeout = 200 * time.Millisecond
	})
	nc := l.dial(t)
	_ = nc.SetDeadline(time.Now().Add(readWait))
	c := &client{t: t, nc: nc, br: bufio.NewReader(nc)}
	c.expect("220 ")
	c.cmd("EHLO client.test", "250 ")
	c.cmd("STARTTLS", "220 ")
	tc := tls.Client(nc, &tls.Config{ServerName: "mx.test", RootCAs: pool})
	_ = tc.SetDeadline(time.Now().Add(readWait))
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	// 100 EHLOs (700 bytes) pipelined; each reply is ~140 bytes, so the
	// server's reply buffer overflows long before it would flush. The
	// client never reads.
	// (The write itself may block: TLS splits it into records and the
	// server stops reading while it is stuck writing.)
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		_, _ = tc.Write([]byte(strings.Repeat("EHLO client.test\r\n", 100)))
	}()
	t.Cleanup(func() { _ = nc.Close(); <-wrote })
	if !be.waitLogoutWithin(2 * time.Second) {
		t.Fatal("a TLS client that does not read its replies held the connection for 2s; WriteTimeout is 200ms")
	}
}

// Regression (found in review): the data deadline is renewed at every BDAT command (bdatReader
// nextChunk -> startData, data.go:225), so the "minimum rate" DataTimeout
// promises (server.go: renewed only per DataBlock bytes) does not hold for
// CHUNKING: a client sending one-byte chunks just inside CommandTimeout /
// DataTimeout holds a transaction open for ever. DATA's equivalent,
// TestTimeoutDATATrickle, is cut off.
func TestRegressionTimeoutBDATTrickle(t *testing.T) {
	t.Parallel()
	be := newBackend()
	ts := startServer(t, be, func(s *smtpd.Server) {
		s.DataTimeout = 400 * time.Millisecond
		s.CommandTimeout = 400 * time.Millisecond
	})
	c := dialGreeted(t, ts.addr)
	c.ehlo()
	c.envelope("a@x", "b@y")
	start := time.Now()
	for time.Since(start) < 2*time.Second {
		c.write("BDAT 1\r\nx")
		l, err := c.readLine()
		if err != nil || !strings.HasPrefix(l, "250 ") {
			return // cut off: the rate floor holds
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("a client sending 1-byte BDAT chunks every 100ms kept the transfer open for %v (DataTimeout 400ms)", time.Since(start).Round(time.Millisecond))
}

// Regression (found in review): after a message is accepted the connection is marked idle
// (conn.go:98-99) before its "250" has been written: readLine flushes it
// afterwards (conn.go:163). Shutdown's closeIdle may close the connection
// in between, or while that flush is blocked on a slow reader, so a
// message the Session took (relayed upstream) is never acknowledged: the
// client retries and the recipients get it twice. Shutdown promises that
// a transaction in flight is answered and then closed with 421. net.Pipe
// makes the slow reader deterministic; over TCP the window is narrow.
// Fix: flush pending replies before storing connIdle (or only let
// closeIdle close connections whose reply buffer is empty).
func TestRegressionShutdownLosesTheFinalReply(t *testing.T) {
	t.Parallel()
	be := newBackend()
	srv, l := startPipeServer(t, be, nil)
	nc := l.dial(t)
	_ = nc.SetDeadline(time.Now().Add(readWait))
	c := &client{t: t, nc: nc, br: bufio.NewReader(nc)}
	c.expect("220 ")
	c.ehlo()
	c.envelope("a@x", "b@y")
	c.cmd("DATA", "354 ")
	c.write("relayed\r\n.\r\n")
	// The Session has the message; the client has not read its reply yet.
	for deadline := time.Now().Add(readWait); len(be.messages()) == 0; time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the message never reached the Session")
		}
	}
	time.Sleep(50 * time.Millisecond)
	done := make(chan error, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	go func() { done <- srv.Shutdown(ctx) }()
	time.Sleep(150 * time.Millisecond) // closeIdle has run (every 50ms)
	l1, err1 := c.readLine()
	if err1 != nil || !strings.HasPrefix(l1, "250 2.0.0") {
		t.Errorf("the Session accepted the message, but Shutdown closed the connection before its reply: got %q, %v", l1, err1)
	}
	_ = nc.Close()
	<-done
}

// TestJunkCommandLimit: commands that move no mail are limited between
// messages (as Postfix's smtpd_junk_command_limit), so a client cannot
// hold a connection slot for ever with NOOP; a delivered message starts
// the count again.
func TestJunkCommandLimit(t *testing.T) {
	t.Parallel()
	_, c := ehloSession(t, nil)
	for range 99 {
		c.cmd("NOOP", "250 ")
	}
	c.cmd("MAIL FROM:<a@x.example>", "250 ")
	c.cmd("RCPT TO:<b@y.example>", "250 ")
	c.cmd("DATA", "354 ")
	c.cmd("Subject: s\r\n\r\nbody\r\n.", "250 ")
	for range 100 {
		c.cmd("RSET", "250 ")
	}
	c.write("NOOP\r\n")
	if l, err := c.readLine(); err != nil || !strings.HasPrefix(l, "421 4.7.0") {
		t.Fatalf("command 101 without mail: %q, %v; want 421 4.7.0", l, err)
	}
	if l, err := c.readLine(); err == nil {
		t.Fatalf("connection still open after 421: read %q", l)
	}
}
