// Package gateway is sealgate's SMTP proxy: it accepts mail from the
// organisation's mail host, decides per recipient (policy + key directory)
// whether to encrypt, encrypts, and relays to the upstream mail host. It
// keeps no queue: a message is answered 250 only once upstream accepted
// every copy, and any transient fault is a 4xx so the sender retries.
package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sealgate/sealgate/gateway/policy"
	"github.com/sealgate/sealgate/gateway/relay"
	"github.com/sealgate/sealgate/keydir"
	"github.com/sealgate/sealgate/smime"
)

// Directory answers key lookups; keydir.Store implements it.
type Directory interface {
	Lookup(ctx context.Context, address string) ([]keydir.Key, error)
}

// Options configure a Server. Every limit must be positive: zero never
// means unlimited (New refuses it).
type Options struct {
	Hostname        string
	AllowedNetworks []netip.Prefix
	TLSConfig       *tls.Config // nil: no STARTTLS offered

	MaxMessageBytes  int64
	MaxRecipients    int
	MaxLineLength    int
	MaxHeaderBytes   int64
	MaxConnections   int
	CommandTimeout   time.Duration // per command line
	DataTimeout      time.Duration // per read while DATA arrives
	WriteTimeout     time.Duration
	LookupTimeout    time.Duration // per recipient key lookup
	SpoolDir         string
	SpoolMemoryBytes int64

	ProtectHeaders bool
	Policy         *policy.Policy
	Directory      Directory
	Relay          *relay.Relay
	Logger         *slog.Logger
	Metrics        *Metrics // nil: metrics are kept but not exported
	Audit          Auditor  // nil: no audit trail
	// SMIME validates recipient certificates; nil disables S/MIME (stored
	// certificates are then never used). smime.Setup must have run.
	SMIME *smime.Validator
	// SMIMEMaxBytes caps messages encrypted with S/MIME: the CMS library
	// works on whole messages in memory. Required when SMIME is set.
	SMIMEMaxBytes int64
	Now           func() time.Time // nil: time.Now
}

// Server is the SMTP proxy.
type Server struct {
	opts    Options
	smtp    *smtp.Server
	certs   *certCache
	x509s   *x509Cache
	log     *slog.Logger
	metrics *Metrics
	live    atomic.Pointer[Settings]
	audits  *auditWriter // nil without Options.Audit

	mu     sync.Mutex
	guards []*guardListener
}

// Settings are what Reload may change while connections stay open. A
// transaction keeps the settings it started with (at MAIL).
type Settings struct {
	Policy         *policy.Policy
	Relay          *relay.Relay
	ProtectHeaders bool
}

// Reload replaces the settings for transactions that start from now on.
func (s *Server) Reload(st Settings) error {
	if st.Policy == nil || st.Relay == nil {
		return errors.New("gateway: reload needs a policy and a relay")
	}
	old := s.live.Swap(&st)
	if old != nil && old.Relay != st.Relay {
		old.Relay.Close() // its idle pooled connections; open ones finish
	}
	return nil
}

// New validates opts and builds a Server.
func New(opts Options) (*Server, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Server{opts: opts, certs: newCertCache(4096), x509s: newX509Cache(4096), log: opts.Logger, metrics: opts.Metrics}
	s.live.Store(&Settings{Policy: opts.Policy, Relay: opts.Relay, ProtectHeaders: opts.ProtectHeaders})
	if opts.Audit != nil {
		s.audits = newAuditWriter(opts.Audit)
	}
	if s.metrics == nil {
		m, err := NewMetrics(prometheus.NewRegistry())
		if err != nil {
			return nil, err
		}
		s.metrics = m
	}
	srv := smtp.NewServer(s)
	srv.Domain = opts.Hostname
	srv.MaxMessageBytes = opts.MaxMessageBytes
	srv.MaxRecipients = opts.MaxRecipients
	srv.MaxLineLength = opts.MaxLineLength
	srv.ReadTimeout = opts.CommandTimeout
	srv.WriteTimeout = opts.WriteTimeout
	srv.TLSConfig = opts.TLSConfig
	srv.EnableSMTPUTF8 = true
	srv.ErrorLog = slogPrinter{opts.Logger}
	s.smtp = srv
	return s, nil
}

func (o *Options) validate() error {
	var errs []error
	need := func(ok bool, what string) {
		if !ok {
			errs = append(errs, fmt.Errorf("gateway: %s", what))
		}
	}
	need(o.Hostname != "", "hostname is required")
	need(len(o.AllowedNetworks) > 0, "at least one allowed network is required")
	need(o.MaxMessageBytes > 0 && o.MaxRecipients > 0 && o.MaxLineLength > 0 &&
		o.MaxHeaderBytes > 0 && o.MaxConnections > 0 && o.SpoolMemoryBytes > 0, "size and count limits must be positive")
	need(o.CommandTimeout > 0 && o.DataTimeout > 0 && o.WriteTimeout > 0 && o.LookupTimeout > 0, "timeouts must be positive")
	need(o.Policy != nil && o.Directory != nil && o.Relay != nil && o.Logger != nil, "policy, directory, relay and logger are required")
	need(o.SMIME == nil || o.SMIMEMaxBytes > 0, "an S/MIME size limit is required with S/MIME")
	return errors.Join(errs...)
}

// Serve accepts SMTP connections on l until Close or Shutdown.
func (s *Server) Serve(l net.Listener) error {
	g := newGuardListener(l, s.opts.AllowedNetworks, s.opts.MaxConnections, s.opts.Hostname, s.log)
	s.mu.Lock()
	s.guards = append(s.guards, g)
	s.mu.Unlock()
	return s.smtp.Serve(g)
}

// Shutdown stops accepting connections, closes idle ones, lets every
// transaction in flight finish, and returns once all connections are gone.
// When ctx expires first, the remaining connections are closed (their
// clients retry: nothing was acknowledged) and ctx's error is returned.
func (s *Server) Shutdown(ctx context.Context) error {
	done := make(chan error, 1)
	go func() { done <- s.smtp.Shutdown(context.Background()) }()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		s.closeIdle()
		select {
		case err := <-done:
			return err
		case <-ctx.Done():
			_ = s.smtp.Close()
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// closeIdle closes the connections that are outside a transaction.
func (s *Server) closeIdle() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, g := range s.guards {
		g.closeIdle()
	}
}

// Close stops the server at once.
func (s *Server) Close() error { return s.smtp.Close() }

// NewSession implements smtp.Backend.
func (s *Server) NewSession(c *smtp.Conn) (smtp.Session, error) {
	id := newID()
	sess := &session{
		srv:  s,
		conn: c,
		log:  s.log.With("conn", id, "remote", c.Conn().RemoteAddr().String()),
		busy: &atomic.Bool{},
	}
	if sc := slotOf(c.Conn()); sc != nil {
		sess.busy = &sc.busy
	}
	return sess, nil
}

// slogPrinter adapts go-smtp's logger to slog. go-smtp recovers panics in
// its own BDAT goroutine (a client that hangs up right after BDAT makes it
// dereference a session it already cleared; SECURITY.md): each is one
// error line here, its stack at debug level, so such clients cannot flood
// the log.
type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Printf(format string, v ...any) { p.print(fmt.Sprintf(format, v...)) }
func (p slogPrinter) Println(v ...any)               { p.print(fmt.Sprint(v...)) }

func (p slogPrinter) print(msg string) {
	first, stack, found := strings.Cut(msg, "\n")
	if !found || !strings.HasPrefix(first, "panic serving") {
		p.log.Error(msg)
		return
	}
	p.log.Error("smtp library recovered a panic; connection closed", "detail", first)
	p.log.Debug("smtp library panic stack", "stack", stack)
}
