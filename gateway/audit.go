package gateway

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
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
//
// expected says that this session announced the records (auditWriter.expect)
// when it began to relay the message.
func (s *session) audit(tx txn, messageID string, rcpts []*recipient, groups []*group, reply *smtpd.Error, expected bool) {
	if s.srv.audits == nil {
		return
	}
	if len(rcpts) == 0 {
		if expected {
			s.srv.audits.coming.Add(-1)
		}
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
	if err := s.srv.audits.append(records, expected); err != nil {
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
//
// A commit costs about the same for one record as for dozens (on SQLite,
// a dozen system calls), so the session about to write first waits, for
// at most auditLinger, for the records of the messages being relayed at
// that moment: they are announced (expect) when relaying begins and
// arrive a relay round trip later. When no other message is being
// relayed, as at light load, nobody waits.
type auditWriter struct {
	a       Auditor
	mu      sync.Mutex
	writing bool        // a session is appending now
	queue   []*auditReq // waiting for the next append
	// coming counts the announced appends that have not arrived yet.
	coming atomic.Int32
	// arrived wakes a leader waiting for them (capacity 1).
	arrived chan struct{}
	wait    time.Duration // at most this long (auditLinger)
	linger  *time.Timer   // the leader's; only the leader touches it
}

type auditReq struct {
	recs []keydir.AuditRecord
	// done receives the append's error, or errAuditLead when this
	// session is to write the queue itself.
	done chan error
}

// errAuditLead tells a waiting session that the append is its to do.
var errAuditLead = errors.New("gateway: audit append handed over")

const (
	auditBatchMax = 512 // records per transaction
	// auditLinger bounds how long a leader waits for announced records.
	auditLinger = time.Millisecond
)

func newAuditWriter(a Auditor) *auditWriter {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &auditWriter{a: a, arrived: make(chan struct{}, 1), wait: auditLinger, linger: t}
}

// expect announces that the calling session will append records soon
// (it has begun to relay a message); its append must then pass expected.
func (w *auditWriter) expect() { w.coming.Add(1) }

func (w *auditWriter) append(recs []keydir.AuditRecord, expected bool) error {
	if expected {
		w.coming.Add(-1)
	}
	req := &auditReq{recs: recs}
	w.mu.Lock()
	if w.writing {
		req.done = make(chan error, 1)
		w.queue = append(w.queue, req)
		w.mu.Unlock()
		select {
		case w.arrived <- struct{}{}:
		default:
		}
		if err := <-req.done; err != errAuditLead {
			return err
		}
		w.mu.Lock() // this session leads now; writing stays true
	} else {
		w.writing = true
		w.queue = append(w.queue, req)
	}
	w.gather()
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
	err := w.commit(all)
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

// commit writes one batch. A panic in the store becomes an error, so the
// sessions waiting for this batch, and the next leader, are always told.
func (w *auditWriter) commit(all []keydir.AuditRecord) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("gateway: audit append panicked: %v", p)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = w.a.AppendAudit(ctx, all)
	return err
}

// gather lets the leader (holding w.mu, with writing set) wait, up to
// auditLinger, until as many records have queued as were announced when
// it began, or none is announced any more. It returns holding w.mu.
func (w *auditWriter) gather() {
	want := len(w.queue) + int(w.coming.Load())
	if want == len(w.queue) {
		return
	}
	w.linger.Reset(w.wait)
	defer w.linger.Stop()
	for len(w.queue) < want && len(w.queue) < auditBatchMax && w.coming.Load() > 0 {
		w.mu.Unlock()
		select {
		case <-w.arrived:
			w.mu.Lock()
		case <-w.linger.C:
			w.mu.Lock()
			return
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
