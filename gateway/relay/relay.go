// Package relay hands messages to the upstream mail host. A transaction is
// opened (connect, EHLO, STARTTLS, MAIL, RCPT, DATA), its body streamed, and
// only then committed with the final dot, so a caller can stream several
// transactions before committing any (DESIGN.md, delivery semantics). The
// SMTP client is client.go.
package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"sync/atomic"
	"time"
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
	c    *client
	r    *Relay
	uses int
}

// Begin connects (or takes a pooled connection) and opens a transaction
// for rcpts, ready for the body. utf8 asks for SMTPUTF8 (RFC 6531). Any
// error leaves nothing open upstream.
func (r *Relay) Begin(ctx context.Context, from string, utf8 bool, rcpts []string) (*Txn, error) {
	// A pooled connection may have been closed by upstream while idle; its
	// first command then fails, and a fresh connection gets the message.
	if pc := r.pool.get(time.Now()); pc != nil {
		t := &Txn{c: pc.c, r: r, uses: pc.uses}
		if err := r.open(t, from, utf8, rcpts); err == nil {
			return t, nil
		} else if !staleConn(err) {
			t.Abort()
			return nil, err
		}
		t.Abort()
	}
	c, err := r.connect(ctx)
	if err != nil {
		return nil, err
	}
	t := &Txn{c: c, r: r}
	if err := r.open(t, from, utf8, rcpts); err != nil {
		t.Abort()
		return nil, err
	}
	return t, nil
}

// staleConn tells a pooled connection that upstream dropped (EOF, reset,
// 421 at MAIL) from a refusal that a fresh connection would meet too.
func staleConn(err error) bool {
	if errors.Is(err, ErrNoSMTPUTF8) {
		return false
	}
	var te *textproto.Error
	if errors.As(err, &te) {
		return te.Code == 421
	}
	return true // a transport error
}

// Close drops the idle pooled connections. Transactions still open finish
// and close theirs.
func (r *Relay) Close() { r.pool.close() }

// connect returns a client that has greeted upstream and, as the TLS mode
// asks, switched to TLS. An opportunistic relay to a host that does not
// offer STARTTLS notes that (for noTLSRecheck) and goes on in plaintext.
func (r *Relay) connect(ctx context.Context) (*client, error) {
	d := net.Dialer{Timeout: r.opts.Timeout}
	conn, err := d.DialContext(ctx, "tcp", r.opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("relay: connect %s: %w", r.opts.Addr, err)
	}
	c := newClient(conn)
	c.deadline(r.opts.Timeout)
	if err := c.greet(r.opts.Hostname); err != nil {
		c.close()
		return nil, fmt.Errorf("relay: %w", err)
	}
	wantTLS := r.opts.TLS == TLSRequired ||
		(r.opts.TLS == TLSOpportunistic && time.Now().UnixNano() >= r.noTLSUntil.Load())
	switch {
	case wantTLS && c.has("STARTTLS"):
		c.deadline(r.opts.Timeout)
		if err := c.startTLS(r.tls, r.opts.Hostname); err != nil {
			c.close()
			return nil, fmt.Errorf("relay: STARTTLS: %w", err)
		}
	case r.opts.TLS == TLSRequired:
		c.close()
		return nil, errors.New("relay: STARTTLS: upstream does not offer STARTTLS and upstream_tls is required")
	case wantTLS:
		r.noTLSUntil.Store(time.Now().Add(noTLSRecheck).UnixNano())
	}
	return c, nil
}

// ErrNoSMTPUTF8 means the message needs SMTPUTF8 (RFC 6531) and upstream
// does not offer it: a permanent condition for this message.
var ErrNoSMTPUTF8 = errors.New("relay: upstream does not support SMTPUTF8")

func (r *Relay) open(t *Txn, from string, utf8 bool, rcpts []string) error {
	if utf8 && !t.c.has("SMTPUTF8") {
		return ErrNoSMTPUTF8
	}
	t.c.deadline(r.opts.Timeout)
	if err := t.c.open(from, utf8, rcpts); err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	return nil
}

// Write streams body bytes, dot-stuffed, with every bare CR or LF made
// CRLF. Every write gets the relay timeout, so an upstream that stops
// reading cannot block the session for ever.
func (t *Txn) Write(p []byte) (int, error) {
	t.c.writeDeadline(t.r.opts.Timeout)
	n, err := t.c.dot.Write(p)
	if err != nil {
		return n, fmt.Errorf("%w: %w", ErrBodyWrite, err)
	}
	return n, nil
}

// ErrBodyWrite marks a failure to send body bytes upstream, whichever
// layer (an encrypter, a buffer) passes it on.
var ErrBodyWrite = errors.New("relay: write body")

// Commit sends the final dot and returns upstream's reply text once it
// accepted the message. A connection that failed is closed; one that
// succeeded may carry the next message.
func (t *Txn) Commit() (string, error) {
	t.c.deadline(t.r.opts.DataTimeout)
	msg, err := t.c.finish()
	if err != nil {
		t.Abort()
		return "", fmt.Errorf("relay: end of data: %w", err)
	}
	// The message is accepted. The connection may carry the next one if
	// upstream sent nothing more (a failing QUIT, when it is not kept,
	// changes nothing).
	if !t.c.clean() {
		t.Abort()
		return msg, nil
	}
	t.r.pool.put(&pooled{c: t.c, uses: t.uses + 1}, time.Now(), t.r.opts.Timeout)
	return msg, nil
}

// Abort drops the transaction by closing the connection without the final
// dot, so upstream never sees a partial message as complete.
func (t *Txn) Abort() { _ = t.c.close() }
