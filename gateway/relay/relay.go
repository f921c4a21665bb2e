// Package relay hands messages to the upstream mail host. A transaction is
// opened (connect, EHLO, STARTTLS, MAIL, RCPT, DATA), its body streamed, and
// only then committed with the final dot, so a caller can stream several
// transactions before committing any (DESIGN.md, delivery semantics).
package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
)

// TLS modes for the upstream connection.
const (
	TLSNone          = "none"          // never STARTTLS
	TLSOpportunistic = "opportunistic" // STARTTLS when offered, certificate not verified
	TLSRequired      = "required"      // STARTTLS with a verified certificate, or no delivery
)

// Options configure a Relay.
type Options struct {
	Addr      string        // upstream host:port
	Hostname  string        // our name in EHLO
	TLS       string        // TLSNone, TLSOpportunistic or TLSRequired
	TLSConfig *tls.Config   // roots and server name for TLSRequired; nil = system roots, host of Addr
	Timeout   time.Duration // connect and per-command timeout (> 0)
	// DataTimeout bounds the wait for the reply to the final dot (> 0).
	DataTimeout time.Duration
}

// Relay opens upstream transactions. It is safe for concurrent use.
type Relay struct {
	opts Options
	tls  *tls.Config
	// noTLSUntil (unix nanoseconds) skips the STARTTLS attempt against an
	// upstream that did not offer it, until the time given.
	noTLSUntil atomic.Int64
	pool       pool
}

const noTLSRecheck = 5 * time.Minute

// New validates opts and returns a Relay.
func New(opts Options) (*Relay, error) {
	if opts.Addr == "" || opts.Hostname == "" {
		return nil, errors.New("relay: upstream address and hostname are required")
	}
	if opts.Timeout <= 0 || opts.DataTimeout <= 0 {
		return nil, errors.New("relay: timeouts must be positive")
	}
	host, _, err := net.SplitHostPort(opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("relay: upstream address: %w", err)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if opts.TLSConfig != nil {
		cfg = opts.TLSConfig.Clone()
	}
	if cfg.ServerName == "" {
		cfg.ServerName = host
	}
	switch opts.TLS {
	case TLSNone, TLSRequired:
	case TLSOpportunistic:
		// RFC 7435: opportunistic security encrypts without authenticating
		// rather than falling back to cleartext. The message bodies that
		// need confidentiality are already end-to-end encrypted.
		cfg.InsecureSkipVerify = opts.TLS == TLSOpportunistic
	default:
		return nil, fmt.Errorf("relay: unknown TLS mode %q", opts.TLS)
	}
	return &Relay{opts: opts, tls: cfg}, nil
}

// Txn is one open upstream transaction in the DATA phase.
type Txn struct {
	c       *smtp.Client
	data    *smtp.DataCommand
	conn    net.Conn      // the TCP connection under c, for write deadlines
	timeout time.Duration // per body write
	r       *Relay
	uses    int
}

// Begin connects and opens a transaction for rcpts, ready for the body.
// Any error leaves nothing open upstream.
func (r *Relay) Begin(ctx context.Context, from string, mail *smtp.MailOptions, rcpts []string) (*Txn, error) {
	// A pooled connection may have been closed by upstream while idle; its
	// first command then fails, and a fresh connection gets the message.
	if pc := r.pool.get(time.Now()); pc != nil {
		t := &Txn{c: pc.c, conn: pc.conn, timeout: r.opts.Timeout, r: r, uses: pc.uses}
		if err := r.open(t, from, mail, rcpts); err == nil {
			return t, nil
		} else if !staleConn(err) {
			t.Abort()
			return nil, err
		}
		t.Abort()
	}
	c, conn, err := r.connect(ctx)
	if err != nil {
		return nil, err
	}
	t := &Txn{c: c, conn: conn, timeout: r.opts.Timeout, r: r}
	if err := r.open(t, from, mail, rcpts); err != nil {
		t.Abort()
		return nil, err
	}
	return t, nil
}

// staleConn tells a pooled connection that upstream dropped (EOF, reset,
// 421 at MAIL) from a refusal that a fresh connection would meet too.
func staleConn(err error) bool {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code == 421
	}
	return true // a transport error
}

// Close drops the idle pooled connections. Transactions still open finish
// and close theirs.
func (r *Relay) Close() { r.pool.close() }

func (r *Relay) dial(ctx context.Context) (net.Conn, error) {
	d := net.Dialer{Timeout: r.opts.Timeout}
	conn, err := d.DialContext(ctx, "tcp", r.opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("relay: connect %s: %w", r.opts.Addr, err)
	}
	return conn, nil
}

// connect returns a client that has greeted upstream and, as the TLS mode
// asks, switched to TLS. go-smtp can only STARTTLS on a fresh client, so an
// opportunistic relay to a host without STARTTLS notes that (for
// noTLSRecheck) and connects again in plaintext.
func (r *Relay) connect(ctx context.Context) (*smtp.Client, net.Conn, error) {
	wantTLS := r.opts.TLS == TLSRequired ||
		(r.opts.TLS == TLSOpportunistic && time.Now().UnixNano() >= r.noTLSUntil.Load())
	if wantTLS {
		conn, err := r.dial(ctx)
		if err != nil {
			return nil, nil, err
		}
		cc := r.withTimeouts(conn)
		c, err := smtp.NewClientStartTLS(cc, r.tls)
		if err == nil {
			r.setTimeouts(c)
			cc.off.Store(true)
			return c, conn, nil
		}
		if r.opts.TLS == TLSRequired || !strings.Contains(err.Error(), "doesn't support STARTTLS") {
			return nil, nil, fmt.Errorf("relay: STARTTLS: %w", err)
		}
		r.noTLSUntil.Store(time.Now().Add(noTLSRecheck).UnixNano())
	}
	conn, err := r.dial(ctx)
	if err != nil {
		return nil, nil, err
	}
	c := smtp.NewClient(conn)
	r.setTimeouts(c)
	if err := c.Hello(r.opts.Hostname); err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("relay: EHLO: %w", err)
	}
	return c, conn, nil
}

// ErrNoSMTPUTF8 means the message needs SMTPUTF8 (RFC 6531) and upstream
// does not offer it: a permanent condition for this message.
var ErrNoSMTPUTF8 = errors.New("relay: upstream does not support SMTPUTF8")

func (r *Relay) open(t *Txn, from string, mail *smtp.MailOptions, rcpts []string) error {
	if mail != nil && mail.UTF8 {
		if ok, _ := t.c.Extension("SMTPUTF8"); !ok {
			return ErrNoSMTPUTF8
		}
	}
	if err := t.c.Mail(from, mail); err != nil {
		return fmt.Errorf("relay: MAIL FROM: %w", err)
	}
	for _, rcpt := range rcpts {
		if err := t.c.Rcpt(rcpt, nil); err != nil {
			return fmt.Errorf("relay: RCPT TO %s: %w", rcpt, err)
		}
	}
	w, err := t.c.Data()
	if err != nil {
		return fmt.Errorf("relay: DATA: %w", err)
	}
	t.data = w
	return nil
}

// Write streams body bytes; go-smtp dot-stuffs them and turns bare LF into CRLF.
// Every write gets the relay timeout: go-smtp clears the connection's
// deadline once DATA is accepted, and an upstream that stops reading would
// otherwise block the session for ever.
func (t *Txn) Write(p []byte) (int, error) {
	_ = t.conn.SetWriteDeadline(time.Now().Add(t.timeout))
	n, err := t.data.Write(p)
	if err != nil {
		return n, fmt.Errorf("relay: write body: %w", err)
	}
	return n, nil
}

// Commit sends the final dot and returns upstream's reply text once it
// accepted the message. The connection is closed either way.
func (t *Txn) Commit() (string, error) {
	resp, err := t.data.CloseWithResponse()
	if err != nil {
		t.Abort()
		return "", fmt.Errorf("relay: end of data: %w", err)
	}
	// The message is accepted; the connection is clean and may carry the
	// next one (a failing QUIT, when it is not kept, changes nothing).
	_ = t.conn.SetWriteDeadline(time.Time{})
	t.r.pool.put(&pooled{c: t.c, conn: t.conn, uses: t.uses + 1}, time.Now())
	return resp.StatusText, nil
}

// Abort drops the transaction by closing the connection without the final
// dot, so upstream never sees a partial message as complete.
func (t *Txn) Abort() {
	_ = t.c.Close()
}

func (r *Relay) setTimeouts(c *smtp.Client) {
	c.CommandTimeout = r.opts.Timeout
	c.SubmissionTimeout = r.opts.DataTimeout
}

// clampConn caps the deadlines go-smtp sets while greeting and switching to
// TLS: those happen inside NewClientStartTLS, before the client's own
// timeouts can be set, and would otherwise use go-smtp's 5-minute default.
type clampConn struct {
	net.Conn
	limit time.Duration
	off   atomic.Bool // set once the client's own timeouts apply
}

func (c *clampConn) SetDeadline(t time.Time) error {
	if max := time.Now().Add(c.limit); !c.off.Load() && !t.IsZero() && t.After(max) {
		t = max
	}
	return c.Conn.SetDeadline(t)
}

func (r *Relay) withTimeouts(conn net.Conn) *clampConn {
	return &clampConn{Conn: conn, limit: r.opts.Timeout}
}
