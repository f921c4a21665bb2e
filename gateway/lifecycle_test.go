package gateway

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sealgate/sealgate/gateway/policy"
)

func TestReloadKeepsTransactionInFlightOnOldSettings(t *testing.T) {
	g := startGateway(t, []policy.Rule{{Match: "court.example", Encrypt: policy.Never}}, nil)
	c, err := smtp.Dial(g.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Mail("s@firm.example", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("clerk@court.example", nil); err != nil {
		t.Fatal(err)
	}
	// The operator tightens the policy while the transaction is open.
	strict, err := policy.New([]policy.Rule{{Match: "court.example", Encrypt: policy.Required}})
	if err != nil {
		t.Fatal(err)
	}
	st := *g.srv.live.Load()
	st.Policy = strict
	if err := g.srv.Reload(st); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, testMsg)
	if err := w.Close(); err != nil {
		t.Fatalf("transaction in flight failed after reload: %v", err)
	}
	if n := len(g.up.messages()); n != 1 {
		t.Fatalf("upstream got %d messages", n)
	}
	// The next transaction, on the same connection, uses the new policy.
	if err := c.Mail("s@firm.example", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("clerk@court.example", nil); smtpCode(err) != 550 {
		t.Fatalf("after reload: RCPT %v, want 550", err)
	}
}

func TestReloadRejectsIncompleteSettings(t *testing.T) {
	g := startGateway(t, nil, nil)
	if err := g.srv.Reload(Settings{}); err == nil {
		t.Fatal("empty settings accepted")
	}
	if g.srv.live.Load().Policy == nil {
		t.Fatal("a failed reload changed the settings")
	}
}

func TestShutdownFinishesTransactionsAndClosesIdle(t *testing.T) {
	g := startGateway(t, nil, nil)
	idle, err := net.Dial("tcp", g.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	if !readUntil(t, idle, "220 ") {
		t.Fatal("no greeting")
	}
	busy, err := smtp.Dial(g.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	if err := busy.Mail("s@firm.example", nil); err != nil {
		t.Fatal(err)
	}
	if err := busy.Rcpt("bob@other.example", nil); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- g.srv.Shutdown(ctx)
	}()
	// The idle connection is closed promptly.
	idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(idle); err != nil {
		t.Fatalf("idle connection not closed: %v", err)
	}
	// New connections are refused.
	time.Sleep(100 * time.Millisecond)
	if c, err := net.DialTimeout("tcp", g.addr, time.Second); err == nil {
		c.Close()
		t.Fatal("still accepting connections")
	}
	// The transaction in flight completes.
	w, err := busy.Data()
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, testMsg)
	if err := w.Close(); err != nil {
		t.Fatalf("transaction in flight: %v", err)
	}
	select {
	case err := <-done:
		if err != nil && !strings.Contains(err.Error(), "closed") {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return after the last transaction")
	}
	if len(g.up.messages()) != 1 {
		t.Fatal("message in flight not delivered")
	}
}
