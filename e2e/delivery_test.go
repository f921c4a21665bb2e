package e2e

import (
	"bytes"
	"fmt"
	"maps"
	"net/mail"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// message builds a CRLF message from header lines and body lines.
func message(header []string, body ...string) []byte {
	return []byte(strings.Join(header, "\r\n") + "\r\n\r\n" + strings.Join(body, "\r\n") + "\r\n")
}

// byRcpts indexes upstream transactions by their sorted recipient list.
func byRcpts(t *testing.T, msgs []upstreamMsg) map[string]upstreamMsg {
	t.Helper()
	out := map[string]upstreamMsg{}
	for _, m := range msgs {
		r := slices.Clone(m.rcpts)
		slices.Sort(r)
		out[strings.Join(r, ",")] = m
	}
	return out
}

// TestThreeImplementationsDecrypt: one message to recipients whose keys
// were made by GnuPG, Sequoia and RNP; each tool decrypts the one upstream
// copy with its own secret key to the original entity.
func TestThreeImplementationsDecrypt(t *testing.T) {
	t.Parallel()
	g := startGateway(t, "")
	gh := newGPGHome(t)
	gpgKey(t, gh, "Alice <alice@a.example>", "default", "default", "never")
	sqSecret, sqCert := sqKey(t, "Bob <bob@a.example>")
	rnpHome, rnpCert := rnpKey(t, "Carol <carol@a.example>", "carol@a.example")
	g.importKeys(t, gpgExport(t, gh, "alice@a.example"), sqCert, rnpCert)

	const marker = "PLAINMARKER-7f3a9c"
	orig := message([]string{
		"From: Sender <sender@corp.example>",
		"To: Alice <alice@a.example>, bob@a.example,",
		" Carol <carol@a.example>",
		"Subject: Q3 merger " + marker,
		"Date: Tue, 3 Nov 2026 10:00:00 +0000",
		"Message-ID: <e2e-three@corp.example>",
		"X-Case-Number: " + marker + " 4711",
		"MIME-Version: 1.0",
		"Content-Type: text/plain; charset=us-ascii; format=flowed",
		"Content-Transfer-Encoding: 7bit",
	}, "Dear all,", "", marker+" the numbers are in.", ". a line that starts with a dot", "..and two dots",
		"trailing spaces   ", "-- ", "Sender")
	rcpts := []string{"alice@a.example", "bob@a.example", "carol@a.example"}
	out, code := swaks(t, g.smtpAddr, "sender@corp.example", rcpts, orig)
	if r := swaksReplies(out); code != 0 || r["DATA"] != "250" {
		t.Fatalf("swaks exit %d, replies %v\n%s\nlog:\n%s", code, r, out, g.log)
	}

	msgs := g.sink.wait(t, 1)
	if len(msgs) != 1 {
		t.Fatalf("upstream got %d transactions, want 1 shared by the three To recipients", len(msgs))
	}
	m := msgs[0]
	if got := slices.Sorted(slices.Values(m.rcpts)); !slices.Equal(got, rcpts) || m.from != "sender@corp.example" {
		t.Errorf("upstream envelope from %q to %v, want sender@corp.example to %v", m.from, got, rcpts)
	}
	if bytes.Contains(m.raw, []byte(marker)) {
		t.Errorf("plaintext marker %q appears in the upstream bytes:\n%s", marker, m.raw)
	}
	h, armored := pgpMIME(t, m)
	if s := h.Get("Subject"); s != "..." {
		t.Errorf("outer Subject %q, want \"...\"", s)
	}
	if h.Get("Message-Id") != "<e2e-three@corp.example>" || !strings.Contains(h.Get("To"), "carol@a.example") {
		t.Errorf("outer header lost Message-ID or To: %v", h)
	}
	if !strings.Contains(string(mustRun(t, cmdOpts{stdin: armored}, "sq", "packet", "dump")), "Integrity Protected") {
		t.Errorf("payload is not integrity protected (no SEIPD packet)")
	}
	for name, decrypt := range map[string]func() []byte{
		"gpg": func() []byte { return gpgDecrypt(t, gh, armored) },
		"sq":  func() []byte { return sqDecrypt(t, sqSecret, armored) },
		"rnp": func() []byte { return rnpDecrypt(t, rnpHome, armored) },
	} {
		t.Run(name, func(t *testing.T) {
			dec := decrypt()
			checkProtected(t, orig, dec)
			if !bytes.Contains(dec, []byte("\r\nSubject: Q3 merger "+marker+"\r\n")) {
				t.Errorf("the real Subject is not inside:\n%s", dec)
			}
		})
	}
}

// TestMixedPolicy: required/never/opportunistic rules decide per recipient
// at RCPT time, and upstream gets one encrypted and one plaintext copy.
func TestMixedPolicy(t *testing.T) {
	t.Parallel()
	g := startGateway(t, `
[[policy]]
match = "a.example"
encrypt = "required"

[[policy]]
match = "b.example"
encrypt = "never"

[[policy]]
match = "*"
encrypt = "opportunistic"
`)
	gh := newGPGHome(t)
	for _, a := range []string{"alice@a.example", "bob@b.example", "dave@c.example"} {
		gpgKey(t, gh, a, "future-default", "default", "never")
	}
	g.importKeys(t, gpgExport(t, gh, "alice@a.example"), gpgExport(t, gh, "bob@b.example"), gpgExport(t, gh, "dave@c.example"))

	const marker = "PLAINMARKER-mixed-51"
	orig := message([]string{"From: sender@corp.example",
		"To: alice@a.example, nokey@a.example, bob@b.example, carol@c.example, dave@c.example",
		"Subject: mixed " + marker, "Message-ID: <e2e-mixed@corp.example>"}, "Body "+marker, ".", ". dot", "..", "end")
	out, _ := swaks(t, g.smtpAddr, "sender@corp.example",
		[]string{"alice@a.example", "nokey@a.example", "bob@b.example", "carol@c.example", "dave@c.example"}, orig)
	want := map[string]string{"alice@a.example": "250", "nokey@a.example": "550", "bob@b.example": "250",
		"carol@c.example": "250", "dave@c.example": "250", "DATA": "250"}
	if got := swaksReplies(out); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("replies %v, want %v\n%s", got, want, out)
	}
	if !strings.Contains(out, "550 5.7.1") {
		t.Errorf("the refusal is not 550 5.7.1:\n%s", out)
	}

	msgs := byRcpts(t, g.sink.wait(t, 2))
	if len(msgs) != 2 {
		t.Fatalf("upstream transactions %v, want exactly 2", msgs)
	}
	enc, ok := msgs["alice@a.example,dave@c.example"]
	if !ok {
		t.Fatalf("no encrypted transaction for alice and dave; got %v", slices.Collect(maps.Keys(msgs)))
	}
	if bytes.Contains(enc.raw, []byte(marker)) {
		t.Errorf("marker in the encrypted copy")
	}
	_, armored := pgpMIME(t, enc)
	checkProtected(t, orig, gpgDecrypt(t, gh, armored))
	wantIDs := append(gpgFields(t, gh, "alice@a.example", "sub", 4), gpgFields(t, gh, "dave@c.example", "sub", 4)...)
	if ids := sqRecipients(t, armored); !sameSet(ids, wantIDs) {
		t.Errorf("encrypted copy is for keys %v, want alice's and dave's %v (not bob's: policy never)", ids, wantIDs)
	}
	plain, ok := msgs["bob@b.example,carol@c.example"]
	if !ok {
		t.Fatalf("no plaintext transaction for bob (never) and carol (no key)")
	}
	if !bytes.Equal(plain.data, orig) {
		t.Errorf("plaintext copy differs from the original:\n%q\nwant\n%q", plain.data, orig)
	}
	if !g.waitLog("nokey@a.example") {
		t.Errorf("the log does not mention the refused recipient:\n%s", g.log)
	}
}

func sameSet(a, b []string) bool {
	return slices.Equal(slices.Sorted(slices.Values(a)), slices.Sorted(slices.Values(b)))
}

// TestBccGetsOwnCopy: a recipient named in no To/Cc field gets a copy of
// its own; the To recipient's copy names no key, address or Bcc field of
// the Bcc recipient. Once with bob in no header, once in a Bcc field.
func TestBccGetsOwnCopy(t *testing.T) {
	t.Parallel()
	alice, bob := newGPGHome(t), newGPGHome(t)
	gpgKey(t, alice, "Alice <alice@a.example>", "default", "default", "never")
	gpgKey(t, bob, "Bob <bob@b.example>", "default", "default", "never")
	keys := []string{gpgExport(t, alice, "alice@a.example"), gpgExport(t, bob, "bob@b.example")}
	aliceIDs := gpgFields(t, alice, "alice@a.example", "sub", 4)
	bobIDs := gpgFields(t, bob, "bob@b.example", "sub", 4)

	for name, extra := range map[string]string{"no header": "X-Note: none", "Bcc field": "Bcc: Bob <bob@b.example>"} {
		t.Run(name, func(t *testing.T) {
			g := startGateway(t, "")
			g.importKeys(t, keys...)
			orig := message([]string{"From: sender@corp.example", "To: Alice <alice@a.example>", extra, "Subject: board minutes"}, "Minutes.")
			out, code := swaks(t, g.smtpAddr, "sender@corp.example", []string{"alice@a.example", "bob@b.example"}, orig)
			if r := swaksReplies(out); code != 0 || r["DATA"] != "250" {
				t.Fatalf("swaks exit %d, replies %v\n%s", code, r, out)
			}
			msgs := byRcpts(t, g.sink.wait(t, 2))
			if len(msgs) != 2 {
				t.Fatalf("upstream got %d transactions, want 2 (one per copy): %v", len(msgs), slices.Collect(maps.Keys(msgs)))
			}
			for _, c := range []struct {
				rcpt, home string
				own, other []string
			}{{"alice@a.example", alice, aliceIDs, bobIDs}, {"bob@b.example", bob, bobIDs, aliceIDs}} {
				m, ok := msgs[c.rcpt]
				if !ok {
					t.Fatalf("no transaction for %s alone", c.rcpt)
				}
				_, armored := pgpMIME(t, m)
				if ids := sqRecipients(t, armored); !slices.Equal(ids, c.own) {
					t.Errorf("%s's copy is encrypted to %v, want exactly its own key %v (other key %v)", c.rcpt, ids, c.own, c.other)
				}
				dec := gpgDecrypt(t, c.home, armored)
				checkProtected(t, orig, dec)
				if all := string(m.data) + string(dec); strings.Contains(strings.ToLower(all), "bcc:") ||
					c.rcpt == "alice@a.example" && strings.Contains(all, "bob@") {
					t.Errorf("%s's copy reveals the Bcc recipient:\n%s\n%s", c.rcpt, m.data, dec)
				}
			}
		})
	}
}

// TestUpstreamDown: with upstream unreachable the client gets 451 at the
// end of DATA, and nothing is delivered later: the gateway keeps no queue.
func TestUpstreamDown(t *testing.T) {
	t.Parallel()
	up := freeAddr(t)
	g := startGatewayTo(t, up, "")
	first := message([]string{"From: s@corp.example", "To: r@c.example", "Subject: first", "Message-ID: <first@corp.example>"}, "first")
	out, code := swaks(t, g.smtpAddr, "s@corp.example", []string{"r@c.example"}, first)
	if r := swaksReplies(out); r["r@c.example"] != "250" || r["DATA"] != "451" || code == 0 {
		t.Fatalf("swaks exit %d, replies %v; want RCPT 250 and DATA 451\n%s", code, r, out)
	}
	if !g.waitLog("message not delivered") {
		t.Errorf("log does not record the failed delivery:\n%s", g.log)
	}

	s := startSink(t, up)
	time.Sleep(2 * time.Second)
	if msgs := s.messages(t); len(msgs) != 0 {
		t.Fatalf("upstream received %d messages after coming back, want 0 (no queue)", len(msgs))
	}
	second := message([]string{"From: s@corp.example", "To: r@c.example", "Subject: second", "Message-ID: <second@corp.example>"}, "second")
	out, _ = swaks(t, g.smtpAddr, "s@corp.example", []string{"r@c.example"}, second)
	if r := swaksReplies(out); r["DATA"] != "250" {
		t.Fatalf("second message: replies %v\n%s", r, out)
	}
	msgs := s.wait(t, 1)
	if len(msgs) != 1 || !bytes.Equal(msgs[0].data, second) {
		t.Fatalf("upstream has %d messages, want only the second one", len(msgs))
	}
	if m, err := mail.ReadMessage(bytes.NewReader(msgs[0].data)); err != nil || m.Header.Get("Message-Id") != "<second@corp.example>" {
		t.Errorf("delivered message is not the second one (%v)", err)
	}
}

// TestPipeliningClient: swaks with --pipeline sends MAIL, every RCPT and
// DATA in one group (RFC 2920); the gateway answers each in order and
// upstream gets the message, encrypted for the recipient with a key.
func TestPipeliningClient(t *testing.T) {
	t.Parallel()
	g := startGateway(t, "")
	gh := newGPGHome(t)
	gpgKey(t, gh, "alice@a.example", "future-default", "default", "never")
	g.importKeys(t, gpgExport(t, gh, "alice@a.example"))
	const marker = "PLAINMARKER-pipelined-77"
	orig := message([]string{"From: sender@corp.example", "To: alice@a.example, carol@c.example",
		"Subject: pipelined " + marker, "Message-ID: <e2e-pipelined@corp.example>"}, "Body "+marker)
	out, code := swaks(t, g.smtpAddr, "sender@corp.example", []string{"alice@a.example", "carol@c.example"}, orig, "--pipeline")
	if code != 0 {
		t.Fatalf("swaks --pipeline exit %d\n%s\nlog:\n%s", code, out, g.log)
	}
	// swaks shows a pipelined group as its commands first, then the replies.
	group := regexp.MustCompile(`(?m)^ -> MAIL FROM:<sender@corp\.example>\r?\n -> RCPT TO:<alice@a\.example>\r?\n -> RCPT TO:<carol@c\.example>\r?\n -> DATA\r?\n`)
	if !group.MatchString(out) {
		t.Fatalf("swaks did not pipeline MAIL, RCPT and DATA:\n%s", out)
	}
	if n := strings.Count(out, "<-  250 "); n < 5 { // EHLO, MAIL, 2 × RCPT, final dot
		t.Errorf("%d 250 replies, want at least 5:\n%s", n, out)
	}
	msgs := g.sink.wait(t, 2)
	for _, m := range msgs {
		encrypted := bytes.Contains(m.data, []byte("-----BEGIN PGP MESSAGE-----"))
		switch {
		case slices.Contains(m.rcpts, "alice@a.example") && (!encrypted || bytes.Contains(m.data, []byte(marker))):
			t.Errorf("alice's copy is not encrypted:\n%s", m.data)
		case slices.Contains(m.rcpts, "carol@c.example") && !bytes.Contains(m.data, []byte(marker)):
			t.Errorf("carol's plaintext copy lacks the body:\n%s", m.data)
		}
	}
}
