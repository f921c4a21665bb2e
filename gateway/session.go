package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sealgate/sealgate/gateway/policy"
	"github.com/sealgate/sealgate/keydir"
	"github.com/sealgate/sealgate/pgp"
)

// recipient is one RCPT TO and what was decided for it.
type recipient struct {
	addr     string // as the client wrote it; used upstream
	norm     string // normalised, for matching and lookups
	rule     int    // 1-based policy rule number, 0 = default
	ruleText string // the rule, for the audit trail
	decision policy.Decision
	cert     *pgp.Cert // set when decision is Encrypt/PGP
}

// session is one SMTP connection's state (go-smtp calls it from a single
// goroutine).
type session struct {
	srv      *Server
	conn     *smtp.Conn
	log      *slog.Logger
	txID     string       // this transaction's ID, in logs and the audit trail
	live     *Settings    // the settings this transaction started with
	busy     *atomic.Bool // inside a transaction: Shutdown waits for it
	from     string
	mailOpts *smtp.MailOptions
	rcpts    []*recipient
	refused  []*recipient
}

func newID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (s *session) Reset() {
	s.txID, s.from, s.mailOpts, s.rcpts, s.refused, s.live = "", "", nil, nil, nil, nil
	s.busy.Store(false)
}

func (s *session) Logout() error { return nil }

func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	s.Reset()
	s.busy.Store(true)
	s.live = s.srv.live.Load()
	s.txID = newID()
	s.from = from
	s.mailOpts = opts
	return nil
}

// Rcpt decides for one recipient now, so that a recipient who cannot be
// served gets its own reply while the others go on (DESIGN.md).
func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	norm, err := keydir.NormalizeAddress(to)
	if err != nil {
		return &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 1, 3}, Message: "Bad recipient address syntax"}
	}
	for _, r := range s.rcpts {
		if r.norm == norm {
			return nil // a repeated RCPT adds nothing
		}
	}
	rc := &recipient{addr: to, norm: norm}
	idx, rule := s.live.Policy.Match(norm)
	rc.rule, rc.ruleText = idx, describeRule(idx, rule)
	var lookup policy.Lookup
	var ans keyAnswer
	if policy.NeedsLookup(rule) {
		ans, lookup.Err = s.srv.lookupKeys(context.Background(), norm)
		lookup.PGP = ans.pgp != nil
	}
	if lookup.Err != nil {
		s.srv.metrics.lookupErrors.Inc()
	}
	rc.decision = policy.Decide(rule, lookup)
	s.srv.metrics.recipients.WithLabelValues(decisionLabel(rc.decision)).Inc()
	switch rc.decision.Action {
	case policy.Reject:
		s.refused = append(s.refused, rc)
		s.log.Info("recipient refused", "tx", s.txID, "rcpt", norm, "rule", idx, "reason", rc.decision.Reason, "unusable", ans.unusable)
		reply := toSMTP(errNoKey(nil))
		s.audit("", []*recipient{rc}, nil, reply)
		return reply
	case policy.Defer:
		s.refused = append(s.refused, rc)
		s.log.Warn("recipient deferred", "tx", s.txID, "rcpt", norm, "rule", idx, "reason", rc.decision.Reason, "err", lookup.Err)
		reply := toSMTP(errLookup(lookup.Err))
		s.audit("", []*recipient{rc}, nil, reply)
		return reply
	case policy.Encrypt:
		if rc.decision.Format != policy.PGP {
			// S/MIME arrives with its own issue; until then no usable
			// key exists in that format and policy.Decide never picks it.
			return toSMTP(errLocal(fmt.Errorf("format %s not available", rc.decision.Format)))
		}
		rc.cert = ans.pgp
	}
	s.rcpts = append(s.rcpts, rc)
	return nil
}

// Data receives, transforms and relays the message. Every error leaves as
// an *smtp.SMTPError of the right class (see toSMTP).
func (s *session) Data(r io.Reader) (err error) {
	log := s.log.With("tx", s.txID)
	start := time.Now()
	defer func() {
		if p := recover(); p != nil {
			log.Error("panic while handling message", "panic", p, "stack", string(debug.Stack()))
			err = errLocal(fmt.Errorf("panic: %v", p))
		}
		if err != nil {
			err = toSMTP(err)
		}
	}()
	d := &delivery{srv: s.srv, live: s.live, from: s.from, mailOpts: s.mailOpts, rcpts: s.rcpts, log: log}
	size, groups, derr := d.run(s.deadlineReader(r))
	took := time.Since(start)
	s.srv.observe(groups, derr, took)
	s.audit(d.messageID, s.rcpts, groups, toSMTP(derr))
	replies := make([]string, 0, len(groups))
	for _, g := range groups {
		if g.reply != "" {
			replies = append(replies, g.reply)
		}
	}
	s.logMessage(log, size, replies, derr, took)
	return derr
}

func (s *session) logMessage(log *slog.Logger, size int64, replies []string, err error, took time.Duration) {
	attrs := []any{"from", s.from, "size", size, "took_ms", took.Milliseconds()}
	for _, r := range s.rcpts {
		attrs = append(attrs, slog.Group("rcpt", "addr", r.norm, "decision", describe(r), "rule", r.rule))
	}
	for _, r := range s.refused {
		attrs = append(attrs, slog.Group("rcpt", "addr", r.norm, "decision", "refused: "+r.decision.Reason, "rule", r.rule))
	}
	attrs = append(attrs, "upstream", replies)
	if err != nil {
		attrs = append(attrs, "result", toSMTP(err).Code, "err", err)
		log.Warn("message not delivered", attrs...)
		return
	}
	log.Info("message delivered", attrs...)
}

func describe(r *recipient) string {
	if r.decision.Action == policy.Encrypt && r.cert != nil {
		return "pgp " + r.cert.Fingerprint()
	}
	return "plain: " + r.decision.Reason
}

// deadlineReader renews the read deadline before every read of DATA, so a
// large message on a slow link is bounded per read (RFC 5321 §4.5.3.2: 3
// minutes per data block) instead of go-smtp's single command deadline.
func (s *session) deadlineReader(r io.Reader) io.Reader {
	return &deadlineReader{r: r, conn: s.conn.Conn(), d: s.srv.opts.DataTimeout}
}

type deadlineReader struct {
	r    io.Reader
	conn net.Conn
	d    time.Duration
}

func (d *deadlineReader) Read(p []byte) (int, error) {
	_ = d.conn.SetReadDeadline(time.Now().Add(d.d))
	return d.r.Read(p)
}

var errClientData = errors.New("gateway: reading message from client")

func decisionLabel(d policy.Decision) string {
	switch d.Action {
	case policy.Encrypt:
		return string(d.Format)
	case policy.Reject:
		return "refused"
	case policy.Defer:
		return "deferred"
	}
	return "plain"
}
