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
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sealgate/sealgate/gateway/policy"
	"github.com/sealgate/sealgate/gateway/relay"
	"github.com/sealgate/sealgate/gateway/smtpd"
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
	smtp    *smtpd.Server
	certs   *certCache
	x509s   *x509Cache
	log     *slog.Logger
	metrics *Metrics
	live    atomic.Pointer[Settings]
	audits  *auditWriter // nil without Options.Audit
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
	s.smtp = &smtpd.Server{
		Hostname:        opts.Hostname,
		TLSConfig:       opts.TLSConfig,
		MaxMessageBytes: opts.MaxMessageBytes,
		MaxRecipients:   opts.MaxRecipients,
		MaxLineLength:   opts.MaxLineLength,
		CommandTimeout:  opts.CommandTimeout,
		DataTimeout:     opts.DataTimeout,
		WriteTimeout:    opts.WriteTimeout,
		Backend:         s,
		Logger:          opts.Logger,
	}
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
	return s.smtp.Serve(newGuardListener(l, s.opts.AllowedNetworks, s.opts.MaxConnections, s.opts.Hostname, s.log))
}

// Shutdown stops accepting connections, closes idle ones, lets every
// transaction in flight finish, and returns once all connections are gone.
// When ctx expires first, the remaining connections are closed (their
// clients retry: nothing was acknowledged) and ctx's error is returned.
func (s *Server) Shutdown(ctx context.Context) error { return s.smtp.Shutdown(ctx) }

// Close stops the server at once.
func (s *Server) Close() error { return s.smtp.Close() }

// NewSession implements smtpd.Backend.
func (s *Server) NewSession(c *smtpd.Conn) (smtpd.Session, error) {
	return &session{srv: s, log: s.log.With("conn", newID(), "remote", c.RemoteAddr().String())}, nil
}
