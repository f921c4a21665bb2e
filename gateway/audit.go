package gateway

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sealgate/sealgate/gateway/policy"
	"github.com/sealgate/sealgate/gateway/smtpd"
	"github.com/sealgate/sealgate/keydir"
)

// Auditor keeps the audit trail; keydir's stores implement it.
type Auditor interface {
	AppendAudit(ctx context.Context, records []keydir.AuditRecord) ([]keydir.AuditRecord, error)
}

func describeRule(idx int, r policy.Rule) string {
	if idx == 0 {
		return "default (opportunistic)"
	}
	return fmt.Sprintf("policy[%d] match=%s encrypt=%s format=%s", idx-1, r.Match, r.Encrypt, r.Format)
}

// audit records the outcome for rcpts. groups, when the message reached
// DATA, tell which copy each recipient was in and upstream's reply to it;
// reply is what the client was told (nil for 250). A failure to write the
// trail is logged: the message's fate is already sealed by then.
func (s *session) audit(tx txn, messageID string, rcpts []*recipient, groups []*group, reply *smtpd.Error) {
	if s.srv.audits == nil || len(rcpts) == 0 {
		return
	}
	upstream := map[*recipient]string{}
	for _, g := range groups {
		for _, r := range g.rcpts {
			upstream[r] = g.reply
		}
	}
	now := s.srv.opts.Now()
	records := make([]keydir.AuditRecord, 0, len(rcpts))
	for _, r := range rcpts {
		rec := keydir.AuditRecord{
			Time: now, TxID: tx.id, MessageID: messageID, Sender: tx.from, Recipient: r.norm,
			Rule: r.ruleText, Decision: auditDecision(r.decision),
		}
		if r.decision.Action == policy.Encrypt {
			rec.Format, rec.Fingerprint, rec.KeySource = string(r.decision.Format), r.fingerprint(), "directory"
		}
		switch {
		case reply != nil:
			rec.Outcome = fmt.Sprintf("%d %d.%d.%d %s", reply.Code, reply.Enhanced[0], reply.Enhanced[1], reply.Enhanced[2], reply.Message)
		case upstream[r] != "":
			rec.Outcome = "upstream: " + upstream[r]
		}
		records = append(records, rec)
	}
	if err := s.srv.audits.append(records); err != nil {
		s.log.Error("audit trail not written", "tx", tx.id, "err", err)
	}
}

// auditWriter appends records for all sessions with group commit. The
// session that finds no append under way writes its records itself, on
// its own goroutine; records that arrive meanwhile queue up, and when the
// write ends the first session waiting in that queue takes over and writes
// all of them in one transaction. Every session waits until its own
// records are stored, so the trail is complete before the client's reply,
// and no goroutine hand-off is needed when appends do not overlap.
type auditWriter struct {
	a       Auditor
	mu      sync.Mutex
	writing bool        // a session is appending now
	queue   []*auditReq // waiting for the next append
}

type auditReq struct {
	recs []keydir.AuditRecord
	// done receives the append's error, or errAuditLead when this
	// session is to write the queue itself.
	done chan error
}

// errAuditLead tells a waiting session that the append is its to do.
var errAuditLead = errors.New("gateway: audit append handed over")

const auditBatchMax = 512 // records per transaction

func newAuditWriter(a Auditor) *auditWriter { return &auditWriter{a: a} }

func (w *auditWriter) append(recs []keydir.AuditRecord) error {
	req := &auditReq{recs: recs}
	w.mu.Lock()
	if w.writing {
		req.done = make(chan error, 1)
		w.queue = append(w.queue, req)
		w.mu.Unlock()
		if err := <-req.done; err != errAuditLead {
			return err
		}
		w.mu.Lock() // this session leads now; writing stays true
	} else {
		w.writing = true
		w.queue = append(w.queue, req)
	}
	// The queue holds req itself and whatever arrived before it took the
	// lead. Take up to auditBatchMax records, at least req's own.
	n, take := 0, 0
	for take < len(w.queue) && (take == 0 || n+len(w.queue[take].recs) <= auditBatchMax) {
		n += len(w.queue[take].recs)
		take++
	}
	batch := make([]*auditReq, take)
	copy(batch, w.queue)
	w.queue = append(w.queue[:0], w.queue[take:]...)
	w.mu.Unlock()

	all := make([]keydir.AuditRecord, 0, n)
	for _, r := range batch {
		all = append(all, r.recs...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	_, err := w.a.AppendAudit(ctx, all)
	cancel()
	for _, r := range batch {
		if r != req {
			r.done <- err
		}
	}

	w.mu.Lock()
	if len(w.queue) > 0 {
		next := w.queue[0]
		next.done <- errAuditLead // next leads; it finds itself at the head of the queue
	} else {
		w.writing = false
	}
	w.mu.Unlock()
	return err
}

func auditDecision(d policy.Decision) string {
	switch d.Action {
	case policy.Encrypt:
		return "encrypted"
	case policy.Reject:
		return "refused"
	case policy.Defer:
		return "deferred"
	}
	return "plain"
}
