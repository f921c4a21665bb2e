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
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sealgate/sealgate/gateway/policy"
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

// session is one SMTP connection's state. go-smtp calls it from the
// connection's goroutine, except that with BDAT it runs Data in a goroutine
// of its own while RSET, MAIL and RCPT may still arrive: the transaction
// state is therefore guarded by mu, and Data works on a snapshot.
type session struct {
	srv  *Server
	conn *smtp.Conn
	log  *slog.Logger
	busy *atomic.Bool // inside a transaction: Shutdown waits for it

	mu sync.Mutex
	tx txn
}

// txn is one mail transaction: MAIL, the RCPTs and what was decided.
type txn struct {
	id       string    // in logs and the audit trail
	live     *Settings // the settings this transaction started with
	from     string
	mailOpts *smtp.MailOptions
	rcpts    []*recipient
	refused  []*recipient
}

// snapshot copies the transaction for Data.
func (s *session) snapshot() txn {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tx
	t.rcpts = append([]*recipient(nil), t.rcpts...)
	t.refused = append([]*recipient(nil), t.refused...)
	return t
}

func newID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (s *session) Reset() {
	s.mu.Lock()
	s.tx = txn{}
	s.mu.Unlock()
	s.busy.Store(false)
}

func (s *session) Logout() error { return nil }

func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	s.mu.Lock()
	s.tx = txn{id: newID(), live: s.srv.live.Load(), from: from, mailOpts: opts}
	s.mu.Unlock()
	s.busy.Store(true)
	return nil
}

// Rcpt decides for one recipient now, so that a recipient who cannot be
// served gets its own reply while the others go on (DESIGN.md).
func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	norm, err := keydir.NormalizeAddress(to)
	if err != nil {
		return &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 1, 3}, Message: "Bad recipient address syntax"}
	}
	tx := s.snapshot()
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
		s.addRefused(rc)
		s.log.Info("recipient refused", "tx", tx.id, "rcpt", norm, "rule", idx, "reason", rc.decision.Reason, "unusable", ans.unusable)
		reply := toSMTP(errNoKey(nil))
		s.audit(tx, "", []*recipient{rc}, nil, reply)
		return reply
	case policy.Defer:
		s.addRefused(rc)
		s.log.Warn("recipient deferred", "tx", tx.id, "rcpt", norm, "rule", idx, "reason", rc.decision.Reason, "err", errors.Join(lookup.Err, ans.smimeUnknown))
		reply := toSMTP(errLookup(lookup.Err))
		s.audit(tx, "", []*recipient{rc}, nil, reply)
		return reply
	case policy.Encrypt:
		if rc.decision.Format == policy.SMIME {
			rc.x509 = ans.smime
		} else {
			rc.cert = ans.pgp
		}
	}
	s.mu.Lock()
	s.tx.rcpts = append(s.tx.rcpts, rc)
	s.mu.Unlock()
	return nil
}

func (s *session) addRefused(rc *recipient) {
	s.mu.Lock()
	s.tx.refused = append(s.tx.refused, rc)
	s.mu.Unlock()
}

// Data receives, transforms and relays the message. Every error leaves as
// an *smtp.SMTPError of the right class (see toSMTP).
func (s *session) Data(r io.Reader) (err error) {
	tx := s.snapshot()
	log := s.log.With("tx", tx.id)
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
	d := &delivery{srv: s.srv, live: tx.live, from: tx.from, mailOpts: tx.mailOpts, rcpts: tx.rcpts, log: log}
	if _, bdat := r.(*io.PipeReader); bdat {
		// DATA ends only at its end marker; a BDAT chunk also at EOF.
		d.clientGone = s.clientGone
	}
	size, groups, derr := d.run(s.dataReader(r))
	took := time.Since(start)
	if errors.Is(derr, errClientData) && isTimeout(derr) {
		s.closeAfterTimeout(log)
	}
	s.srv.observe(groups, derr, took)
	s.audit(tx, d.messageID, tx.rcpts, groups, toSMTP(derr))
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

// dataReader wraps the DATA stream so that the read deadline is renewed
// before every read: a large message on a slow link is bounded per read
// (RFC 5321 §4.5.3.2: 3 minutes per data block) instead of by go-smtp's
// single command deadline. With BDAT, go-smtp feeds a pipe from its own
// reads; renewing there would let a client dripping one byte at a time
// hold the connection for ever, so each chunk stays bounded by the
// command timeout go-smtp set for its BDAT command.
func (s *session) dataReader(r io.Reader) io.Reader {
	if _, bdat := r.(*io.PipeReader); bdat {
		return r
	}
	return &deadlineReader{r: r, conn: s.conn.Conn(), d: s.srv.opts.DataTimeout}
}

// clientGone reports whether the client's connection has ended: then the
// message just read may be cut short (go-smtp ends a BDAT chunk at EOF as
// if it were complete) and must not be relayed.
func (s *session) clientGone() bool {
	sc := slotOf(s.conn.Conn())
	return sc != nil && sc.gone.Load()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// closeAfterTimeout ends the connection after DATA timed out: what the
// client sends next is the rest of its message, which must never be read
// as commands (RFC 5321 §4.5.3.2: a server closes after a timeout).
func (s *session) closeAfterTimeout(log *slog.Logger) {
	c := s.conn.Conn()
	_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, _ = fmt.Fprintf(c, "421 4.4.2 %s Timeout while receiving data, closing connection\r\n", s.srv.opts.Hostname)
	_ = c.Close()
	log.Warn("client timed out in DATA; connection closed")
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
