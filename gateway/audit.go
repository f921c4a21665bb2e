package gateway

import (
	"context"
	"fmt"
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

// auditWriter appends records for all sessions with group commit: while
// one transaction is being written, the records that arrive queue up and
// go into the next one together. Each session still waits until its own
// records are stored, so the trail is complete before the client's reply.
type auditWriter struct {
	a    Auditor
	reqs chan auditReq
}

type auditReq struct {
	recs []keydir.AuditRecord
	done chan error
}

const auditBatchMax = 512 // records per transaction

func newAuditWriter(a Auditor) *auditWriter {
	w := &auditWriter{a: a, reqs: make(chan auditReq, 1024)}
	go w.run()
	return w
}

func (w *auditWriter) append(recs []keydir.AuditRecord) error {
	done := make(chan error, 1)
	w.reqs <- auditReq{recs: recs, done: done}
	return <-done
}

func (w *auditWriter) run() {
	for req := range w.reqs {
		batch, n := []auditReq{req}, len(req.recs)
	drain:
		for n < auditBatchMax {
			select {
			case r := <-w.reqs:
				batch, n = append(batch, r), n+len(r.recs)
			default:
				break drain
			}
		}
		all := make([]keydir.AuditRecord, 0, n)
		for _, r := range batch {
			all = append(all, r.recs...)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err := w.a.AppendAudit(ctx, all)
		cancel()
		for _, r := range batch {
			r.done <- err
		}
	}
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
