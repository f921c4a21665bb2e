package e2e

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/mail"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// TestEightBitAndSMTPUTF8: an 8-bit UTF-8 body (BODY=8BITMIME, upstream
// smtp-sink) and an SMTPUTF8 message with UTF-8 addresses and headers
// (upstream the recorder: smtp-sink offers no SMTPUTF8) both arrive and
// decrypt to the bytes sent.
func TestEightBitAndSMTPUTF8(t *testing.T) {
	t.Parallel()
	gh := newGPGHome(t)
	gpgKey(t, gh, "Alice <alice@a.example>", "future-default", "default", "never")
	gpgKey(t, gh, "Zoë <zoë@bücher.example>", "future-default", "default", "never")
	const marker = "PLAINMARKER-utf8-ß"

	t.Run("8BITMIME", func(t *testing.T) {
		g := startGateway(t, "")
		g.importKeys(t, gpgExport(t, gh, "alice@a.example"))
		orig := message([]string{"From: sender@corp.example", "To: alice@a.example", "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=",
			"MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit"},
			"Grüße aus Köln — "+marker, "日本語のテキスト ✓", "naïve café")
		if err := sendGo(g.smtpAddr, "sender@corp.example", []string{"alice@a.example"}, orig, &smtp.MailOptions{Body: smtp.Body8BitMIME}); err != nil {
			t.Fatalf("send: %v\nlog:\n%s", err, g.log)
		}
		m := g.sink.wait(t, 1)[0]
		if bytes.Contains(m.raw, []byte(marker)) {
			t.Errorf("marker in the upstream bytes")
		}
		_, armored := pgpMIME(t, m)
		checkProtected(t, orig, gpgDecrypt(t, gh, armored))
	})

	t.Run("SMTPUTF8", func(t *testing.T) {
		rec := startRecorder(t)
		g := startGatewayTo(t, rec.addr, "")
		g.importKeys(t, gpgExport(t, gh, "zoë@bücher.example"))
		orig := message([]string{"From: Jörg Müller <jörg@firma.example>", "To: Zoë <zoë@bücher.example>",
			"Subject: Grüße " + marker, "MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8",
			"Content-Transfer-Encoding: 8bit"}, "Liebe Zoë,", "Grüße — "+marker)
		err := sendGo(g.smtpAddr, "jörg@firma.example", []string{"zoë@bücher.example"}, orig,
			&smtp.MailOptions{UTF8: true, Body: smtp.Body8BitMIME})
		if err != nil {
			t.Fatalf("send: %v\nlog:\n%s", err, g.log)
		}
		msgs := rec.messages()
		if len(msgs) != 1 {
			t.Fatalf("upstream got %d transactions, want 1", len(msgs))
		}
		m := msgs[0]
		if m.from != "jörg@firma.example" || len(m.rcpts) != 1 || m.rcpts[0] != "zoë@bücher.example" || !strings.Contains(m.mailArgs, "SMTPUTF8") {
			t.Errorf("upstream envelope %q %q %v, want the UTF-8 addresses with SMTPUTF8", m.mailArgs, m.from, m.rcpts)
		}
		if bytes.Contains(m.raw, []byte(marker)) {
			t.Errorf("marker in the upstream bytes")
		}
		h, armored := pgpMIME(t, m)
		if h.Get("To") != "Zoë <zoë@bücher.example>" || h.Get("Subject") != "..." {
			t.Errorf("outer To %q Subject %q", h.Get("To"), h.Get("Subject"))
		}
		checkProtected(t, orig, gpgDecrypt(t, gh, armored))
	})
}

// canon is what a message means once bare CR and bare LF count as line
// ends: every line end becomes CRLF.
func canon(b []byte) []byte {
	b = bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n"))
	b = bytes.ReplaceAll(b, []byte("\r"), []byte("\n"))
	return bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n"))
}

// rawSMTP speaks SMTP over a bare TCP socket so that DATA goes out exactly
// as given (it must end with CRLF.CRLF); it returns the reply to DATA's end.
func rawSMTP(t *testing.T, addr, from string, rcpts []string, wire []byte) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Minute))
	br := bufio.NewReader(c)
	reply := func() string {
		var last string
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("reading reply: %v", err)
			}
			if last = strings.TrimRight(line, "\r\n"); len(last) < 4 || last[3] != '-' {
				return last
			}
		}
	}
	expect := func(cmd, code string) {
		if cmd != "" {
			fmt.Fprintf(c, "%s\r\n", cmd)
		}
		if r := reply(); !strings.HasPrefix(r, code) {
			t.Fatalf("%q: reply %q, want %s", cmd, r, code)
		}
	}
	expect("", "220")
	expect("EHLO e2e.test", "250")
	expect("MAIL FROM:<"+from+">", "250")
	for _, r := range rcpts {
		expect("RCPT TO:<"+r+">", "250")
	}
	expect("DATA", "354")
	if _, err := c.Write(wire); err != nil {
		t.Fatal(err)
	}
	r := reply()
	expect("QUIT", "221")
	return r
}

// TestBareLFSmuggling sends bare LF, bare CR and lone-dot lines ended by
// bare LF, with SMTP commands after them, over a raw socket. Each group
// (encrypted for alice, plaintext for carol) must be exactly one upstream
// message holding all of it, with every line end CRLF. The recorder shows
// the exact bytes; smtp-sink shows how a Postfix parser splits them.
func TestBareLFSmuggling(t *testing.T) {
	t.Parallel()
	gh := newGPGHome(t)
	gpgKey(t, gh, "alice@a.example", "future-default", "default", "never")
	const marker = "PLAINMARKER-smuggled"
	header := "From: s@corp.example\r\nTo: alice@a.example, carol@c.example\r\nSubject: lf\r\n\r\n"
	smuggle := "first line\n.\nMAIL FROM:<evil@attacker.example>\nRCPT TO:<victim@c.example>\nDATA\n" + marker + "\n.\r\nQUIT\r\n"
	// Content as meant, and on the wire: a line that starts after CRLF with
	// a dot is dot-stuffed, as any client must; after a bare LF it is not.
	content := []byte(header + smuggle + ".\nbare\rCR\r\nlast line\r\n")
	wire := []byte(header + smuggle + "..\nbare\rCR\r\nlast line\r\n.\r\n")

	for _, upstream := range []string{"recorder", "smtp-sink"} {
		t.Run(upstream, func(t *testing.T) {
			var g *gateway
			var rec *recorder
			if upstream == "recorder" {
				rec = startRecorder(t)
				g = startGatewayTo(t, rec.addr, "")
			} else {
				g = startGateway(t, "")
			}
			g.importKeys(t, gpgExport(t, gh, "alice@a.example"))
			if r := rawSMTP(t, g.smtpAddr, "s@corp.example", []string{"alice@a.example", "carol@c.example"}, wire); !strings.HasPrefix(r, "250") {
				t.Fatalf("end of DATA: %q, want 250\nlog:\n%s", r, g.log)
			}
			var msgs []upstreamMsg
			if rec != nil {
				time.Sleep(300 * time.Millisecond) // a smuggled extra transaction would arrive now
				msgs = rec.messages()
			} else {
				msgs = g.sink.wait(t, 2)
			}
			groups := byRcpts(t, msgs)
			if len(msgs) != 2 || len(groups) != 2 {
				t.Fatalf("upstream got %d transactions %v, want exactly 2 (one per group)", len(msgs), msgs)
			}
			for _, m := range msgs {
				if m.from != "s@corp.example" {
					t.Errorf("upstream transaction from %q: smuggled", m.from)
				}
				if rec != nil {
					for i, c := range m.data {
						if c == '\n' && (i == 0 || m.data[i-1] != '\r') || c == '\r' && (i+1 == len(m.data) || m.data[i+1] != '\n') {
							t.Fatalf("bare %q at byte %d of the copy to %v: %q", c, i, m.rcpts, m.data[max(0, i-20):min(len(m.data), i+20)])
						}
					}
				}
			}
			plain, enc := groups["carol@c.example"], groups["alice@a.example"]
			if !bytes.Equal(plain.data, canon(content)) {
				t.Errorf("plaintext copy:\n%q\nwant\n%q", plain.data, canon(content))
			}
			_, armored := pgpMIME(t, enc)
			_, body := splitEntity(t, gpgDecrypt(t, gh, armored))
			if _, want := splitEntity(t, canon(content)); !bytes.Equal(body, want) {
				t.Errorf("decrypted body:\n%q\nwant\n%q", body, want)
			}
		})
	}
}

// TestLargeAttachment: 20 MiB of random data, base64 in multipart/mixed,
// decrypts to the same bytes, and the gateway's peak RSS stays bounded.
func TestLargeAttachment(t *testing.T) {
	t.Parallel()
	g := startGateway(t, "")
	gh := newGPGHome(t)
	gpgKey(t, gh, "Alice <alice@a.example>", "default", "default", "never")
	g.importKeys(t, gpgExport(t, gh, "alice@a.example"))

	att := make([]byte, 20<<20)
	_, _ = rand.NewChaCha8([32]byte{'e', '2', 'e'}).Read(att)
	enc := base64.StdEncoding.EncodeToString(att)
	var b strings.Builder
	b.WriteString("From: sender@corp.example\r\nTo: alice@a.example\r\nSubject: large\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=\"e2e-b1\"\r\n\r\n--e2e-b1\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n" +
		"--e2e-b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n" +
		"Content-Disposition: attachment; filename=\"data.bin\"\r\n\r\n")
	for i := 0; i < len(enc); i += 76 {
		b.WriteString(enc[i:min(i+76, len(enc))] + "\r\n")
	}
	b.WriteString("--e2e-b1--\r\n")
	orig := []byte(b.String())

	if err := sendGo(g.smtpAddr, "sender@corp.example", []string{"alice@a.example"}, orig, nil); err != nil {
		t.Fatalf("send: %v\nlog:\n%s", err, g.log)
	}
	hwm := peakRSS(t, g.proc.cmd.Process.Pid)
	t.Logf("peak RSS for 20 MiB message: %d MiB", hwm>>20)
	if hwm > 150<<20 {
		t.Errorf("peak RSS %d MiB, want under 150 MiB", hwm>>20)
	}

	_, armored := pgpMIME(t, g.sink.wait(t, 1)[0])
	dec := gpgDecrypt(t, gh, armored)
	checkProtected(t, orig, dec)
	msg, err := mail.ReadMessage(bytes.NewReader(dec))
	if err != nil {
		t.Fatal(err)
	}
	parts := mimeParts(t, msg, "multipart/mixed")
	if len(parts) != 2 {
		t.Fatalf("decrypted message has %d parts, want 2", len(parts))
	}
	got, err := io.ReadAll(base64.NewDecoder(base64.StdEncoding, bytes.NewReader(parts[1].body)))
	if err != nil || !bytes.Equal(got, att) {
		t.Errorf("attachment differs after decryption (%d bytes, %v)", len(got), err)
	}
}

// peakRSS reads VmHWM from /proc/PID/status, in bytes.
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "VmHWM:" && f[2] == "kB" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}
