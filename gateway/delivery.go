package gateway

import (
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"github.com/emersion/go-message/textproto"

	"github.com/sealgate/sealgate/gateway/policy"
	"github.com/sealgate/sealgate/gateway/relay"
	"github.com/sealgate/sealgate/gateway/smtpd"
	"github.com/sealgate/sealgate/gateway/spool"
	"github.com/sealgate/sealgate/keydir"
	"github.com/sealgate/sealgate/pgp"
	"github.com/sealgate/sealgate/smime"
)

// delivery is one message on its way from DATA to upstream.
type delivery struct {
	srv      *Server
	live     *Settings
	from     string
	mailOpts smtpd.MailOptions
	rcpts    []*recipient
	log      *slog.Logger
	// header is the message's header section, once read; headerLen its
	// length in bytes (the body starts there); messageID its Message-ID.
	header    textproto.Header
	headerLen int64
	messageID string
	// expected: the message's audit records were announced (auditWriter.expect).
	expected bool
}

// group is the recipients that receive the same bytes: one upstream
// transaction each.
type group struct {
	kind  policy.Format // policy.PGP, policy.SMIME, or "" for plaintext
	rcpts []*recipient
	certs []*pgp.Cert         // OpenPGP recipients
	x509s []*x509.Certificate // S/MIME recipients
	reply string              // upstream's reply once it accepted the copy
}

func (g *group) format() string {
	if g.kind == "" {
		return "plain"
	}
	return string(g.kind)
}

// add puts r (and its key, once) into g.
func (g *group) add(r *recipient) {
	g.rcpts = append(g.rcpts, r)
	fp := r.fingerprint()
	for _, o := range g.rcpts[:len(g.rcpts)-1] {
		if o.fingerprint() == fp {
			return
		}
	}
	switch {
	case r.cert != nil:
		g.certs = append(g.certs, r.cert)
	case r.x509 != nil:
		g.x509s = append(g.x509s, r.x509)
	}
}

func (g *group) addrs() []string {
	out := make([]string, len(g.rcpts))
	for i, r := range g.rcpts {
		out[i] = r.addr
	}
	return out
}

var (
	errTooBig = &Reply{Code: 552, Enhanced: smtpd.EnhancedCode{5, 3, 4}, Text: "Message too big"}
	errHeader = &Reply{Code: 554, Enhanced: smtpd.EnhancedCode{5, 6, 0}, Text: "Malformed message header"}
)

// run spools the message, opens one upstream transaction per group,
// streams every body and only then sends the final dots. Any failure before
// the dots aborts every transaction (nothing delivered, the client gets a
// 4xx and retries); a failure during the dots may leave some groups
// delivered, so the retry can duplicate but never lose (DESIGN.md).
func (d *delivery) run(r io.Reader) (int64, []*group, error) {
	msg, err := d.spool(r)
	if err != nil {
		return 0, nil, err
	}
	if d.srv.audits != nil {
		// The message is here: its records follow one relay later.
		d.srv.audits.expect()
		d.expected = true
	}
	defer msg.Close()
	rd, err := msg.Open()
	if err != nil {
		return msg.Size(), nil, errLocal(err)
	}
	h, n, err := parseHeader(rd, d.srv.opts.MaxHeaderBytes)
	if err != nil {
		return msg.Size(), nil, headerReply(err)
	}
	d.header, d.headerLen, d.messageID = h, n, h.Get("Message-Id")
	groups := d.group(visibleRecipients(h, keydir.NormalizeAddress))
	return msg.Size(), groups, d.relay(msg, groups)
}

// relay opens one upstream transaction per group, streams every body, then
// sends the final dots.
func (d *delivery) relay(msg *spool.Message, groups []*group) error {
	txns := make([]*relay.Txn, 0, len(groups))
	abortAll := func(ts []*relay.Txn) {
		for _, t := range ts {
			t.Abort()
		}
	}
	for _, g := range groups {
		t, err := d.live.Relay.Begin(context.Background(), d.from, d.mailOpts.UTF8, g.addrs())
		if err != nil {
			abortAll(txns)
			if errors.Is(err, relay.ErrNoSMTPUTF8) {
				// RFC 6531 §3.4: a message that needs SMTPUTF8 cannot go
				// to a server without it; retrying will not help.
				return &Reply{Code: 550, Enhanced: smtpd.EnhancedCode{5, 6, 7}, Text: "SMTPUTF8 not supported by the next hop", Cause: err}
			}
			return errUpstream(err)
		}
		txns = append(txns, t)
		if err := d.writeBody(t, msg, g); err != nil {
			abortAll(txns)
			var rep *Reply
			if errors.As(err, &rep) && !errors.Is(err, relay.ErrBodyWrite) {
				return err
			}
			return errUpstream(err)
		}
	}
	for i, t := range txns {
		rep, err := t.Commit()
		if err != nil {
			abortAll(txns[i+1:])
			if i > 0 {
				d.log.Warn("upstream accepted some copies before failing; the retry may duplicate them", "accepted", i, "of", len(txns))
			}
			return errUpstream(err)
		}
		groups[i].reply = rep
	}
	return nil
}

func headerReply(err error) error {
	if errors.Is(err, errHeaderTooLarge) {
		return &Reply{Code: 552, Enhanced: smtpd.EnhancedCode{5, 3, 4}, Text: "Message header too large", Cause: err}
	}
	return &Reply{Code: errHeader.Code, Enhanced: errHeader.Enhanced, Text: errHeader.Text, Cause: err}
}

// spool reads DATA into the spool, canonicalising line endings.
func (d *delivery) spool(r io.Reader) (*spool.Message, error) {
	o := d.srv.opts
	sw, err := spool.New(spool.Options{Dir: o.SpoolDir, MemoryBytes: o.SpoolMemoryBytes, MaxBytes: o.MaxMessageBytes})
	if err != nil {
		return nil, errLocal(err)
	}
	cw := newCRLFWriter(sw)
	if _, err := copyPooled(cw, r); err != nil {
		sw.Discard()
		if errors.Is(err, spool.ErrTooLarge) || errors.Is(err, smtpd.ErrTooBig) {
			return nil, errTooBig
		}
		return nil, errLocal(fmt.Errorf("%w: %w", errClientData, err))
	}
	if err := cw.Flush(); err != nil {
		sw.Discard()
		return nil, errTooBig
	}
	msg, err := sw.Finish()
	if err != nil {
		return nil, errLocal(err)
	}
	return msg, nil
}

// group sorts recipients into transactions: the encrypted recipients named
// in To/Cc share one copy per format; every other encrypted recipient (a
// Bcc) gets a copy encrypted to its key alone, so no copy reveals a Bcc
// recipient's key (reliability.md P6); plaintext recipients share one copy.
func (d *delivery) group(visible map[string]bool, visibleOK bool) []*group {
	shared := map[policy.Format]*group{policy.PGP: {kind: policy.PGP}, policy.SMIME: {kind: policy.SMIME}}
	plain := &group{}
	var singles []*group
	for _, r := range d.rcpts {
		switch {
		case r.decision.Action != policy.Encrypt:
			plain.add(r)
		case visibleOK && visible[r.norm]:
			shared[r.decision.Format].add(r)
		default:
			g := &group{kind: r.decision.Format}
			g.add(r)
			singles = append(singles, g)
		}
	}
	var out []*group
	for _, g := range []*group{shared[policy.PGP], shared[policy.SMIME]} {
		if len(g.rcpts) > 0 {
			out = append(out, g)
		}
	}
	out = append(out, singles...)
	if len(plain.rcpts) > 0 {
		out = append(out, plain)
	}
	return out
}

// writeBody streams one group's copy into its upstream transaction.
func (d *delivery) writeBody(t *relay.Txn, msg *spool.Message, g *group) error {
	rd, err := msg.Open()
	if err != nil {
		return errLocal(err)
	}
	// The header was parsed once, in run; every copy reads it from there.
	h := d.header
	body, err := bodyAfter(rd, d.headerLen)
	if err != nil {
		return errLocal(err)
	}
	bw := bodyWriters.Get().(*bufio.Writer)
	bw.Reset(t)
	defer func() { bw.Reset(nil); bodyWriters.Put(bw) }()
	switch g.kind {
	case policy.PGP:
		err = d.writePGP(bw, h, body, g)
	case policy.SMIME:
		err = d.writeSMIME(bw, h, body, g)
	default:
		err = writePlain(bw, h, body)
	}
	if err != nil {
		return err
	}
	return bw.Flush()
}

// bodyWriters recycles the buffers that batch writes into upstream's
// dot-stuffing writer, one per copy.
var bodyWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 64*1024) }}

func writePlain(w io.Writer, h textproto.Header, body io.Reader) error {
	if err := writePlainHeader(w, h); err != nil {
		return err
	}
	_, err := copyPooled(w, body)
	return err
}

// writePGP writes an RFC 3156 PGP/MIME copy, streaming.
func (d *delivery) writePGP(w io.Writer, h textproto.Header, body io.Reader, g *group) error {
	protect := d.live.ProtectHeaders
	boundary := pgp.NewBoundary()
	if err := writeOuterHeader(w, h, protect, pgp.MIMEContentType(boundary)); err != nil {
		return err
	}
	enc, err := pgp.EncryptMIME(w, boundary, g.certs, pgp.EncryptOptions{Now: d.srv.opts.Now})
	if err != nil {
		return errLocal(err)
	}
	if err := writeInnerHeader(enc, h, protect); err != nil {
		return errLocal(err)
	}
	if _, err := copyPooled(enc, body); err != nil {
		return err
	}
	if err := enc.Close(); err != nil {
		return errLocal(err)
	}
	return nil
}

// writeSMIME writes an RFC 8551 enveloped-data copy. The CMS library takes
// the whole inner entity as one []byte, so it is buffered here, capped by
// SMIMEMaxBytes; a message over the cap is refused (552), never sent in
// plaintext instead.
func (d *delivery) writeSMIME(w io.Writer, h textproto.Header, body io.Reader, g *group) error {
	max := d.srv.opts.SMIMEMaxBytes
	var inner bytes.Buffer
	if err := writeInnerHeader(&inner, h, d.live.ProtectHeaders); err != nil {
		return errLocal(err)
	}
	if _, err := io.Copy(&inner, io.LimitReader(body, max+1)); err != nil {
		return errLocal(err)
	}
	if int64(inner.Len()) > max {
		return &Reply{Code: 552, Enhanced: smtpd.EnhancedCode{5, 3, 4}, Text: "Message too big for S/MIME encryption",
			Cause: fmt.Errorf("gateway: S/MIME message over %d bytes", max)}
	}
	der, err := smime.Encrypt(inner.Bytes(), g.x509s)
	if err != nil {
		return errLocal(err)
	}
	ct := smime.ContentType + "\r\nContent-Transfer-Encoding: " + smime.ContentTransferEncoding +
		"\r\nContent-Disposition: " + smime.ContentDisposition
	if err := writeOuterHeader(w, h, d.live.ProtectHeaders, ct); err != nil {
		return err
	}
	return smime.WriteMIMEBody(w, der)
}
