package smtpd_test

// Unit tests of the SMTP protocol engine: a real TCP listener, raw clients
// that write exact bytes and read reply lines, and a recording Backend.
// Every read has a deadline, so a failure never hangs the test run.

import (
	"bufio"
	"bytes"
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
	"log/slog"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sealgate/sealgate/gateway/smtpd"
)

// ---------------------------------------------------------------------
// Recording backend

// msg is one Data call as the Session saw it.
type msg struct {
	From  string
	Opts  smtpd.MailOptions
	To    []string
	Body  []byte
	Err   error // the error the reader ended with: io.EOF for a whole message
	Hello string
	TLS   bool
}

type backend struct {
	// Hooks; nil means accept (Data: read to the end and record).
	mailFn func(from string, o smtpd.MailOptions) error
	rcptFn func(to string) error
	// dataFn replaces the default Data: it returns what it read, the
	// reader's last error, and what Data returns.
	dataFn     func(r io.Reader) (body []byte, readErr error, ret error)
	newSessErr error

	mu       sync.Mutex
	mails    []string // every Mail call's from, accepted or not
	msgs     []msg
	resets   int
	sessions int
	logouts  int

	waited  int         // logouts waitLogout has seen
	overlap atomic.Bool // two methods of one Session ran at once
}

func newBackend() *backend { return &backend{} }

func (b *backend) NewSession(c *smtpd.Conn) (smtpd.Session, error) {
	if b.newSessErr != nil {
		return nil, b.newSessErr
	}
	b.mu.Lock()
	b.sessions++
	b.mu.Unlock()
	return &session{b: b, c: c}, nil
}

type session struct {
	b      *backend
	c      *smtpd.Conn
	cur    *msg
	inCall atomic.Int32
}

func (s *session) enter() {
	if s.inCall.Add(1) != 1 {
		s.b.overlap.Store(true)
	}
}
func (s *session) exit() { s.inCall.Add(-1) }

func (s *session) Mail(from string, o smtpd.MailOptions) error {
	s.enter()
	defer s.exit()
	s.b.mu.Lock()
	s.b.mails = append(s.b.mails, from)
	s.b.mu.Unlock()
	if s.b.mailFn != nil {
		if err := s.b.mailFn(from, o); err != nil {
			return err
		}
	}
	_, isTLS := s.c.TLS()
	s.cur = &msg{From: from, Opts: o, Hello: s.c.Hello(), TLS: isTLS}
	return nil
}

func (s *session) Rcpt(to string) error {
	s.enter()
	defer s.exit()
	if s.b.rcptFn != nil {
		if err := s.b.rcptFn(to); err != nil {
			return err
		}
	}
	s.cur.To = append(s.cur.To, to)
	return nil
}

// readAll reads r to its end and returns the last error exactly as Read
// gave it (io.EOF included), reading in odd-sized pieces.
func readAll(r io.Reader) ([]byte, error) {
	var out []byte
	p := make([]byte, 1000)
	for {
		n, err := r.Read(p)
		out = append(out, p[:n]...)
		if err != nil {
			return out, err
		}
	}
}

func (s *session) Data(r io.Reader) error {
	s.enter()
	defer s.exit()
	var (
		body    []byte
		readErr error
		ret     error
	)
	s.b.mu.Lock()
	dataFn := s.b.dataFn
	s.b.mu.Unlock()
	if dataFn != nil {
		body, readErr, ret = dataFn(r)
	} else {
		body, readErr = readAll(r)
		if readErr != io.EOF {
			ret = readErr
		}
	}
	m := msg{}
	if s.cur != nil {
		m = *s.cur
	}
	m.Body, m.Err = body, readErr
	s.b.mu.Lock()
	s.b.msgs = append(s.b.msgs, m)
	s.b.mu.Unlock()
	return ret
}

func (s *session) Reset() {
	s.enter()
	defer s.exit()
	s.cur = nil
	s.b.mu.Lock()
	s.b.resets++
	s.b.mu.Unlock()
}

func (s *session) Logout() {
	s.enter()
	defer s.exit()
	s.b.mu.Lock()
	s.b.logouts++
	s.b.mu.Unlock()
}

// setData replaces the Data hook while the server runs.
func (b *backend) setData(fn func(r io.Reader) ([]byte, error, error)) {
	b.mu.Lock()
	b.dataFn = fn
	b.mu.Unlock()
}

func (b *backend) messages() []msg {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]msg(nil), b.msgs...)
}

// take returns the messages recorded so far and forgets them.
func (b *backend) take() []msg {
	b.mu.Lock()
	defer b.mu.Unlock()
	ms := b.msgs
	b.msgs = nil
	return ms
}

func (b *backend) mailFroms() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.mails...)
}

// expectCutOff checks that the server closed c's connection, that the
// session logged out, and that the backend saw one message whose reader
// ended with an error (not EOF): the transfer was cut off, never complete.
func (b *backend) expectCutOff(t testing.TB, c *client) {
	t.Helper()
	c.expectClosed()
	b.waitLogout(t)
	if ms := b.messages(); len(ms) != 1 || ms[0].Err == nil || ms[0].Err == io.EOF {
		t.Fatalf("backend saw %+v", ms)
	}
}

// waitLogout waits until one more session has logged out.
func (b *backend) waitLogout(t testing.TB) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(2 * time.Millisecond) {
		b.mu.Lock()
		if b.logouts > b.waited {
			b.waited++
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatal("the session was never logged out")
		}
	}
}

// ---------------------------------------------------------------------
// Server and client helpers

// logBuf collects the server's log so tests can look for panics.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type testServer struct {
	*smtpd.Server
	addr   string
	logs   *logBuf
	served chan error
}

func baseServer(be smtpd.Backend, logs *logBuf) *smtpd.Server {
	return &smtpd.Server{
		Hostname:        "mx.test",
		MaxMessageBytes: 1 << 20,
		MaxRecipients:   5,
		MaxLineLength:   1000,
		CommandTimeout:  2 * time.Second,
		DataTimeout:     1 * time.Second,
		WriteTimeout:    2 * time.Second,
		Backend:         be,
		Logger:          slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

func startServer(t testing.TB, be smtpd.Backend, configure func(*smtpd.Server)) *testServer {
	t.Helper()
	logs := &logBuf{}
	srv := baseServer(be, logs)
	if configure != nil {
		configure(srv)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{Server: srv, addr: l.Addr().String(), logs: logs, served: make(chan error, 1)}
	go func() { ts.served <- srv.Serve(l) }()
	t.Cleanup(func() {
		_ = srv.Close()
		select {
		case err := <-ts.served:
			if !errors.Is(err, smtpd.ErrServerClosed) {
				t.Errorf("Serve returned %v, want ErrServerClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Serve did not return after Close")
		}
		if s := logs.String(); strings.Contains(s, "panic") {
			t.Errorf("the server logged a panic:\n%s", s)
		}
	})
	return ts
}

type client struct {
	t  testing.TB
	nc net.Conn
	br *bufio.Reader
}

const readWait = 5 * time.Second

func dial(t testing.TB, addr string) *client {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, readWait)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	return &client{t: t, nc: nc, br: bufio.NewReader(nc)}
}

// dialGreeted connects and reads the 220 greeting.
// ehloSession starts a server with a recording backend (tweak adjusts
// the server, nil for the defaults) and returns the backend and a client
// that has been greeted and said EHLO.
func ehloSession(t *testing.T, tweak func(*smtpd.Server)) (*backend, *client) {
	t.Helper()
	be := newBackend()
	ts := startServer(t, be, tweak)
	c := dialGreeted(t, ts.addr)
	c.ehlo()
	return be, c
}

func dialGreeted(t testing.TB, addr string) *client {
	t.Helper()
	c := dial(t, addr)
	c.expect("220 ")
	return c
}

func (c *client) write(s string) {
	c.t.Helper()
	_ = c.nc.SetWriteDeadline(time.Now().Add(readWait))
	if _, err := io.WriteString(c.nc, s); err != nil {
		c.t.Fatalf("write %q: %v", trunc(s), err)
	}
}

func trunc(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}

func (c *client) readLine() (string, error) {
	_ = c.nc.SetReadDeadline(time.Now().Add(readWait))
	return c.br.ReadString('\n')
}

// reply reads one (possibly multi-line) reply and returns its lines.
func (c *client) reply() []string {
	c.t.Helper()
	var lines []string
	for {
		l, err := c.readLine()
		if err != nil {
			c.t.Fatalf("reading a reply (so far %q): %v", lines, err)
		}
		if len(l) < 6 || !strings.HasSuffix(l, "\r\n") || (l[3] != ' ' && l[3] != '-') {
			c.t.Fatalf("malformed reply line %q", l)
		}
		lines = append(lines, l[:len(l)-2])
		if l[3] == ' ' {
			return lines
		}
	}
}

// expect reads a reply whose last line starts with prefix.
func (c *client) expect(prefix string) []string {
	c.t.Helper()
	lines := c.reply()
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, prefix) {
		c.t.Fatalf("got reply %q, want %q...", lines, prefix)
	}
	return lines
}

// cmd sends one command line and expects a reply starting with prefix.
func (c *client) cmd(line, prefix string) []string {
	c.t.Helper()
	c.write(line + "\r\n")
	return c.expect(prefix)
}

// expectClosed expects the server to close the connection, with no
// more replies.
func (c *client) expectClosed() {
	c.t.Helper()
	l, err := c.readLine()
	if err == nil || l != "" {
		c.t.Fatalf("want the connection closed, got %q, %v", l, err)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		c.t.Fatalf("the server did not close the connection: %v", err)
	}
}

func (c *client) ehlo() {
	c.t.Helper()
	c.cmd("EHLO client.test", "250 ")
}

// envelope sends MAIL and RCPT and reads their replies.
func (c *client) envelope(from, to string) {
	c.t.Helper()
	c.cmd("MAIL FROM:<"+from+">", "250 2.1.0")
	c.cmd("RCPT TO:<"+to+">", "250 2.1.5")
}

// sendData sends DATA, the raw (already dot-stuffed, CRLF.CRLF ended)
// data, and returns the final reply.
func (c *client) sendData(raw string) []string {
	c.t.Helper()
	c.cmd("DATA", "354 ")
	c.write(raw)
	return c.reply()
}

func mustLast(t testing.TB, lines []string, prefix string) {
	t.Helper()
	if !strings.HasPrefix(lines[len(lines)-1], prefix) {
		t.Fatalf("got reply %q, want %q...", lines, prefix)
	}
}

// refDot is the reference DATA decoder: the message ends at the first
// CRLF "." CRLF that starts a line (the stream's start counts as a line
// start), and one leading dot is removed from every line that begins
// after a CRLF. consumed is the length of the stream up to and including
// the end marker; ok is false when the stream has no end marker.
func refDot(stream []byte) (body []byte, consumed int, ok bool) {
	var raw []byte
	switch {
	case bytes.HasPrefix(stream, []byte(".\r\n")):
		raw, consumed = nil, 3
	default:
		i := bytes.Index(stream, []byte("\r\n.\r\n"))
		if i < 0 {
			return nil, 0, false
		}
		raw, consumed = stream[:i+2], i+5
	}
	body = make([]byte, 0, len(raw))
	for i, ch := range raw {
		if ch == '.' && (i == 0 || i >= 2 && raw[i-2] == '\r' && raw[i-1] == '\n') {
			continue
		}
		body = append(body, ch)
	}
	return body, consumed, true
}

var (
	certOnce sync.Once
	certVal  tls.Certificate
	certPool *x509.CertPool
	certErr  error
)

// testCert is a self-signed certificate for mx.test and 127.0.0.1.
func testCert(t testing.TB) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	certOnce.Do(func() {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			certErr = err
			return
		}
		tmpl := &x509.Certificate{
			SerialNumber:          big.NewInt(1),
			Subject:               pkix.Name{CommonName: "mx.test"},
			DNSNames:              []string{"mx.test"},
			IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
			NotBefore:             time.Now().Add(-time.Hour),
			NotAfter:              time.Now().Add(24 * time.Hour),
			KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
			ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			BasicConstraintsValid: true,
			IsCA:                  true,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			certErr = err
			return
		}
		leaf, err := x509.ParseCertificate(der)
		if err != nil {
			certErr = err
			return
		}
		certVal = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
		certPool = x509.NewCertPool()
		certPool.AddCert(leaf)
	})
	if certErr != nil {
		t.Fatal(certErr)
	}
	return certVal, certPool
}

// ---------------------------------------------------------------------
// 1. Greeting, EHLO, HELO, bad commands

func ehloKeywords(lines []string) map[string]bool {
	kw := map[string]bool{}
	for _, l := range lines[1:] {
		kw[l[4:]] = true
	}
	return kw
}

func TestGreetingAndEHLO(t *testing.T) {
	t.Parallel()
	be := newBackend()
	ts := startServer(t, be, nil)
	c := dial(t, ts.addr)
	g := c.expect("220 ")
	if !strings.Contains(g[0], "mx.test") {
		t.Errorf("greeting %q does not name the host", g[0])
	}
	lines := c.cmd("EHLO client.test", "250 ")
	if !strings.HasPrefix(lines[0], "250") || !strings.Contains(lines[0], "mx.test") {
		t.Errorf("first EHLO line %q", lines[0])
	}
	for i, l := range lines[:len(lines)-1] {
		if !strings.HasPrefix(l, "250-") {
			t.Errorf("EHLO line %d %q: want 250- continuation", i, l)
		}
	}
	kw := ehloKeywords(lines)
	for _, want := range []string{"PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "CHUNKING", "SMTPUTF8", "SIZE 1048576"} {
		if !kw[want] {
			t.Errorf("EHLO lacks %q: %q", want, lines)
		}
	}
	if kw["STARTTLS"] {
		t.Errorf("STARTTLS offered without a TLSConfig: %q", lines)
	}
	c.cmd("STARTTLS", "502 5.5.1")
	c.cmd("NOOP", "250 2.0.0")
	c.cmd("VRFY someone", "252 ")
	c.cmd("HELP", "214 ")
	// The name given is what Conn.Hello reports.
	c.envelope("a@example.org", "b@example.net")
	mustLast(t, c.sendData("hi\r\n.\r\n"), "250 2.0.0")
	c.cmd("QUIT", "221 2.0.0")
	c.expectClosed()
	be.waitLogout(t)
	ms := be.messages()
	if len(ms) != 1 || ms[0].Hello != "client.test" || string(ms[0].Body) != "hi\r\n" || ms[0].Err != io.EOF {
		t.Fatalf("backend saw %+v", ms)
	}
}

func TestEHLOOffersSTARTTLSOnlyWithTLSConfig(t *testing.T) {
	t.Parallel()
	cert, _ := testCert(t)
	ts := startServer(t, newBackend(), func(s *smtpd.Server) {
		s.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
		s.MaxMessageBytes = 12345
	})
	c := dialGreeted(t, ts.addr)
	kw := ehloKeywords(c.cmd("EHLO client.test", "250 "))
	if !kw["STARTTLS"] {
		t.Errorf("STARTTLS not offered with a TLSConfig: %v", kw)
	}
	if !kw["SIZE 12345"] {
		t.Errorf("SIZE does not follow MaxMessageBytes: %v", kw)
	}
}

func TestHELO(t *testing.T) {
	t.Parallel()
	be := newBackend()
	ts := startServer(t, be, nil)
	c := dialGreeted(t, ts.addr)
	c.cmd("HELO", "501 ")
	lines := c.cmd("HELO old.client", "250 ")
	if len(lines) != 1 {
		t.Errorf("HELO reply is multi-line: %q", lines)
	}
	c.envelope("a@x", "b@y")
	mustLast(t, c.sendData("x\r\n.\r\n"), "250 ")
	if ms := be.messages(); len(ms) != 1 || ms[0].Hello != "old.client" {
		t.Fatalf("backend saw %+v", ms)
	}
}

func TestCommandsBeforeEHLO(t *testing.T) {
	t.Parallel()
	be := newBackend()
	ts := startServer(t, be, nil)
	c := dialGreeted(t, ts.addr)
	c.cmd("MAIL FROM:<a@x>", "503 ")
	c.cmd("RCPT TO:<b@y>", "503 ")
	c.cmd("DATA", "503 ")
	// A refused BDAT's chunk is skipped: the QUIT inside it is not run.
	c.write("BDAT 6 LAST\r\nQUIT\r\n")
	c.expect("503 ")
	c.cmd("NOOP", "250 ")
	c.cmd("RSET", "250 ")
	if m := be.mailFroms(); len(m) != 0 {
		t.Fatalf("backend saw MAIL %q before EHLO", m)
	}
}

func TestUnknownCommands(t *testing.T) {
	t.Parallel()
	ts := startServer(t, newBackend(), nil)
	c := dialGreeted(t, ts.addr)
	c.cmd("FOO bar", "500 5.5.2")
	c.cmd("", "500 ")
	c.cmd("EXPN list", "502 ")
	c.cmd("MAIL TO:<x@y>", "503 ") // before EHLO
	c.ehlo()
	c.cmd("MAIL TO:<x@y>", "501 ")
	c.cmd("MAIL FROM:<a@x> FOO=1", "555 ")
	c.cmd("MAIL FROM:<a@x> SIZE=abc", "501 ")
	c.cmd("MAIL FROM:<ü@x>", "553 5.6.7")
	c.cmd("DATA", "503 ")
	c.cmd("noop", "250 ") // case-insensitive
	c.cmd("QUIT", "221 ")
	c.expectClosed()
}

func TestTooManyErrors(t *testing.T) {
	t.Parallel()
	ts := startServer(t, newBackend(), func(s *smtpd.Server) { s.MaxErrors = 3 })
	c := dialGreeted(t, ts.addr)
	c.cmd("FOO", "500 ")
	c.cmd("NOOP", "250 ") // a good command does not reset the count, nor count
	c.cmd("BAR", "500 ")
	c.write("BAZ\r\n")
	c.expect("500 ")
	c.expect("421 4.7.0")
	c.expectClosed()
}

func TestTooManyErrorsDefault(t *testing.T) {
	t.Parallel()
	ts := startServer(t, newBackend(), nil) // MaxErrors 0 means 10
	c := dialGreeted(t, ts.addr)
	c.write(strings.Repeat("FOO\r\n", 10))
	for range 10 {
		c.expect("500 ")
	}
	c.expect("421 ")
	c.expectClosed()
}

// Too many over-long command lines end the connection like any other
// errors: the last 500 and the 421 must reach the client.
func TestTooManyLongCommandLines(t *testing.T) {
	t.Parallel()
	ts := startServer(t, newBackend(), func(s *smtpd.Server) {
		s.MaxErrors = 2
		s.MaxLineLength = 50
	})
	c := dialGreeted(t, ts.addr)
	long := "NOOP " + strings.Repeat("x", 100) + "\r\n"
	c.write(long)
	c.expect("500 5.5.2")
	c.write(long)
	c.expect("500 5.5.2")
	c.expect("421 4.7.0")
	c.expectClosed()
}

func TestLongCommandLine(t *testing.T) {
	t.Parallel()
	ts := startServer(t, newBackend(), func(s *smtpd.Server) { s.MaxLineLength = 50 })
	c := dialGreeted(t, ts.addr)
	c.cmd("NOOP "+strings.Repeat("x", 45), "250 ") // exactly 50
	c.cmd("NOOP "+strings.Repeat("x", 46), "500 5.5.2")
	// Longer than the read buffer: skipped whole, then in sync.
	c.cmd("NOOP "+strings.Repeat("x", 100<<10), "500 5.5.2")
	c.cmd("NOOP", "250 ")
}

func TestNewSessionRefused(t *testing.T) {
	t.Parallel()
	be := newBackend()
	be.newSessErr = errors.New("no")
	ts := startServer(t, be, nil)
	c := dial(t, ts.addr)
	c.expect("421 4.3.0")
	c.expectClosed()
}

func TestSessionPanicIsContained(t *testing.T) {
	t.Parallel()
	be := newBackend()
	be.mailFn = func(from string, _ smtpd.MailOptions) error {
		if from == "boom@x" {
			panic("test panic")
		}
		return nil
	}
	ts := startServer(t, be, nil)
	logs := ts.logs
	c := dialGreeted(t, ts.addr)
	c.ehlo()
	c.cmd("MAIL FROM:<boom@x>", "421 4.3.0")
	c.expectClosed()
	be.waitLogout(t)
	if !strings.Contains(logs.String(), "test panic") {
		t.Errorf("the panic was not logged")
	}
	// The server carries on. (Clear the log so cleanup does not flag it.)
	logs.mu.Lock()
	logs.b.Reset()
	logs.mu.Unlock()
	c2 := dialGreeted(t, ts.addr)
	c2.ehlo()
	c2.envelope("a@x", "b@y")
	mustLast(t, c2.sendData("ok\r\n.\r\n"), "250 ")
}

// ---------------------------------------------------------------------
// 2. Pipelining

func TestPipelining(t *testing.T) {
	t.Parallel()
	be := newBackend()
	ts := startServer(t, be, nil)
	c := dialGreeted(t, ts.addr)
	c.write("EHLO client.test\r\nMAIL FROM:<a@x> SIZE=20 BODY=8BITMIME\r\nRCPT TO:<b@y>\r\nRCPT TO:<c@y>\r\nDATA\r\n")
	c.expect("250 ")
	c.expect("250 2.1.0")
	c.expect("250 2.1.5")
	c.expect("250 2.1.5")
	c.expect("354 ")
	c.write("Subject: x\r\n\r\n..dot\r\nbody\r\n.\r\n")
	c.expect("250 2.0.0")
	// A whole transaction, body and all, in one write.
	c.write("MAIL FROM:<d@x>\r\nRCPT TO:<e@y>\r\nDATA\r\nsecond\r\n.\r\nNOOP\r\n")
	for _, want := range []string{"250 2.1.0", "250 2.1.5", "354 ", "250 2.0.0", "250 "} {
		c.expect(want)
	}
	ms := be.messages()
	if len(ms) != 2 {
		t.Fatalf("backend saw %d messages", len(ms))
	}
	m := ms[0]
	if m.From != "a@x" || strings.Join(m.To, ",") != "b@y,c@y" || m.Opts.Size != 20 || m.Opts.Body != "8BITMIME" {
		t.Errorf("envelope %+v", m)
	}
	if string(m.Body) != "Subject: x\r\n\r\n.dot\r\nbody\r\n" || m.Err != io.EOF {
		t.Errorf("body %q, err %v", m.Body, m.Err)
	}
	if string(ms[1].Body) != "second\r\n" || ms[1].From != "d@x" {
		t.Errorf("second message %+v", ms[1])
	}
}

func TestMailOptions(t *testing.T) {
	t.Parallel()
	be, c := ehloSession(t, nil)
	c.cmd("MAIL FROM:<ü@x> SMTPUTF8 BODY=7bit", "250 ")
	c.cmd("RCPT TO:<b@y>", "250 ")
	mustLast(t, c.sendData("x\r\n.\r\n"), "250 ")
	c.cmd("MAIL FROM:<>", "250 ") // null reverse-path
	c.cmd("MAIL FROM:<a@x>", "503 ")
	c.cmd("RSET", "250 ")
	c.cmd("RCPT TO:<b@y>", "503 ")
	ms := be.messages()
	if len(ms) != 1 || !ms[0].Opts.UTF8 || ms[0].Opts.Body != "7BIT" || ms[0].From != "ü@x" {
		t.Fatalf("backend saw %+v", ms)
	}
	if f := be.mailFroms(); len(f) != 2 || f[1] != "" {
		t.Fatalf("MAIL calls %q", f)
	}
}

// ---------------------------------------------------------------------
// 3. DATA

func TestDATADotUnstuffing(t *testing.T) {
	t.Parallel()
	cases := []struct{ raw, want string }{
		{".\r\n", ""},
		{"\r\n.\r\n", "\r\n"},
		{"..\r\n.\r\n", ".\r\n"},
		{"...\r\n.\r\n", "..\r\n"},
		{"a\r\n..b\r\n.c\r\n.\r\n", "a\r\n.b\r\nc\r\n"},
		{"a.\r\nb..\r\n .\r\n.\r\n", "a.\r\nb..\r\n .\r\n"},
		{"no final newline\r\n.\r\n", "no final newline\r\n"},
	}
	be, c := ehloSession(t, nil)
	for _, tc := range cases {
		c.envelope("a@x", "b@y")
		mustLast(t, c.sendData(tc.raw), "250 2.0.0")
	}
	ms := be.messages()
	if len(ms) != len(cases) {
		t.Fatalf("backend saw %d messages, want %d", len(ms), len(cases))
	}
	for i, tc := range cases {
		if got := string(ms[i].Body); got != tc.want || ms[i].Err != io.EOF {
			t.Errorf("DATA %q: backend saw %q (%v), want %q", tc.raw, got, ms[i].Err, tc.want)
		}
		if ref, _, _ := refDot([]byte(tc.raw)); string(ref) != tc.want {
			t.Errorf("reference disagrees on %q: %q", tc.raw, ref)
		}
	}
}

// Only CRLF "." CRLF ends DATA: "." after a bare LF or CR, or a dot line
// ending in a bare CR, or a NUL before the dot, is message data.
func TestDATAOnlyCRLFDotCRLFEnds(t *testing.T) {
	t.Parallel()
	raw := "one\n.\ntwo\n.\r\nthree\r.\rfour\r\n.\rfive\r\n\x00.\r\nsix\r\n.\r\n"
	want := "one\n.\ntwo\n.\r\nthree\r.\rfour\r\n\rfive\r\n\x00.\r\nsix\r\n"
	if ref, n, _ := refDot([]byte(raw)); string(ref) != want || n != len(raw) {
		t.Fatalf("reference: %q %d", ref, n)
	}
	be, c := ehloSession(t, nil)
	c.envelope("a@x", "b@y")
	mustLast(t, c.sendData(raw), "250 2.0.0")
	// Each smuggling sequence alone, followed by what looks like commands.
	for _, seq := range []string{"\n.\n", "\n.\r\n", "\r.\r", "\r\n.\r", "\r\n\x00.\r\n"} {
		c.envelope("a@x", "b@y")
		mustLast(t, c.sendData("x"+seq+"MAIL FROM:<evil@x>\r\n.\r\n"), "250 2.0.0")
	}
	ms := be.messages()
	if len(ms) != 6 {
		t.Fatalf("backend saw %d messages, want 6", len(ms))
	}
	if string(ms[0].Body) != want || ms[0].Err != io.EOF {
		t.Errorf("backend saw %q (%v), want %q", ms[0].Body, ms[0].Err, want)
	}
	for i, seq := range []string{"\n.\n", "\n.\r\n", "\r.\r", "\r\n.\r", "\r\n\x00.\r\n"} {
		want, _, _ := refDot([]byte("x" + seq + "MAIL FROM:<evil@x>\r\n.\r\n"))
		if !bytes.Equal(ms[i+1].Body, want) {
			t.Errorf("sequence %q: backend saw %q, want %q", seq, ms[i+1].Body, want)
		}
	}
	for _, f := range be.mailFroms() {
		if f == "evil@x" {
			t.Fatalf("a smuggled MAIL ran")
		}
	}
}

func TestDATAByteByByte(t *testing.T) {
	t.Parallel()
	be, c := ehloSession(t, nil)
	c.envelope("a@x", "b@y")
	c.cmd("DATA", "354 ")
	raw := "Subject: s\r\n\r\n..x\r\nline\r\n.\r\n"
	for i := range len(raw) {
		c.write(raw[i : i+1])
		time.Sleep(time.Millisecond)
	}
	c.expect("250 2.0.0")
	// The end marker split as CR | LF . | CR LF.
	c.envelope("a@x", "b@y")
	c.cmd("DATA", "354 ")
	for _, part := range []string{"y\r", "\n.", "\r", "\n"} {
		c.write(part)
		time.Sleep(5 * time.Millisecond)
	}
	c.expect("250 2.0.0")
	ms := be.messages()
	if len(ms) != 2 || string(ms[0].Body) != "Subject: s\r\n\r\n.x\r\nline\r\n" || string(ms[1].Body) != "y\r\n" {
		t.Fatalf("backend saw %+v", ms)
	}
}

func TestDATALinesLongerThanBuffer(t *testing.T) {
	t.Parallel()
	be, c := ehloSession(t, func(s *smtpd.Server) { s.MaxLineLength = 200 << 10 })
	// The engine reads through a 16 KiB buffer; these lines cross it.
	big := strings.Repeat("0123456789abcdef", 100<<10/16) // 100 KiB
	raws := []string{
		big + "\r\n.\r\n",
		"." + big + "\r\n.\r\n",                                       // stuffed long line
		strings.Repeat("x", 16383) + "\r\n.\r\n",                      // CR ends a full buffer, LF starts the next
		strings.Repeat("x", 16383) + "\r.\r\n.\r\n",                   // bare CR at the buffer's end, then "."
		strings.Repeat("x", 16384) + ".\r\n.\r\n",                     // a dot that starts a buffer, not a line
		strings.Repeat("x", 16382) + "\r\n..\r\n" + big + "\r\n.\r\n", // mixed
	}
	for _, raw := range raws {
		c.envelope("a@x", "b@y")
		mustLast(t, c.sendData(raw), "250 2.0.0")
	}
	ms := be.messages()
	if len(ms) != len(raws) {
		t.Fatalf("backend saw %d messages", len(ms))
	}
	for i, raw := range raws {
		want, _, _ := refDot([]byte(raw))
		if !bytes.Equal(ms[i].Body, want) || ms[i].Err != io.EOF {
			t.Errorf("message %d: backend saw %d bytes (%v), want %d", i, len(ms[i].Body), ms[i].Err, len(want))
		}
	}
}

func TestDATALineTooLong(t *testing.T) {
	t.Parallel()
	be, c := ehloSession(t, func(s *smtpd.Server) { s.MaxLineLength = 100 })
	// Exactly MaxLineLength is fine.
	c.envelope("a@x", "b@y")
	mustLast(t, c.sendData(strings.Repeat("a", 100)+"\r\n.\r\n"), "250 2.0.0")
	// One more is refused; what follows the line, including a would-be
	// end of data in the middle, is still message data.
	c.envelope("a@x", "b@y")
	mustLast(t, c.sendData("ok\r\n"+strings.Repeat("b", 101)+"\r\nmore\r\n.\r\n"), "554 5.6.0")
	c.cmd("NOOP", "250 ")
	c.envelope("a@x", "b@y")
	mustLast(t, c.sendData("after\r\n.\r\n"), "250 2.0.0")
	// A line longer than the read buffer, ending in the message's end.
	c.envelope("a@x", "b@y")
	mustLast(t, c.sendData(strings.Repeat("c", 40<<10)+"\r\n.\r\n"), "554 5.6.0")
	c.envelope("a@x", "b@y")
	mustLast(t, c.sendData("after2\r\n.\r\n"), "250 2.0.0")

	ms := be.messages()
	if len(ms) != 5 {
		t.Fatalf("backend saw %d messages", len(ms))
	}
	for _, i := range []int{1, 3} {
		if !errors.Is(ms[i].Err, smtpd.ErrLineTooLong) {
			t.Errorf("message %d: reader ended with %v, want ErrLineTooLong", i, ms[i].Err)
		}
	}
	if string(ms[2].Body) != "after\r\n" || string(ms[4].Body) != "after2\r\n" {
		t.Errorf("following messages %q, %q", ms[2].Body, ms[4].Body)
	}
}

func TestDATATooBig(t *testing.T) {
	t.Parallel()
	be, c := ehloSession(t, func(s *smtpd.Server) { s.MaxMessageBytes = 1000 })
	c.cmd("MAIL FROM:<a@x> SIZE=1001", "552 5.3.4")
	c.cmd("RCPT TO:<b@y>", "503 ") // the MAIL was refused
	c.cmd("MAIL FROM:<a@x> SIZE=1000", "250 ")
	c.cmd("RCPT TO:<b@y>", "250 ")
	line := strings.Repeat("z", 98) + "\r\n"
	mustLast(t, c.sendData(strings.Repeat(line, 10)+".\r\n"), "250 2.0.0") // exactly 1000
	c.envelope("a@x", "b@y")
	mustLast(t, c.sendData(strings.Repeat(line, 30)+"QUIT\r\n.\r\n"), "552 5.3.4")
	c.envelope("a@x", "b@y")
	mustLast(t, c.sendData("small\r\n.\r\n"), "250 2.0.0")
	ms := be.messages()
	if len(ms) != 3 {
		t.Fatalf("backend saw %d messages", len(ms))
	}
	if len(ms[0].Body) != 1000 || ms[0].Err != io.EOF || ms[0].Opts.Size != 1000 {
		t.Errorf("message 0: %d bytes, %v", len(ms[0].Body), ms[0].Err)
	}
	if !errors.Is(ms[1].Err, smtpd.ErrTooBig) || len(ms[1].Body) > 1000 {
		t.Errorf("message 1: %d bytes, %v; want at most 1000 and ErrTooBig", len(ms[1].Body), ms[1].Err)
	}
	if string(ms[2].Body) != "small\r\n" {
		t.Errorf("message 2: %q", ms[2].Body)
	}
}

// ---------------------------------------------------------------------
// 4. Session replies

func TestSessionErrorReplies(t *testing.T) {
	t.Parallel()
	be := newBackend()
	be.mailFn = func(from string, _ smtpd.MailOptions) error {
		switch from {
		case "deny@x":
			return &smtpd.Error{Code: 550, Enhanced: smtpd.EnhancedCode{5, 7, 1}, Message: "Sender denied"}
		case "oops@x":
			return errors.New("database down")
		}
		return nil
	}
	be.rcptFn = func(to string) error {
		switch to {
		case "deny@y":
			return fmt.Errorf("wrapped: %w", &smtpd.Error{Code: 550, Enhanced: smtpd.EnhancedCode{5, 1, 1}, Message: "No such user\r\nhere"})
		case "oops@y":
			return errors.New("lookup failed")
		}
		return nil
	}
	ts := startServer(t, be, nil)
	c := dialGreeted(t, ts.addr)
	c.ehlo()
	if l := c.cmd("MAIL FROM:<deny@x>", "550 "); l[0] != "550 5.7.1 Sender denied" {
		t.Errorf("got %q", l)
	}
	c.cmd("MAIL FROM:<oops@x>", "451 4.3.0")
	c.cmd("MAIL FROM:<a@x>", "250 ")
	if l := c.cmd("RCPT TO:<deny@y>", "550 "); l[0] != "550 5.1.1 No such user  here" {
		t.Errorf("got %q (CR LF must become spaces)", l)
	}
	c.cmd("RCPT TO:<oops@y>", "451 4.3.0")
	c.cmd("DATA", "554 ") // no valid recipient
	c.cmd("RCPT TO:<ok@y>", "250 ")
	mustLast(t, c.sendData("x\r\n.\r\n"), "250 ")
	if ms := be.messages(); len(ms) != 1 || strings.Join(ms[0].To, ",") != "ok@y" {
		t.Fatalf("backend saw %+v", ms)
	}
}

func TestDataReplies(t *testing.T) {
	t.Parallel()
	// Each case's Data; the message is "line1\r\nline2\r\n".
	cases := []struct {
		name string
		data func(r io.Reader) ([]byte, error, error)
		want string
	}{
		{"smtpd.Error after reading", func(r io.Reader) ([]byte, error, error) {
			b, err := readAll(r)
			return b, err, &smtpd.Error{Code: 554, Enhanced: smtpd.EnhancedCode{5, 7, 0}, Message: "Rejected by policy"}
		}, "554 5.7.0 Rejected by policy"},
		{"smtpd.Error without reading", func(r io.Reader) ([]byte, error, error) {
			return nil, nil, &smtpd.Error{Code: 450, Enhanced: smtpd.EnhancedCode{4, 2, 0}, Message: "Later"}
		}, "450 4.2.0 Later"},
		{"other error", func(r io.Reader) ([]byte, error, error) {
			b, err := readAll(r)
			return b, err, errors.New("disk full")
		}, "451 4.3.0"},
		{"nil without reading", func(r io.Reader) ([]byte, error, error) {
			return nil, nil, nil
		}, "451 "},
		{"nil after a partial read", func(r io.Reader) ([]byte, error, error) {
			p := make([]byte, 3)
			n, err := r.Read(p)
			return p[:n], err, nil
		}, "451 "},
		{"nil after reading every byte but not EOF", func(r io.Reader) ([]byte, error, error) {
			p := make([]byte, len("line1\r\nline2\r\n"))
			n, err := io.ReadFull(r, p)
			return p[:n], err, nil
		}, "451 "},
		{"nil after EOF", func(r io.Reader) ([]byte, error, error) {
			b, err := readAll(r)
			return b, err, nil
		}, "250 2.0.0"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			be := newBackend()
			be.dataFn = tc.data
			ts := startServer(t, be, nil)
			c := dialGreeted(t, ts.addr)
			c.ehlo()
			c.envelope("a@x", "b@y")
			mustLast(t, c.sendData("line1\r\nline2\r\n.\r\n"), tc.want)
			// The same with BDAT.
			c.envelope("a@x", "b@y")
			c.write("BDAT 7\r\nline1\r\n")
			if tc.name == "smtpd.Error without reading" || tc.name == "nil without reading" {
				c.expect(tc.want) // Data returned before the second chunk
				c.write("BDAT 7 LAST\r\nline2\r\n")
				c.expect("503 ") // the transaction is over; the chunk is skipped
			} else if tc.name == "nil after a partial read" {
				c.expect(tc.want)
				c.write("BDAT 7 LAST\r\nline2\r\n")
				c.expect("503 ")
			} else {
				c.expect("250 ")
				c.write("BDAT 7 LAST\r\nline2\r\n")
				c.expect(tc.want)
			}
			// In sync afterwards, with a normal session.
			be.setData(nil)
			c.envelope("a@x", "b@y")
			mustLast(t, c.sendData("fine\r\n.\r\n"), "250 2.0.0")
		})
	}
}

// A zero-length Read is not the end of the message: io.EOF only comes
// once the whole message has arrived (smtpd.Session.Data's contract).
func TestDataZeroLengthRead(t *testing.T) {
	t.Parallel()
	be := newBackend()
	var zeroErr error
	be.dataFn = func(r io.Reader) ([]byte, error, error) {
		_, zeroErr = r.Read(nil)
		if zeroErr == io.EOF {
			// An empty message: accept it without reading further.
			return nil, io.EOF, nil
		}
		b, err := readAll(r)
		return b, err, nil
	}
	ts := startServer(t, be, nil)
	c := dialGreeted(t, ts.addr)
	c.ehlo()
	c.envelope("a@x", "b@y")
	mustLast(t, c.sendData("not empty\r\n.\r\n"), "250 ")
	ms := be.messages()
	if zeroErr == io.EOF || len(ms) != 1 || string(ms[0].Body) != "not empty\r\n" {
		t.Fatalf("Read(nil) on an unread DATA message returned %v; the message was acknowledged "+
			"250 with the Session having read %q", zeroErr, ms[0].Body)
	}
}

func TestMaxRecipients(t *testing.T) {
	t.Parallel()
	be := newBackend()
	ts := startServer(t, be, func(s *smtpd.Server) { s.MaxRecipients = 2 })
	c := dialGreeted(t, ts.addr)
	if !ehloKeywords(c.cmd("EHLO c", "250 "))["LIMITS RCPTMAX=2"] {
		t.Errorf("EHLO does not announce RCPTMAX=2")
	}
	c.cmd("MAIL FROM:<a@x>", "250 ")
	c.cmd("RCPT TO:<r1@y>", "250 ")
	c.cmd("RCPT TO:<r2@y>", "250 ")
	c.cmd("RCPT TO:<r3@y>", "452 4.5.3")
	mustLast(t, c.sendData("x\r\n.\r\n"), "250 ")
	// The count starts again with the next transaction.
	c.cmd("MAIL FROM:<a@x>", "250 ")
	c.cmd("RCPT TO:<r4@y>", "250 ")
	c.cmd("RCPT TO:<r5@y>", "250 ")
	c.cmd("RCPT TO:<r6@y>", "452 4.5.3")
	ms := be.messages()
	if len(ms) != 1 || strings.Join(ms[0].To, ",") != "r1@y,r2@y" {
		t.Fatalf("backend saw %+v", ms)
	}
}

// ---------------------------------------------------------------------
// 5. BDAT

func TestBDATSingle(t *testing.T) {
	t.Parallel()
	be, c := ehloSession(t, nil)
	c.envelope("a@x", "b@y")
	body := "Subject: x\r\n\r\n.leading dot\r\n.\r\nQUIT\r\n"
	c.write("BDAT " + strconv.Itoa(len(body)) + " LAST\r\n" + body)
	c.expect("250 2.0.0")
	c.envelope("a@x", "b@y")
	c.cmd("BDAT 0 LAST", "250 2.0.0") // an empty message
	c.cmd("NOOP", "250 ")
	ms := be.messages()
	if len(ms) != 2 || string(ms[0].Body) != body || ms[0].Err != io.EOF || len(ms[1].Body) != 0 || ms[1].Err != io.EOF {
		t.Fatalf("backend saw %+v", ms)
	}
}

func TestBDATChunks(t *testing.T) {
	t.Parallel()
	be, c := ehloSession(t, nil)
	c.envelope("a@x", "b@y")
	chunks := []string{"first\r\n.\r\n", "", "\r\n.\r\nRSET\r\n", "..x\r\n", "end"}
	var want string
	for i, ch := range chunks {
		want += ch
		last := i == len(chunks)-1
		cmd := "BDAT " + strconv.Itoa(len(ch))
		if last {
			cmd += " LAST"
		}
		c.write(cmd + "\r\n" + ch)
		// Each chunk is acknowledged before the next is sent.
		c.expect("250 2.0.0")
	}
	c.cmd("NOOP", "250 ")
	ms := be.messages()
	if len(ms) != 1 || string(ms[0].Body) != want || ms[0].Err != io.EOF {
		t.Fatalf("backend saw %+v, want body %q", ms, want)
	}
	be.mu.Lock()
	resets := be.resets
	be.mu.Unlock()
	if resets != 1 {
		t.Errorf("Reset called %d times, want 1 (end of message)", resets)
	}
}

func TestBDATRefusedChunkSkipped(t *testing.T) {
	t.Parallel()
	be, c := ehloSession(t, func(s *smtpd.Server) { s.MaxMessageBytes = 100 })
	chunk := "QUIT\r\n"
	// No MAIL.
	c.write("BDAT 6 LAST\r\n" + chunk)
	c.expect("503 ")
	c.cmd("NOOP", "250 ")
	// MAIL but no RCPT.
	c.cmd("MAIL FROM:<a@x>", "250 ")
	c.write("BDAT 6\r\n" + chunk)
	c.expect("554 ")
	c.cmd("RCPT TO:<b@y>", "250 ")
	c.write("BDAT 6 LAST\r\nhello!")
	c.expect("250 2.0.0")
	// Over the size limit at once.
	c.envelope("a@x", "b@y")
	c.write("BDAT 200 LAST\r\n" + strings.Repeat("QUIT\r\n", 33) + "xx")
	c.expect("552 5.3.4")
	c.cmd("NOOP", "250 ")
	c.cmd("RCPT TO:<b@y>", "503 ") // the transaction ended
	// Over the limit on the second chunk.
	c.envelope("a@x", "b@y")
	c.write("BDAT 60\r\n" + strings.Repeat("a", 60))
	c.expect("250 ")
	c.write("BDAT 60 LAST\r\n" + strings.Repeat("QUIT\r\n", 10))
	c.expect("552 5.3.4")
	c.cmd("NOOP", "250 ")
	// And a good one after all that.
	c.envelope("a@x", "b@y")
	c.write("BDAT 3 LAST\r\nfin")
	c.expect("250 2.0.0")
	// A malformed BDAT (the chunk size is unknown).
	c.envelope("a@x", "b@y")
	c.cmd("BDAT x LAST", "501 ")
	c.cmd("BDAT", "501 ")
	c.cmd("BDAT 5 FIRST", "501 ")

	ms := be.messages()
	if len(ms) != 3 {
		t.Fatalf("backend saw %d messages: %+v", len(ms), ms)
	}
	if string(ms[0].Body) != "hello!" || ms[0].Err != io.EOF {
		t.Errorf("message 0: %+v", ms[0])
	}
	if !errors.Is(ms[1].Err, smtpd.ErrTooBig) || len(ms[1].Body) > 100 {
		t.Errorf("message 1: %d bytes, %v; want ErrTooBig", len(ms[1].Body), ms[1].Err)
	}
	if string(ms[2].Body) != "fin" || ms[2].Err != io.EOF {
		t.Errorf("message 2: %+v", ms[2])
	}
}

// The declared sizes of the chunks must not add up past the limit by
// wrapping around: the Session must never get more than MaxMessageBytes.
func TestBDATChunkSizeOverflow(t *testing.T) {
	t.Parallel()
	be, c := ehloSession(t, func(s *smtpd.Server) { s.MaxMessageBytes = 1000 })
	c.envelope("a@x", "b@y")
	c.write("BDAT 1\r\nx")
	c.expect("250 ")
	c.write("BDAT 9223372036854775807\r\n" + strings.Repeat("y", 5000))
	_ = c.nc.(*net.TCPConn).CloseWrite()
	// The chunk is refused 552 (or the connection ends): either way the
	// Session must not have been handed more than 1000 bytes.
	_, _ = io.Copy(io.Discard, deadlineReader{c})
	be.waitLogout(t)
	ms := be.messages()
	if len(ms) != 1 {
		t.Fatalf("backend saw %d messages", len(ms))
	}
	if len(ms[0].Body) > 1000 || !errors.Is(ms[0].Err, smtpd.ErrTooBig) {
		t.Fatalf("BDAT 1 + BDAT 9223372036854775807: the Session read %d bytes (limit 1000) and ended with %v, want ErrTooBig",
			len(ms[0].Body), ms[0].Err)
	}
}

type deadlineReader struct{ c *client }

func (d deadlineReader) Read(p []byte) (int, error) {
	_ = d.c.nc.SetReadDeadline(time.Now().Add(readWait))
	return d.c.br.Read(p)
}

func TestBDATRsetBetweenChunks(t *testing.T) {
	t.Parallel()
	be, c := ehloSession(t, nil)
	c.envelope("a@x", "b@y")
	c.write("BDAT 5\r\nhello")
	c.expect("250 ")
	c.cmd("RSET", "250 ")
	c.cmd("RCPT TO:<b@y>", "503 ") // reset: no transaction
	c.envelope("c@x", "d@y")
	c.write("BDAT 9 LAST\r\nnew one\r\n")
	c.expect("250 2.0.0")
	ms := be.messages()
	if len(ms) != 2 {
		t.Fatalf("backend saw %d messages", len(ms))
	}
	if ms[0].Err == nil || ms[0].Err == io.EOF || !errors.Is(ms[0].Err, smtpd.ErrAborted) {
		t.Errorf("aborted transfer: reader ended with %v, want ErrAborted", ms[0].Err)
	}
	if string(ms[0].Body) != "hello" {
		t.Errorf("aborted transfer body %q", ms[0].Body)
	}
	if ms[1].From != "c@x" || string(ms[1].Body) != "new one\r\n" || ms[1].Err != io.EOF {
		t.Errorf("second message %+v", ms[1])
	}
}

func TestBDATCommandsBetweenChunks(t *testing.T) {
	t.Parallel()
	be, c := ehloSession(t, nil)
	c.envelope("a@x", "b@y")
	c.write("BDAT 3\r\nabc")
	c.expect("250 ")
	c.cmd("NOOP", "250 ")
	c.cmd("MAIL FROM:<z@x>", "503 ")
	c.cmd("RCPT TO:<z@y>", "503 ")
	c.cmd("DATA", "503 ")
	c.write("BDAT 3 LAST\r\ndef")
	c.expect("250 2.0.0")
	// EHLO between chunks ends the transfer and gets its own reply.
	c.envelope("a@x", "b@y")
	c.write("BDAT 2\r\ngh")
	c.expect("250 ")
	c.cmd("EHLO again", "250 ")
	c.cmd("RCPT TO:<z@y>", "503 ")
	// QUIT between chunks.
	c.envelope("a@x", "b@y")
	c.write("BDAT 2\r\nij")
	c.expect("250 ")
	c.cmd("QUIT", "221 ")
	c.expectClosed()
	be.waitLogout(t)
	ms := be.messages()
	if len(ms) != 3 {
		t.Fatalf("backend saw %d messages", len(ms))
	}
	if string(ms[0].Body) != "abcdef" || ms[0].Err != io.EOF || ms[0].From != "a@x" {
		t.Errorf("message 0 %+v", ms[0])
	}
	for _, m := range ms[1:] {
		if m.Err == nil || m.Err == io.EOF {
			t.Errorf("aborted transfer %q ended with %v", m.Body, m.Err)
		}
	}
	for _, f := range be.mailFroms() {
		if f == "z@x" {
			t.Errorf("MAIL between chunks reached the Session")
		}
	}
}

// The go-smtp race: RSET between chunks then a new transaction at once,
// 200 times on one connection, all pipelined.
func TestBDATRsetPipelinedRepeated(t *testing.T) {
	t.Parallel()
	const rounds = 200
	be, c := ehloSession(t, nil)

	var script strings.Builder
	for i := range rounds {
		chunk := fmt.Sprintf("aborted %d\r\n.\r\n", i)
		message := fmt.Sprintf("message %d\r\n.\r\nend", i)
		fmt.Fprintf(&script, "MAIL FROM:<s%d@x>\r\nRCPT TO:<r@y>\r\nBDAT %d\r\n%sRSET\r\n", i, len(chunk), chunk)
		fmt.Fprintf(&script, "MAIL FROM:<t%d@x>\r\nRCPT TO:<r@y>\r\nBDAT %d LAST\r\n%s", i, len(message), message)
	}
	script.WriteString("QUIT\r\n")
	all := script.String()

	// First half in one write, second half in random small pieces.
	werr := make(chan error, 1)
	go func() {
		rng := mrand.New(mrand.NewPCG(1, 2))
		half := len(all) / 2
		_, err := io.WriteString(c.nc, all[:half])
		for rest := all[half:]; err == nil && len(rest) > 0; {
			n := min(len(rest), 1+rng.IntN(40))
			_, err = io.WriteString(c.nc, rest[:n])
			rest = rest[n:]
		}
		werr <- err
	}()
	want := []string{"250 2.1.0", "250 2.1.5", "250 2.0.0", "250 2.0.0", "250 2.1.0", "250 2.1.5", "250 2.0.0 OK"}
	for i := range rounds {
		for j, w := range want {
			l := c.reply()
			if len(l) != 1 || !strings.HasPrefix(l[0], w) {
				t.Fatalf("round %d reply %d: got %q, want %q", i, j, l, w)
			}
		}
	}
	c.expect("221 ")
	c.expectClosed()
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	be.waitLogout(t)
	if be.overlap.Load() {
		t.Errorf("Session methods ran concurrently")
	}
	ms := be.messages()
	if len(ms) != 2*rounds {
		t.Fatalf("backend saw %d messages, want %d", len(ms), 2*rounds)
	}
	for i := range rounds {
		a, m := ms[2*i], ms[2*i+1]
		if a.From != fmt.Sprintf("s%d@x", i) || string(a.Body) != fmt.Sprintf("aborted %d\r\n.\r\n", i) ||
			!errors.Is(a.Err, smtpd.ErrAborted) {
			t.Fatalf("round %d aborted transfer: %+v", i, a)
		}
		if m.From != fmt.Sprintf("t%d@x", i) || string(m.Body) != fmt.Sprintf("message %d\r\n.\r\nend", i) || m.Err != io.EOF {
			t.Fatalf("round %d message: %+v", i, m)
		}
	}
}

func TestHangUpMidTransfer(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, after string
		replies     []string // read before hanging up
	}{
		{"BDAT header only", "BDAT 10\r\n", nil},
		{"BDAT LAST short", "BDAT 10 LAST\r\nhello", nil},
		{"between chunks", "BDAT 5\r\nhello", []string{"250 "}},
		{"DATA mid-body", "DATA\r\nhello\r\n", []string{"354 "}},
		{"DATA mid-line", "DATA\r\nhello\r\n.\r", []string{"354 "}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			be := newBackend()
			ts := startServer(t, be, nil)
			c := dialGreeted(t, ts.addr)
			c.ehlo()
			c.envelope("a@x", "b@y")
			c.write(tc.after)
			for _, r := range tc.replies {
				c.expect(r)
			}
			time.Sleep(20 * time.Millisecond)
			_ = c.nc.Close()
			be.waitLogout(t)
			ms := be.messages()
			if len(ms) != 1 {
				t.Fatalf("backend saw %d messages", len(ms))
			}
			if ms[0].Err == nil || ms[0].Err == io.EOF {
				t.Fatalf("a transfer cut short ended with %v (body %q)", ms[0].Err, ms[0].Body)
			}
		})
	}
}

// ---------------------------------------------------------------------
// 6. STARTTLS

func TestSTARTTLS(t *testing.T) {
	t.Parallel()
	cert, pool := testCert(t)
	be := newBackend()
	ts := startServer(t, be, func(s *smtpd.Server) {
		s.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	})
	c := dialGreeted(t, ts.addr)
	if !ehloKeywords(c.cmd("EHLO client.test", "250 "))["STARTTLS"] {
		t.Fatal("STARTTLS not offered")
	}
	c.cmd("STARTTLS now", "501 ")
	c.cmd("MAIL FROM:<a@x>", "250 ") // a transaction STARTTLS must reset
	// Commands pipelined behind STARTTLS, in the same write, are dropped.
	c.write("STARTTLS\r\nMAIL FROM:<injected@x>\r\nRCPT TO:<victim@y>\r\n")
	c.expect("220 ")
	if n := c.br.Buffered(); n != 0 {
		t.Fatalf("%d bytes after the 220", n)
	}
	tc := tls.Client(c.nc, &tls.Config{ServerName: "mx.test", RootCAs: pool})
	_ = tc.SetDeadline(time.Now().Add(readWait))
	if err := tc.Handshake(); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	c.nc, c.br = tc, bufio.NewReader(tc)
	// The client must EHLO again.
	c.cmd("MAIL FROM:<a@x>", "503 ")
	lines := c.cmd("EHLO client.test", "250 ")
	if ehloKeywords(lines)["STARTTLS"] {
		t.Errorf("STARTTLS offered inside TLS: %q", lines)
	}
	c.cmd("STARTTLS", "503 ")
	c.envelope("a@x", "b@y")
	mustLast(t, c.sendData("secret\r\n.\r\n"), "250 2.0.0")
	c.cmd("QUIT", "221 ")
	be.waitLogout(t)
	for _, f := range be.mailFroms() {
		if f == "injected@x" {
			t.Fatal("a command pipelined behind STARTTLS was run")
		}
	}
	ms := be.messages()
	if len(ms) != 1 || !ms[0].TLS || string(ms[0].Body) != "secret\r\n" {
		t.Fatalf("backend saw %+v", ms)
	}
}

func TestSTARTTLSHandshakeFailure(t *testing.T) {
	t.Parallel()
	cert, _ := testCert(t)
	be := newBackend()
	ts := startServer(t, be, func(s *smtpd.Server) {
		s.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	})
	c := dialGreeted(t, ts.addr)
	c.ehlo()
	c.cmd("STARTTLS", "220 ")
	c.write("MAIL FROM:<plain@x>\r\n") // not a TLS record
	// The server may send a TLS alert; then it must hang up.
	if _, err := io.Copy(io.Discard, deadlineReader{c}); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("the server did not hang up: %v", err)
		}
	}
	be.waitLogout(t)
	if f := be.mailFroms(); len(f) != 0 {
		t.Fatalf("backend saw MAIL %q", f)
	}
}

// ---------------------------------------------------------------------
// 7. Timeouts

func TestTimeoutSilentClient(t *testing.T) {
	t.Parallel()
	const timeout = 500 * time.Millisecond
	ts := startServer(t, newBackend(), func(s *smtpd.Server) { s.CommandTimeout = timeout })
	start := time.Now()
	c := dialGreeted(t, ts.addr)
	c.expect("421 4.4.2")
	if d := time.Since(start); d < timeout-50*time.Millisecond || d > timeout+2*time.Second {
		t.Errorf("421 after %v, want about %v", d, timeout)
	}
	c.expectClosed()
}

func TestTimeoutMidDATA(t *testing.T) {
	t.Parallel()
	be, c := ehloSession(t, func(s *smtpd.Server) { s.DataTimeout = 500 * time.Millisecond })
	c.envelope("a@x", "b@y")
	c.cmd("DATA", "354 ")
	c.write("partial\r\n")
	start := time.Now()
	c.expect("421 4.4.2")
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("421 after %v", d)
	}
	be.expectCutOff(t, c)
}

func TestTimeoutMidBDAT(t *testing.T) {
	t.Parallel()
	be, c := ehloSession(t, func(s *smtpd.Server) { s.DataTimeout = 500 * time.Millisecond })
	c.envelope("a@x", "b@y")
	c.write("BDAT 100 LAST\r\npartial")
	c.expect("421 4.4.2")
	be.expectCutOff(t, c)
}

// DataTimeout is renewed per DataBlock, not per byte: a trickle times out.
func TestTimeoutDATATrickle(t *testing.T) {
	t.Parallel()
	_, c := ehloSession(t, func(s *smtpd.Server) { s.DataTimeout = 400 * time.Millisecond })
	c.envelope("a@x", "b@y")
	c.cmd("DATA", "354 ")
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 40 {
			if _, err := c.nc.Write([]byte("x\r\n")); err != nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	start := time.Now()
	c.expect("421 4.4.2")
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Errorf("a trickling client kept DATA open for %v", d)
	}
	<-done
}

func TestTimeoutPartialCommandNotRun(t *testing.T) {
	t.Parallel()
	be := newBackend()
	ts := startServer(t, be, func(s *smtpd.Server) { s.CommandTimeout = 400 * time.Millisecond })
	c := dialGreeted(t, ts.addr)
	c.ehlo()
	c.write("MAIL FROM:<partial@x>")
	c.expect("421 4.4.2")
	c.expectClosed()
	be.waitLogout(t)
	// And a partial line ended by EOF.
	c2 := dialGreeted(t, ts.addr)
	c2.ehlo()
	c2.write("MAIL FROM:<partial2@x>")
	_ = c2.nc.(*net.TCPConn).CloseWrite()
	c2.expectClosed()
	be.waitLogout(t)
	if f := be.mailFroms(); len(f) != 0 {
		t.Fatalf("a partial command line ran: %q", f)
	}
}

// ---------------------------------------------------------------------
// 8. Shutdown

func shutdownAsync(s *smtpd.Server, ctx context.Context) chan error {
	ch := make(chan error, 1)
	go func() { ch <- s.Shutdown(ctx) }()
	return ch
}

func waitServed(t *testing.T, ts *testServer) {
	t.Helper()
	select {
	case err := <-ts.served:
		if !errors.Is(err, smtpd.ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
		ts.served <- err // for the cleanup
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return")
	}
}

func TestShutdownIdle(t *testing.T) {
	t.Parallel()
	be := newBackend()
	ts := startServer(t, be, nil)
	c1 := dialGreeted(t, ts.addr)
	c1.ehlo()
	c2 := dialGreeted(t, ts.addr)
	// After a finished transaction, the connection is idle again.
	c2.ehlo()
	c2.envelope("a@x", "b@y")
	mustLast(t, c2.sendData("x\r\n.\r\n"), "250 ")
	start := time.Now()
	done := shutdownAsync(ts.Server, context.Background())
	for _, c := range []*client{c1, c2} {
		// An idle client may or may not get a 421 first.
		if l, err := c.readLine(); err == nil && !strings.HasPrefix(l, "421") {
			t.Fatalf("idle client got %q", l)
		}
		c.expectClosed()
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Shutdown did not return")
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("closing idle connections took %v", d)
	}
	waitServed(t, ts)
	if _, err := net.DialTimeout("tcp", ts.addr, time.Second); err == nil {
		t.Errorf("the listener still accepts after Shutdown")
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	if err := ts.Serve(l); !errors.Is(err, smtpd.ErrServerClosed) {
		t.Errorf("Serve after Shutdown returned %v", err)
	}
	_ = l.Close()
}

func TestShutdownFinishesTransaction(t *testing.T) {
	t.Parallel()
	be := newBackend()
	ts := startServer(t, be, nil)
	c := dialGreeted(t, ts.addr)
	c.ehlo()
	c.cmd("MAIL FROM:<a@x>", "250 ")
	done := shutdownAsync(ts.Server, context.Background())
	time.Sleep(200 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned %v with a transaction in flight", err)
	default:
	}
	if nc, err := net.DialTimeout("tcp", ts.addr, time.Second); err == nil {
		// Accepted by the kernel backlog at most: never greeted.
		_ = nc.SetReadDeadline(time.Now().Add(time.Second))
		if b, _ := io.ReadAll(nc); bytes.HasPrefix(b, []byte("220")) {
			t.Errorf("a new connection was greeted during Shutdown: %q", b)
		}
		nc.Close()
	}
	c.cmd("RCPT TO:<b@y>", "250 ")
	c.cmd("DATA", "354 ")
	c.write("in flight\r\n.\r\n")
	c.expect("250 2.0.0")
	c.expect("421 4.3.2")
	c.expectClosed()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Shutdown did not return")
	}
	waitServed(t, ts)
	if ms := be.messages(); len(ms) != 1 || string(ms[0].Body) != "in flight\r\n" {
		t.Fatalf("backend saw %+v", ms)
	}
}

func TestShutdownDuringBDAT(t *testing.T) {
	t.Parallel()
	be := newBackend()
	ts := startServer(t, be, nil)
	c := dialGreeted(t, ts.addr)
	c.ehlo()
	c.envelope("a@x", "b@y")
	c.write("BDAT 3\r\nabc")
	c.expect("250 ")
	done := shutdownAsync(ts.Server, context.Background())
	time.Sleep(150 * time.Millisecond) // several closeIdle rounds
	c.write("BDAT 3 LAST\r\ndef")
	c.expect("250 2.0.0")
	c.expect("421 ")
	c.expectClosed()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if ms := be.messages(); len(ms) != 1 || string(ms[0].Body) != "abcdef" || ms[0].Err != io.EOF {
		t.Fatalf("backend saw %+v", ms)
	}
}

func TestShutdownContextExpires(t *testing.T) {
	t.Parallel()
	be := newBackend()
	ts := startServer(t, be, nil)
	c := dialGreeted(t, ts.addr)
	c.ehlo()
	c.envelope("a@x", "b@y")
	c.cmd("DATA", "354 ")
	c.write("never finished\r\n")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := ts.Shutdown(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown returned %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Shutdown took %v", d)
	}
	be.expectCutOff(t, c)
	waitServed(t, ts)
}

func TestServeRefusesBadConfig(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for name, mod := range map[string]func(*smtpd.Server){
		"no hostname":      func(s *smtpd.Server) { s.Hostname = "" },
		"no backend":       func(s *smtpd.Server) { s.Backend = nil },
		"no logger":        func(s *smtpd.Server) { s.Logger = nil },
		"zero size":        func(s *smtpd.Server) { s.MaxMessageBytes = 0 },
		"zero rcpts":       func(s *smtpd.Server) { s.MaxRecipients = 0 },
		"zero line":        func(s *smtpd.Server) { s.MaxLineLength = 0 },
		"zero cmd timeout": func(s *smtpd.Server) { s.CommandTimeout = 0 },
		"zero data timeout": func(s *smtpd.Server) {
			s.DataTimeout = 0
		},
		"zero write timeout": func(s *smtpd.Server) { s.WriteTimeout = 0 },
	} {
		s := baseServer(newBackend(), &logBuf{})
		mod(s)
		ch := make(chan error, 1)
		go func() { ch <- s.Serve(l) }()
		select {
		case err := <-ch:
			if err == nil || errors.Is(err, smtpd.ErrServerClosed) {
				t.Errorf("%s: Serve returned %v", name, err)
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("%s: Serve accepted the configuration", name)
		}
	}
}

func TestErrorType(t *testing.T) {
	t.Parallel()
	e := &smtpd.Error{Code: 451, Enhanced: smtpd.EnhancedCode{4, 7, 1}, Message: "try later"}
	if e.Error() != "451 4.7.1 try later" || !e.Temporary() {
		t.Errorf("%q temporary=%v", e.Error(), e.Temporary())
	}
	if smtpd.ErrTooBig.Temporary() || smtpd.ErrTooBig.Code != 552 || smtpd.ErrLineTooLong.Code != 554 {
		t.Errorf("ErrTooBig %v, ErrLineTooLong %v", smtpd.ErrTooBig, smtpd.ErrLineTooLong)
	}
}

// Errors between BDAT chunks count toward MaxErrors; at the limit the
// transfer is aborted and the client told 421.
func TestBDATTooManyErrorsBetweenChunks(t *testing.T) {
	t.Parallel()
	be := newBackend()
	ts := startServer(t, be, func(s *smtpd.Server) {
		s.MaxErrors = 3
		s.MaxLineLength = 50
	})
	c := dialGreeted(t, ts.addr)
	c.ehlo()
	c.envelope("a@x", "b@y")
	c.write("BDAT 3\r\nabc")
	c.expect("250 ")
	c.cmd("MAIL FROM:<z@x>", "503 ")
	c.cmd("NOOP "+strings.Repeat("x", 60), "500 ")
	c.write("VRFY x\r\n")
	c.expect("503 ")
	c.expect("421 4.7.0")
	be.expectCutOff(t, c)
}

// MaxLineLength counts a DATA line without its line ending, like a
// command line: a line ended by a bare LF may not be one byte longer.
func TestDATALineTooLongBareLF(t *testing.T) {
	t.Parallel()
	_, c := ehloSession(t, func(s *smtpd.Server) { s.MaxLineLength = 100 })
	c.cmd("NOOP "+strings.Repeat("x", 96), "500 ") // a 101-byte command line, bare LF or not
	c.write("NOOP " + strings.Repeat("x", 96) + "\n")
	c.expect("500 ")
	c.envelope("a@x", "b@y")
	mustLast(t, c.sendData(strings.Repeat("b", 100)+"\nend\r\n.\r\n"), "250 ")
	c.envelope("a@x", "b@y")
	got := c.sendData(strings.Repeat("b", 101) + "\nend\r\n.\r\n")
	if !strings.HasPrefix(got[0], "554 5.6.0") {
		t.Fatalf("a 101-byte DATA line ended by a bare LF, MaxLineLength 100: got %q, want 554 5.6.0", got)
	}
}
