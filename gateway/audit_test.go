package gateway

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/sealgate/sealgate/gateway/policy"
	"github.com/sealgate/sealgate/keydir"
)

func TestAuditTrailRecordsEveryRecipient(t *testing.T) {
	g := startGateway(t, []policy.Rule{{Match: "court.example", Encrypt: policy.Required}},
		func(o *Options) { o.Audit = o.Directory.(Auditor) })
	alice := g.newKey(t, "alice@client.example")
	res := g.send(t, "s@firm.example", []string{"alice@client.example", "bob@other.example", "clerk@court.example"}, testMsg, nil)
	if res.dataErr != nil {
		t.Fatal(res.dataErr)
	}
	g.up.srv.Close()
	g.send(t, "s@firm.example", []string{"bob@other.example"}, testMsg, nil)

	ctx := context.Background()
	recs, err := g.store.Audit(ctx, keydir.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 4 {
		t.Fatalf("%d audit records, want 4: %+v", len(recs), recs)
	}
	byRcpt := map[string][]keydir.AuditRecord{}
	for _, r := range recs {
		byRcpt[r.Recipient] = append(byRcpt[r.Recipient], r)
		if strings.Contains(r.Outcome+r.Rule+r.MessageID, "Merger") {
			t.Error("subject in the audit trail")
		}
	}
	clerk := byRcpt["clerk@court.example"][0]
	if clerk.Decision != "refused" || !strings.HasPrefix(clerk.Outcome, "550 5.7.1") || !strings.Contains(clerk.Rule, "court.example") {
		t.Errorf("refused recipient: %+v", clerk)
	}
	a := byRcpt["alice@client.example"][0]
	if a.Decision != "encrypted" || a.Format != "pgp" || a.KeySource != "directory" || !strings.HasPrefix(a.Outcome, "upstream: ") ||
		a.MessageID != "<1@firm.example>" || a.Sender != "s@firm.example" || a.TxID == "" {
		t.Errorf("encrypted recipient: %+v", a)
	}
	if !strings.EqualFold(a.Fingerprint[len(a.Fingerprint)-16:], alice.PrimaryKey.KeyIdString()) {
		t.Errorf("fingerprint %s is not alice's key", a.Fingerprint)
	}
	bob := byRcpt["bob@other.example"]
	if len(bob) != 2 || bob[0].Decision != "plain" || bob[1].Decision != "plain" || !strings.HasPrefix(bob[1].Outcome, "451 4.4.1") {
		t.Errorf("plain recipient, delivered then deferred: %+v", bob)
	}
	if bob[0].TxID == bob[1].TxID {
		t.Error("two transactions share an ID")
	}
	if n, _, err := g.store.VerifyAudit(ctx); err != nil || n != 4 {
		t.Fatalf("verify: %d %v", n, err)
	}
}

func TestAuditGroupCommitUnderConcurrency(t *testing.T) {
	g := startGateway(t, nil, func(o *Options) { o.Audit = o.Directory.(Auditor) })
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c, err := smtp.Dial(g.addr)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			errs <- c.SendMail("s@firm.example", []string{fmt.Sprintf("r%d@other.example", i)}, strings.NewReader(testMsg))
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	n, _, err := g.store.VerifyAudit(context.Background())
	if err != nil || n != 20 {
		t.Fatalf("verify: %d records, %v", n, err)
	}
	if c := g.srv.audits.coming.Load(); c != 0 {
		t.Fatalf("%d audit appends announced and never made", c)
	}
}
