package e2e

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

var lifecycleMsg = []byte("From: s@firm.example\r\nTo: clerk@court.example\r\nSubject: reload\r\n\r\nbody\r\n")

// TestReloadOnSIGHUP: a SIGHUP applies a new policy to new transactions,
// a transaction open across the reload completes, and a broken config
// changes nothing.
func TestReloadOnSIGHUP(t *testing.T) {
	g := startGateway(t, "[[policy]]\nmatch = \"court.example\"\nencrypt = \"never\"\n")
	// A transaction is open when the operator reloads.
	c, err := smtp.Dial(g.smtpAddr)
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
	rewriteConfig(t, g, `encrypt = "never"`, `encrypt = "required"`)
	if err := g.proc.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !g.waitLog("configuration reloaded") {
		t.Fatalf("no reload in the log:\n%s", g.log)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	w.Write(lifecycleMsg)
	if err := w.Close(); err != nil {
		t.Fatalf("transaction open across the reload: %v", err)
	}
	if n := len(g.sink.wait(t, 1)); n != 1 {
		t.Fatalf("sink got %d messages", n)
	}
	// New transactions follow the new policy: no key, so refused.
	err = sendGo(g.smtpAddr, "s@firm.example", []string{"clerk@court.example"}, lifecycleMsg, nil)
	if err == nil || !strings.Contains(err.Error(), "550") {
		t.Fatalf("after reload: %v, want 550", err)
	}
	// A broken config is refused and the running one stays.
	rewriteConfig(t, g, `encrypt = "required"`, `encrypt = "maybe"`)
	g.proc.cmd.Process.Signal(syscall.SIGHUP)
	if !g.waitLog("reload failed") {
		t.Fatalf("bad config not reported:\n%s", g.log)
	}
	err = sendGo(g.smtpAddr, "s@firm.example", []string{"clerk@court.example"}, lifecycleMsg, nil)
	if err == nil || !strings.Contains(err.Error(), "550") {
		t.Fatalf("after a failed reload the old policy must stay: %v", err)
	}
}

func rewriteConfig(t *testing.T, g *gateway, old, new string) {
	t.Helper()
	b, err := os.ReadFile(g.config)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(old)) {
		t.Fatalf("config lacks %q", old)
	}
	if err := os.WriteFile(g.config, bytes.Replace(b, []byte(old), []byte(new), 1), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestSIGTERMFinishesTransactionInFlight: on SIGTERM the gateway stops
// accepting, lets the open transaction finish with 250, and exits 0.
func TestSIGTERMFinishesTransactionInFlight(t *testing.T) {
	g := startGateway(t, "")
	c, err := smtp.Dial(g.smtpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Mail("s@firm.example", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("bob@other.example", nil); err != nil {
		t.Fatal(err)
	}
	g.proc.cmd.Process.Signal(syscall.SIGTERM)
	if !g.waitLog("shutting down") {
		t.Fatalf("no shutdown in the log:\n%s", g.log)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	w.Write(lifecycleMsg)
	if err := w.Close(); err != nil {
		t.Fatalf("transaction in flight at SIGTERM: %v", err)
	}
	c.Quit()
	select {
	case <-g.proc.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("sealgate did not exit after its last transaction")
	}
	if n := len(g.sink.wait(t, 1)); n != 1 {
		t.Fatalf("sink got %d messages", n)
	}
}

// TestMetricsAndAuditCountASentMessage: /metrics counts it, the audit
// trail records it and verifies.
func TestMetricsAndAuditCountASentMessage(t *testing.T) {
	g := startGateway(t, "")
	if err := sendGo(g.smtpAddr, "s@firm.example", []string{"bob@other.example"}, lifecycleMsg, nil); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + g.httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`sealgate_messages_total{outcome="delivered"} 1`, `sealgate_recipients_total{decision="plain"} 1`, `sealgate_message_copies_total{format="plain"} 1`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	out := mustRun(t, cmdOpts{}, sealgateBin, "audit", "--config", g.config, "--recipient", "bob@other.example")
	if !strings.Contains(string(out), "bob@other.example") || !strings.Contains(string(out), "plain") {
		t.Errorf("audit:\n%s", out)
	}
	out = mustRun(t, cmdOpts{}, sealgateBin, "audit", "verify", "--config", g.config)
	if !strings.Contains(string(out), "audit trail OK: 1 records") {
		t.Errorf("audit verify: %s", out)
	}
	resp, err = http.Get("http://" + g.httpAddr + "/readyz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("/readyz: %v %v", err, resp)
	}
	resp.Body.Close()
}
