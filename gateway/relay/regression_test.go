package relay

// Adversarial review tests of the upstream client against scripted
// upstreams. Every connection and every wait has a deadline.

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// upstream is a scripted SMTP server: script runs once per accepted
// connection (n counts them from 0) and logs what it read.
type upstream struct {
	t    *testing.T
	ln   net.Listener
	mu   sync.Mutex
	log  []string // every line read, per connection "n: line"
	errs []error
	wg   sync.WaitGroup
}

type upConn struct {
	net.Conn
	n  int
	br *bufio.Reader
	u  *upstream
}

// line reads one line (CRLF kept) and logs it.
func (c *upConn) line() string {
	l, err := c.br.ReadString('\n')
	c.u.mu.Lock()
	if err == nil {
		c.u.log = append(c.u.log, fmt.Sprintf("%d: %s", c.n, strings.TrimRight(l, "\r\n")))
	}
	c.u.mu.Unlock()
	return l
}

func (c *upConn) send(s string) { _, _ = io.WriteString(c.Conn, s) }

// expect reads a line and fails the script unless it starts with prefix.
func (c *upConn) expect(prefix string) string {
	l := c.line()
	if !strings.HasPrefix(l, prefix) {
		c.u.mu.Lock()
		c.u.errs = append(c.u.errs, fmt.Errorf("conn %d: read %q, want %q...", c.n, l, prefix))
		c.u.mu.Unlock()
	}
	return l
}

// body reads DATA up to the end-of-data line and returns it.
func (c *upConn) body() (string, bool) {
	var b strings.Builder
	for {
		l, err := c.br.ReadString('\n')
		if err != nil {
			return b.String(), false
		}
		if l == ".\r\n" {
			return b.String(), true
		}
		b.WriteString(l)
	}
}

// quiet reports whether the client sent nothing more within d (the
// client waits for a reply instead of pipelining).
func (c *upConn) quiet(d time.Duration) bool {
	if c.br.Buffered() > 0 {
		return false
	}
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, err := c.br.Peek(1)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func startUpstream(t *testing.T, script func(c *upConn)) *upstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &upstream{t: t, ln: ln}
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		for n := 0; ; n++ {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			u.wg.Add(1)
			go func() {
				defer u.wg.Done()
				defer nc.Close()
				_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
				script(&upConn{Conn: nc, n: n, br: bufio.NewReader(nc), u: u})
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		u.wg.Wait()
		u.mu.Lock()
		defer u.mu.Unlock()
		for _, err := range u.errs {
			t.Error(err)
		}
	})
	return u
}

func (u *upstream) lines() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.log...)
}

func (u *upstream) relay(t *testing.T, mode string, cfg *tls.Config) *Relay {
	t.Helper()
	r, err := New(Options{Addr: u.ln.Addr().String(), Hostname: "gw.test", TLS: mode, TLSConfig: cfg,
		Timeout: 2 * time.Second, DataTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

func sendMsg(r *Relay, body string, rcpts ...string) (string, error) {
	tx, err := r.Begin(context.Background(), "s@firm.example", false, rcpts)
	if err != nil {
		return "", err
	}
	if _, err := io.WriteString(tx, body); err != nil {
		tx.Abort()
		return "", err
	}
	return tx.Commit()
}

// Regression (found in review): the client takes whatever reply is next in the stream as upstream's
// verdict on the final dot. An upstream (or anything on the path) that
// sends a reply before the command it answers — here a stray "250" while
// the body is still arriving — makes Commit report the message accepted
// although upstream's real answer to the dot is 554, and the connection
// goes back to the pool with that 554 still unread: the next message's
// MAIL is answered by it. The gateway would reply 250 to its client for a
// message upstream refused. Commit should refuse to read the dot's reply
// when unsolicited bytes were already waiting before the dot was sent
// (c.br.Buffered() > 0 in client.finish, client.go:161), and a pooled
// connection with buffered input should never be reused.
func TestRegressionReplyBeforeFinalDotIsNotAcceptance(t *testing.T) {
	u := startUpstream(t, func(c *upConn) {
		c.send("220 up.test ESMTP\r\n")
		c.expect("EHLO ")
		c.send("250-up.test\r\n250 8BITMIME\r\n")
		c.expect("MAIL FROM:")
		c.send("250 2.1.0 ok\r\n")
		c.expect("RCPT TO:")
		c.send("250 2.1.5 ok\r\n")
		c.expect("DATA")
		c.send("354 go\r\n250 2.0.0 unsolicited\r\n") // garbage before the dot
		if _, ok := c.body(); !ok {
			return
		}
		c.send("554 5.7.1 message refused\r\n")
		c.line() // QUIT or the next MAIL
	})
	r := u.relay(t, TLSNone, nil)
	reply, err := sendMsg(r, "Subject: x\r\n\r\nhello\r\n", "a@x.example")
	if err == nil {
		t.Fatalf("Commit = %q, nil: upstream refused the message with 554, but a stray reply sent before the dot was taken as acceptance", reply)
	}
}

// Coverage (passes): an upstream without PIPELINING gets one command at a
// time — the client waits for each reply before the next command (a
// server enforcing "improper pipelining" would drop it otherwise).
func TestRegressionNoPipeliningIsLockStep(t *testing.T) {
	u := startUpstream(t, func(c *upConn) {
		c.send("220 up.test ESMTP\r\n")
		c.expect("EHLO ")
		c.send("250-up.test\r\n250 SIZE 1000000\r\n")
		for _, want := range []string{"MAIL FROM:<s@firm.example>\r\n", "RCPT TO:<a@x.example>\r\n", "RCPT TO:<b@x.example>\r\n", "DATA\r\n"} {
			if l := c.expect(want); l != want {
				return
			}
			if !c.quiet(100 * time.Millisecond) {
				c.u.mu.Lock()
				c.u.errs = append(c.u.errs, fmt.Errorf("client pipelined after %q to an upstream without PIPELINING", want))
				c.u.mu.Unlock()
				return
			}
			if want == "DATA\r\n" {
				c.send("354 go\r\n")
			} else {
				c.send("250 ok\r\n")
			}
		}
		if b, ok := c.body(); !ok || b != "Subject: x\r\n\r\nhello\r\n" {
			return
		}
		c.send("250 2.0.0 queued\r\n")
		c.line()
		c.send("221 bye\r\n")
	})
	r := u.relay(t, TLSNone, nil)
	if reply, err := sendMsg(r, "Subject: x\r\n\r\nhello\n", "a@x.example", "b@x.example"); err != nil || reply != "2.0.0 queued" {
		t.Fatalf("Commit = %q, %v", reply, err)
	}
}

// Coverage (passes): multi-line replies everywhere (greeting, EHLO, MAIL,
// RCPT, DATA and the final dot), as Exchange and some appliances send.
func TestRegressionMultilineReplies(t *testing.T) {
	u := startUpstream(t, func(c *upConn) {
		c.send("220-up.test ESMTP\r\n220-policy banner\r\n220 ready\r\n")
		c.expect("EHLO ")
		c.send("250-up.test Hello\r\n250-pipelining\r\n250-SIZE 1000\r\n250 8BITMIME\r\n")
		c.expect("MAIL ")
		c.expect("RCPT ")
		c.expect("DATA")
		c.send("250-2.1.0 sender\r\n250 2.1.0 ok\r\n251-2.1.5 will\r\n251 2.1.5 forward\r\n354-go\r\n354 on\r\n")
		if _, ok := c.body(); !ok {
			return
		}
		c.send("250-2.0.0 queued as\r\n250 2.0.0 ABC123\r\n")
		c.line()
	})
	r := u.relay(t, TLSNone, nil)
	reply, err := sendMsg(r, "x\r\n", "a@x.example")
	if err != nil || reply != "2.0.0 queued as\n2.0.0 ABC123" {
		t.Fatalf("Commit = %q, %v", reply, err)
	}
}

// Coverage (passes): 421 and a hang-up mid-transaction never yield
// success, and such a connection is not pooled (the next message opens a
// fresh connection).
func TestRegression421MidTransaction(t *testing.T) {
	u := startUpstream(t, func(c *upConn) {
		c.send("220 up.test ESMTP\r\n")
		c.expect("EHLO ")
		c.send("250-up.test\r\n250 PIPELINING\r\n")
		c.expect("MAIL ")
		c.expect("RCPT ")
		c.expect("DATA")
		switch c.n {
		case 0: // 421 at RCPT, then close
			c.send("250 ok\r\n421 4.3.2 shutting down\r\n")
		case 1: // 421 at the dot, then close
			c.send("250 ok\r\n250 ok\r\n354 go\r\n")
			c.body()
			c.send("421 4.3.2 shutting down\r\n")
		case 2: // hang up mid-body
			c.send("250 ok\r\n250 ok\r\n354 go\r\n")
			c.br.ReadString('\n')
		case 3:
			c.send("250 ok\r\n250 ok\r\n354 go\r\n")
			c.body()
			c.send("250 2.0.0 queued\r\n")
			c.line()
		}
	})
	r := u.relay(t, TLSNone, nil)
	if _, err := sendMsg(r, "x\r\n", "a@x.example"); err == nil {
		t.Fatal("421 at RCPT: accepted")
	}
	if _, err := sendMsg(r, "x\r\n", "a@x.example"); err == nil {
		t.Fatal("421 at the final dot: accepted")
	}
	tx, err := r.Begin(context.Background(), "s@firm.example", false, []string{"a@x.example"})
	if err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("line of body\r\n", 1<<16)
	_, werr := io.WriteString(tx, big)
	if _, err := tx.Commit(); werr == nil && err == nil {
		t.Fatal("upstream hung up mid-body: accepted")
	} else if werr != nil {
		tx.Abort()
	}
	if _, err := sendMsg(r, "x\r\n", "a@x.example"); err != nil {
		t.Fatalf("a fresh connection after the failures: %v", err)
	}
}

// Coverage (passes): EHLO refused (5xx) falls back to HELO, with no
// extensions assumed; under TLSRequired that means no delivery and no
// MAIL in plaintext.
func TestRegressionHELOFallback(t *testing.T) {
	u := startUpstream(t, func(c *upConn) {
		c.send("220 up.test ancient SMTP\r\n")
		c.expect("EHLO ")
		c.send("502 5.5.2 what is EHLO\r\n")
		c.expect("HELO gw.test")
		c.send("250 up.test\r\n")
		if c.n == 1 {
			return // the TLSRequired relay must hang up here
		}
		c.expect("MAIL FROM:<s@firm.example>\r\n") // no BODY=, no SMTPUTF8
		c.send("250 ok\r\n")
		c.expect("RCPT ")
		c.send("250 ok\r\n")
		c.expect("DATA")
		c.send("354 go\r\n")
		c.body()
		c.send("250 queued\r\n")
		c.line()
	})
	if _, err := sendMsg(u.relay(t, TLSNone, nil), "x\r\n", "a@x.example"); err != nil {
		t.Fatalf("HELO fallback: %v", err)
	}
	if _, err := sendMsg(u.relay(t, TLSRequired, nil), "x\r\n", "a@x.example"); err == nil {
		t.Fatal("TLSRequired delivered over a HELO-only upstream")
	}
	for _, l := range u.lines() {
		if strings.HasPrefix(l, "1: MAIL") {
			t.Fatalf("TLSRequired sent MAIL in plaintext: %q", u.lines())
		}
	}
}

// Coverage (passes): STARTTLS offered but the handshake fails — no mode
// sends the envelope or the body in plaintext afterwards.
func TestRegressionSTARTTLSHandshakeFailure(t *testing.T) {
	u := startUpstream(t, func(c *upConn) {
		c.send("220 up.test ESMTP\r\n")
		c.expect("EHLO ")
		c.send("250-up.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n")
		c.expect("STARTTLS")
		c.send("220 go ahead\r\n")
		c.br.Peek(1)                                 // the ClientHello
		c.send("this is not a TLS server hello\r\n") // handshake fails
		c.line()
		c.line()
	})
	for _, mode := range []string{TLSRequired, TLSOpportunistic} {
		if _, err := sendMsg(u.relay(t, mode, nil), "secret\r\n", "a@x.example"); err == nil {
			t.Errorf("%s: delivered after a failed handshake", mode)
		}
	}
	for _, l := range u.lines() {
		if strings.Contains(l, "MAIL") || strings.Contains(l, "secret") {
			t.Fatalf("plaintext after a failed TLS handshake: %q", u.lines())
		}
	}
}

// Coverage (passes): replies an attacker appends in plaintext behind
// "220 go ahead" (CVE-2011-0411, client side) are not read inside TLS.
func TestRegressionSTARTTLSResponseInjection(t *testing.T) {
	cert := reviewCert(t)
	u := startUpstream(t, func(c *upConn) {
		c.send("220 up.test ESMTP\r\n")
		c.expect("EHLO ")
		c.send("250-up.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n")
		c.expect("STARTTLS")
		// Injected replies: taken as the answers to EHLO, MAIL, RCPT and
		// DATA they would let the client stream the body before upstream
		// ever saw it.
		c.send("220 go ahead\r\n250 injected-ehlo\r\n250 injected-mail\r\n250 injected-rcpt\r\n354 injected-data\r\n")
		tc := tls.Server(c.Conn, &tls.Config{Certificates: []tls.Certificate{cert}})
		if err := tc.Handshake(); err != nil {
			return
		}
		tcn := &upConn{Conn: tc, n: c.n, br: bufio.NewReader(tc), u: c.u}
		tcn.expect("EHLO ")
		tcn.send("250-up.test\r\n250 PIPELINING\r\n")
		tcn.expect("MAIL ")
		tcn.expect("RCPT ")
		tcn.expect("DATA")
		tcn.send("250 ok\r\n250 ok\r\n354 go\r\n")
		tcn.body()
		tcn.send("250 2.0.0 real\r\n")
		tcn.line()
	})
	reply, err := sendMsg(u.relay(t, TLSOpportunistic, nil), "x\r\n", "a@x.example")
	if err != nil || reply != "2.0.0 real" {
		t.Fatalf("Commit = %q, %v", reply, err)
	}
}

// Coverage (passes): an upstream that stalls — never answers the dot, or
// stops reading the body — costs at most the configured timeouts.
func TestRegressionUpstreamStalls(t *testing.T) {
	release := make(chan struct{})
	u := startUpstream(t, func(c *upConn) {
		c.send("220 up.test ESMTP\r\n")
		c.expect("EHLO ")
		c.send("250-up.test\r\n250 PIPELINING\r\n")
		c.expect("MAIL ")
		c.expect("RCPT ")
		c.expect("DATA")
		c.send("250 ok\r\n250 ok\r\n354 go\r\n")
		if c.n == 0 {
			c.body() // then never answer
		}
		<-release // conn 1: never read the body
	})
	t.Cleanup(func() { close(release) })
	r, err := New(Options{Addr: u.ln.Addr().String(), Hostname: "gw.test", TLS: TLSNone,
		Timeout: 300 * time.Millisecond, DataTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	start := time.Now()
	if _, err := sendMsg(r, "x\r\n", "a@x.example"); err == nil {
		t.Fatal("no reply to the dot: accepted")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("a silent upstream held Commit for %v", d)
	}
	start = time.Now()
	tx, err := r.Begin(context.Background(), "s@firm.example", false, []string{"a@x.example"})
	if err != nil {
		t.Fatal(err)
	}
	chunk := strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n", 1024)
	for time.Since(start) < 3*time.Second {
		if _, err := io.WriteString(tx, chunk); err != nil {
			break
		}
	}
	tx.Abort()
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("an upstream that stops reading held the body write for %v", d)
	}
}

func reviewCert(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "up.test"}, DNSNames: []string{"up.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
