package e2e

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Black-box counterparts of gateway/smuggling_test.go and limits_test.go:
// the built binary, configured through its TOML file, with Postfix's
// smtp-sink parsing what it relays.

// startHardened runs sealgate relaying to a fresh smtp-sink, with extra
// lines for the [smtp] table.
func startHardened(t *testing.T, smtpExtra string) *gateway {
	t.Helper()
	s := startSink(t, freeAddr(t))
	dir := t.TempDir()
	g := &gateway{smtpAddr: freeAddr(t), httpAddr: freeAddr(t), dataDir: filepath.Join(dir, "data"),
		config: filepath.Join(dir, "sealgate.toml"), log: &syncBuffer{}, sink: s}
	text := fmt.Sprintf("data_dir = %q\n\n[smtp]\nlisten = %q\nupstream = %q\nupstream_tls = \"none\"\nupstream_timeout = \"30s\"\n%s\n\n[http]\nlisten = %q\n",
		g.dataDir, g.smtpAddr, s.addr, smtpExtra, g.httpAddr)
	if err := os.WriteFile(g.config, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if strings.Contains(g.log.String(), "panic") {
			t.Errorf("sealgate log mentions a panic:\n%s", g.log)
		}
	})
	g.proc = daemon(t, dir, g.log, true, sealgateBin, "serve", "--config", g.config)
	g.proc.waitGreeting(t, g.smtpAddr)
	return g
}

// hardConn is a raw SMTP connection for byte-exact input.
type hardConn struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dialHard(t *testing.T, addr string) *hardConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &hardConn{t: t, c: c, br: bufio.NewReader(c)}
}

// reply returns the last line of the next reply, "" on EOF or after 10 s.
func (h *hardConn) reply() string {
	_ = h.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		line, err := h.br.ReadString('\n')
		if err != nil {
			return ""
		}
		if len(line) < 4 || line[3] != '-' {
			return strings.TrimRight(line, "\r\n")
		}
	}
}

func (h *hardConn) send(s, want string) {
	h.t.Helper()
	if s != "" {
		if _, err := h.c.Write([]byte(s)); err != nil {
			h.t.Fatal(err)
		}
	}
	if r := h.reply(); !strings.HasPrefix(r, want) {
		h.t.Fatalf("after %q: reply %q, want %s", s, r, want)
	}
}

// TestBlackBoxBDATSmuggling: end-of-data look-alikes sent with BDAT in
// chunks cut inside the sequence — including the real CRLF.CRLF, which
// BDAT carries as content — reach smtp-sink as exactly one transaction per
// recipient group, from the real sender, with all the content.
func TestBlackBoxBDATSmuggling(t *testing.T) {
	t.Parallel()
	gh := newGPGHome(t)
	gpgKey(t, gh, "alice@a.example", "future-default", "default", "never")
	g := startHardened(t, "")
	g.importKeys(t, gpgExport(t, gh, "alice@a.example"))
	const marker = "PLAINMARKER-bdat-smuggled"
	variants := []string{"\r\n.\r\n", "\n.\n", "\r.\r", "\n.\r\n", "\r\n\x00.\r\n"}
	contents := map[string]string{} // by Message-ID
	for i, v := range variants {
		id := fmt.Sprintf("<bdat-%d@corp.example>", i)
		header := "From: s@corp.example\r\nTo: alice@a.example, carol@c.example\r\nMessage-ID: " + id + "\r\nSubject: bdat\r\n\r\n"
		content := header + "first" + v + "MAIL FROM:<evil@attacker.example>\r\nRCPT TO:<victim@c.example>\r\nDATA\r\n" + marker + "\r\n" + v + "last line\r\n"
		contents[id] = content
		cut := len(header) + len("first") + 1
		h := dialHard(t, g.smtpAddr)
		h.send("", "220")
		h.send("EHLO e2e.test\r\nMAIL FROM:<s@corp.example>\r\n", "250")
		h.reply()
		h.send("RCPT TO:<alice@a.example>\r\n", "250")
		h.send("RCPT TO:<carol@c.example>\r\n", "250")
		h.send(fmt.Sprintf("BDAT %d\r\n%s", cut, content[:cut]), "250")
		h.send(fmt.Sprintf("BDAT %d LAST\r\n%s", len(content)-cut, content[cut:]), "250")
		h.send("QUIT\r\n", "221")
	}
	msgs := g.sink.wait(t, 2*len(variants))
	if len(msgs) != 2*len(variants) {
		t.Fatalf("smtp-sink has %d transactions, want %d (one per group per message)", len(msgs), 2*len(variants))
	}
	seen := map[string]int{}
	for _, m := range msgs {
		if m.from != "s@corp.example" {
			t.Errorf("transaction from %q: smuggled", m.from)
		}
		id := ""
		for k := range contents {
			if strings.Contains(string(m.data), "Message-ID: "+k+"\r\n") {
				id = k
			}
		}
		if id == "" {
			t.Fatalf("a transaction carries no known Message-ID:\n%q", m.data)
		}
		seen[id+" "+strings.Join(m.rcpts, ",")]++
		switch strings.Join(m.rcpts, ",") {
		case "carol@c.example":
			if want := canon([]byte(contents[id])); string(m.data) != string(want) {
				t.Errorf("%s: plaintext copy\n%q\nwant\n%q", id, m.data, want)
			}
		case "alice@a.example":
			if strings.Contains(string(m.raw), marker) {
				t.Errorf("%s: the encrypted copy shows the body", id)
			}
			_, armored := pgpMIME(t, m)
			if body := gpgDecrypt(t, gh, armored); !strings.Contains(string(body), marker+"\r\n") {
				t.Errorf("%s: decrypted copy lacks the smuggled lines", id)
			}
		default:
			t.Errorf("%s: transaction to %v", id, m.rcpts)
		}
	}
	for k, n := range seen {
		if n != 1 {
			t.Errorf("%s: %d transactions", k, n)
		}
	}
}

// TestBlackBoxConnectionLimits: max_connections and command_timeout from
// the config file: idle clients fill the slots, the next one gets 421 4.7.0,
// the idle ones get 421 4.4.2 once command_timeout passes, and mail flows
// again; a client that hangs up mid-DATA has nothing relayed.
func TestBlackBoxConnectionLimits(t *testing.T) {
	t.Parallel()
	g := startHardened(t, "max_connections = 4\ncommand_timeout = \"2s\"")
	var idle []*hardConn
	for range 4 {
		h := dialHard(t, g.smtpAddr)
		h.send("", "220")
		idle = append(idle, h)
	}
	over := dialHard(t, g.smtpAddr)
	over.send("", "421 4.7.0")
	for i, h := range idle {
		if r := h.reply(); !strings.HasPrefix(r, "421 4.4.2") {
			t.Fatalf("idle connection %d: %q, want 421 4.4.2 after command_timeout", i, r)
		}
	}
	h := dialHard(t, g.smtpAddr)
	h.send("", "220")
	h.send("EHLO e2e.test\r\n", "250")
	h.send("MAIL FROM:<s@corp.example>\r\n", "250")
	h.send("RCPT TO:<carol@c.example>\r\n", "250")
	h.send("DATA\r\n", "354")
	if _, err := h.c.Write([]byte("Subject: cut\r\n\r\n" + strings.Repeat("PLAINMARKER-cut line\r\n", 5000))); err != nil {
		t.Fatal(err)
	}
	h.c.Close()
	msg := message([]string{"From: s@corp.example", "To: carol@c.example", "Subject: after"}, "after the limits")
	if err := sendGo(g.smtpAddr, "s@corp.example", []string{"carol@c.example"}, msg, nil); err != nil {
		t.Fatalf("ordinary client after the idle ones left: %v", err)
	}
	msgs := g.sink.wait(t, 1)
	if len(msgs) != 1 || !strings.Contains(string(msgs[0].data), "after the limits") {
		t.Fatalf("smtp-sink got %d transactions; want only the ordinary message, not the cut one", len(msgs))
	}
}
