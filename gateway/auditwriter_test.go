package gateway

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sealgate/sealgate/keydir"
)

// recordingAuditor keeps each AppendAudit call's records. While gate is
// open (non-nil), every call waits on it, so appends pile up.
type recordingAuditor struct {
	mu      sync.Mutex
	batches [][]keydir.AuditRecord
	entered chan struct{} // receives once per call, when set
	gate    chan struct{}
	fail    func(batch int) error
}

func (a *recordingAuditor) AppendAudit(_ context.Context, recs []keydir.AuditRecord) ([]keydir.AuditRecord, error) {
	if a.entered != nil {
		a.entered <- struct{}{}
	}
	if a.gate != nil {
		<-a.gate
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.batches = append(a.batches, append([]keydir.AuditRecord(nil), recs...))
	if a.fail != nil {
		return nil, a.fail(len(a.batches) - 1)
	}
	return recs, nil
}

func auditRecs(session, n int) []keydir.AuditRecord {
	out := make([]keydir.AuditRecord, n)
	for i := range out {
		out[i].TxID = fmt.Sprintf("s%d-r%d", session, i)
	}
	return out
}

// The first append runs on the caller's goroutine; appends that arrive
// while it runs are written together in the next one, each exactly once,
// and every caller returns only after its own records were written.
func TestAuditWriterGroupCommit(t *testing.T) {
	a := &recordingAuditor{entered: make(chan struct{}, 100), gate: make(chan struct{})}
	w := newAuditWriter(a)

	first := make(chan error, 1)
	go func() { first <- w.append(auditRecs(0, 1), false) }()
	<-a.entered // the first append is being written

	const waiting = 30
	var wg sync.WaitGroup
	errs := make(chan error, waiting)
	for s := 1; s <= waiting; s++ {
		wg.Add(1)
		go func() { defer wg.Done(); errs <- w.append(auditRecs(s, 2), false) }()
	}
	// Everyone queues behind the first append.
	for queued(w) != waiting {
		select {
		case err := <-errs:
			t.Fatalf("an append returned (%v) while the first was still being written", err)
		default:
		}
	}
	close(a.gate)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(a.batches) != 2 || len(a.batches[0]) != 1 || len(a.batches[1]) != 2*waiting {
		sizes := []int{}
		for _, b := range a.batches {
			sizes = append(sizes, len(b))
		}
		t.Fatalf("batch sizes = %v; want [1 %d]", sizes, 2*waiting)
	}
	seen := map[string]bool{}
	for _, b := range a.batches {
		for _, r := range b {
			if seen[r.TxID] {
				t.Fatalf("record %s written twice", r.TxID)
			}
			seen[r.TxID] = true
		}
	}
	if len(seen) != 1+2*waiting {
		t.Fatalf("%d records written; want %d", len(seen), 1+2*waiting)
	}
	if w.writing || len(w.queue) != 0 {
		t.Fatalf("writer not idle after the appends: writing=%v queue=%d", w.writing, len(w.queue))
	}
}

// A queue longer than auditBatchMax records is written in several
// transactions, none over the limit; an error reaches exactly the callers
// whose records were in the failed transaction.
func TestAuditWriterBatchLimitAndErrors(t *testing.T) {
	boom := errors.New("disk full")
	a := &recordingAuditor{entered: make(chan struct{}, 100), gate: make(chan struct{}),
		fail: func(batch int) error {
			if batch == 1 {
				return boom
			}
			return nil
		}}
	w := newAuditWriter(a)
	first := make(chan error, 1)
	go func() { first <- w.append(auditRecs(0, 1), false) }()
	<-a.entered

	const sessions, each = 12, 100 // 1,200 records: batches of 500, 500, 200
	type result struct {
		session int
		err     error
	}
	results := make(chan result, sessions)
	for s := 1; s <= sessions; s++ {
		go func() { results <- result{s, w.append(auditRecs(s, each), false)} }()
	}
	for queued(w) != sessions {
		runtime.Gosched()
	}
	close(a.gate)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	failed := map[int]bool{}
	for range sessions {
		r := <-results
		if r.err != nil {
			if !errors.Is(r.err, boom) {
				t.Fatalf("session %d: %v", r.session, r.err)
			}
			failed[r.session] = true
		}
	}
	var sizes []int
	for _, b := range a.batches {
		sizes = append(sizes, len(b))
		if len(b) > auditBatchMax {
			t.Errorf("a batch of %d records; the limit is %d", len(b), auditBatchMax)
		}
	}
	if fmt.Sprint(sizes) != "[1 500 500 200]" {
		t.Errorf("batch sizes = %v; want [1 500 500 200]", sizes)
	}
	// Exactly the sessions whose records were in the second transaction.
	inFailed := map[int]bool{}
	for _, r := range a.batches[1] {
		var s, i int
		fmt.Sscanf(r.TxID, "s%d-r%d", &s, &i)
		inFailed[s] = true
	}
	if len(failed) != 5 || fmt.Sprint(failed) != fmt.Sprint(inFailed) {
		t.Errorf("sessions told of the failure = %v; sessions in the failed transaction = %v", failed, inFailed)
	}
}

// The first session to append waits for the records announced by the
// sessions still relaying, and writes them all in one transaction.
func TestAuditWriterGathersAnnounced(t *testing.T) {
	a := &recordingAuditor{}
	w := newAuditWriter(a)
	w.wait = time.Minute // only the arrivals end the wait here
	const sessions = 4
	for range sessions {
		w.expect()
	}
	var wg sync.WaitGroup
	for s := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(s) * 20 * time.Millisecond)
			if err := w.append(auditRecs(s, 1), true); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if len(a.batches) != 1 || len(a.batches[0]) != sessions {
		t.Fatalf("%d transactions (first of %d records); want one of %d", len(a.batches), len(a.batches[0]), sessions)
	}
	if n := w.coming.Load(); n != 0 {
		t.Fatalf("%d appends still announced", n)
	}
}

// An announced append that does not come holds the others back no longer
// than the writer's wait; an append nobody announced waits for nothing.
func TestAuditWriterWaitIsBounded(t *testing.T) {
	a := &recordingAuditor{}
	w := newAuditWriter(a)
	start := time.Now()
	if err := w.append(auditRecs(0, 1), false); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 50*time.Millisecond {
		t.Errorf("an append with nothing announced took %v", d)
	}

	w.wait = 100 * time.Millisecond
	w.expect()
	w.expect() // this one never comes (a session that failed without auditing would have withdrawn it)
	start = time.Now()
	if err := w.append(auditRecs(1, 1), true); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < w.wait || d > 10*w.wait {
		t.Errorf("append waiting for an append that never comes took %v; want about %v", d, w.wait)
	}
	if len(a.batches) != 2 || len(a.batches[1]) != 1 {
		t.Fatalf("batches = %d", len(a.batches))
	}
	// The next leader waits again (the announcement is still out), and
	// then nothing holds it once it is withdrawn.
	w.coming.Add(-1)
	start = time.Now()
	if err := w.append(auditRecs(2, 1), false); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 50*time.Millisecond {
		t.Errorf("append after the withdrawal took %v", d)
	}
}

type panickingAuditor struct{ calls atomic.Int32 }

func (a *panickingAuditor) AppendAudit(context.Context, []keydir.AuditRecord) ([]keydir.AuditRecord, error) {
	if a.calls.Add(1) == 1 {
		panic("store bug")
	}
	return nil, nil
}

// A store that panics fails that append with an error; the writer goes on.
func TestAuditWriterSurvivesPanic(t *testing.T) {
	a := &panickingAuditor{}
	w := newAuditWriter(a)
	if err := w.append(auditRecs(0, 1), false); err == nil || !strings.Contains(err.Error(), "panicked") {
		t.Fatalf("append through a panicking store = %v; want an error", err)
	}
	done := make(chan error, 1)
	go func() { done <- w.append(auditRecs(1, 1), false) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the writer is stuck after a panic")
	}
}

// queued is how many appends wait in w's queue.
func queued(w *auditWriter) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.queue)
}
