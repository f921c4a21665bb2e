package gateway

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/sealgate/sealgate/gateway/policy"
	"github.com/sealgate/sealgate/gateway/smtpd"
	"github.com/sealgate/sealgate/keydir"
	"github.com/sealgate/sealgate/pgp"
	"github.com/sealgate/sealgate/smime"
)

// recipient is one RCPT TO and what was decided for it.
type recipient struct {
	addr     string // as the client wrote it; used upstream
	norm     string // normalised, for matching and lookups
	rule     int    // 1-based policy rule number, 0 = default
	ruleText string // the rule, for the audit trail
	decision policy.Decision
	cert     *pgp.Cert         // set when decision is Encrypt/PGP
	x509     *x509.Certificate // set when decision is Encrypt/SMIME
}

// fingerprint is the key or certificate the recipient's copy is encrypted to.
func (r *recipient) fingerprint() string {
	switch {
	case r.cert != nil:
		return r.cert.Fingerprint()
	case r.x509 != nil:
		return smime.Fingerprint(r.x509)
	}
	return ""
}

// session is one SMTP connection's state. smtpd calls it only from the
// connection's goroutine, BDAT included, so it needs no locking.
type session struct {
	srv *Server
	log *slog.Logger
	tx  txn
}

// txn is one mail transaction: MAIL, the RCPTs and what was decided.
type txn struct {
	id       string    // in logs and the audit trail
	live     *Settings // the settings this transaction started with
	from     string
	mailOpts smtpd.MailOptions
	rcpts    []*recipient
	refused  []*recipient
}

func newID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (s *session) Reset() { s.tx = txn{} }

func (s *session) Logout() {}

func (s *session) Mail(from string, opts smtpd.MailOptions) error {
	s.tx = txn{id: newID(), live: s.srv.live.Load(), from: from, mailOpts: opts}
	return nil
}

// Rcpt decides for one recipient now, so that a recipient who cannot be
// served gets its own reply while the others go on (DESIGN.md).
func (s *session) Rcpt(to string) error {
	norm, err := keydir.NormalizeAddress(to)
	if err != nil {
		return &smtpd.Error{Code: 501, Enhanced: smtpd.EnhancedCode{5, 1, 3}, Message: "Bad recipient address syntax"}
	}
	tx := &s.tx
	for _, r := range tx.rcpts {
		if r.norm == norm {
			return nil // a repeated RCPT adds nothing
		}
	}
	rc := &recipient{addr: to, norm: norm}
	idx, rule := tx.live.Policy.Match(norm)
	rc.rule, rc.ruleText = idx, describeRule(idx, rule)
	var lookup policy.Lookup
	var ans keyAnswer
	if policy.NeedsLookup(rule) {
		ans, lookup.Err = s.srv.lookupKeys(context.Background(), norm)
		lookup.PGP, lookup.SMIME, lookup.SMIMEUnknown = ans.pgp != nil, ans.smime != nil, ans.smimeUnknown != nil
		lookup.Prefer = rule.Prefer
	}
	if lookup.Err != nil {
		s.srv.metrics.lookupErrors.Inc()
	}
	rc.decision = policy.Decide(rule, lookup)
	s.srv.metrics.recipients.WithLabelValues(decisionLabel(rc.decision)).Inc()
	switch rc.decision.Action {
	case policy.Reject:
		tx.refused = append(tx.refused, rc)
		s.log.Info("recipient refused", "tx", tx.id, "rcpt", norm, "rule", idx, "reason", rc.decision.Reason, "unusable", ans.unusable)
		reply := toSMTP(errNoKey(nil))
		s.audit(*tx, "", []*recipient{rc}, nil, reply, false)
		return reply
	case policy.Defer:
		tx.refused = append(tx.refused, rc)
		s.log.Warn("recipient deferred", "tx", tx.id, "rcpt", norm, "rule", idx, "reason", rc.decision.Reason, "err", errors.Join(lookup.Err, ans.smimeUnknown))
		reply := toSMTP(errLookup(lookup.Err))
		s.audit(*tx, "", []*recipient{rc}, nil, reply, false)
		return reply
	case policy.Encrypt:
		if rc.decision.Format == policy.SMIME {
			rc.x509 = ans.smime
		} else {
			rc.cert = ans.pgp
		}
	}
	tx.rcpts = append(tx.rcpts, rc)
	return nil
}

// Data receives, transforms and relays the message. Every error leaves as
// an *smtpd.Error of the right class (see toSMTP). r ends in io.EOF only
// once the whole message has arrived; delivery spools all of it before
// anything goes upstream, so a message cut short is never relayed.
func (s *session) Data(r io.Reader) (err error) {
	tx := s.tx
	log := s.log.With("tx", tx.id)
	start := time.Now()
	d := &delivery{srv: s.srv, live: tx.live, from: tx.from, mailOpts: tx.mailOpts, rcpts: tx.rcpts, log: log}
	defer func() {
		if p := recover(); p != nil {
			log.Error("panic while handling message", "panic", p, "stack", string(debug.Stack()))
			err = errLocal(fmt.Errorf("panic: %v", p))
			if d.expected { // announced, and now never coming
				s.srv.audits.coming.Add(-1)
			}
		}
		if err != nil {
			err = toSMTP(err)
		}
	}()
	size, groups, derr := d.run(r)
	took := time.Since(start)
	s.srv.observe(groups, derr, took)
	expected := d.expected
	d.expected = false // the audit takes the announcement over
	s.audit(tx, d.messageID, tx.rcpts, groups, toSMTP(derr), expected)
	replies := make([]string, 0, len(groups))
	for _, g := range groups {
		if g.reply != "" {
			replies = append(replies, g.reply)
		}
	}
	logMessage(log, tx, size, replies, derr, took)
	return derr
}

func logMessage(log *slog.Logger, tx txn, size int64, replies []string, err error, took time.Duration) {
	attrs := []any{"from", tx.from, "size", size, "took_ms", took.Milliseconds()}
	for _, r := range tx.rcpts {
		attrs = append(attrs, slog.Group("rcpt", "addr", r.norm, "decision", describe(r), "rule", r.rule))
	}
	for _, r := range tx.refused {
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
	if r.decision.Action == policy.Encrypt {
		return string(r.decision.Format) + " " + r.fingerprint()
	}
	return "plain: " + r.decision.Reason
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
