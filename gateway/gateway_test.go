package gateway

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/emersion/go-smtp"

	"github.com/sealgate/sealgate/gateway/policy"
)

const testMsg = "From: Sender <sender@firm.example>\r\n" +
	"To: Alice <alice@client.example>\r\n" +
	"Subject: Merger terms - confidential\r\n" +
	"Message-ID: <1@firm.example>\r\n" +
	"X-Mailer: TestMailer 1.0\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"\r\n" +
	"CANARY-BODY the terms are attached.\r\n"

func TestEncryptsToRecipientKeyWithHeaderProtection(t *testing.T) {
	g := startGateway(t, nil, nil)
	alice := g.newKey(t, "alice@client.example")
	res := g.send(t, "sender@firm.example", []string{"alice@client.example"}, testMsg, nil)
	if res.dataErr != nil || len(res.rcptErrs) != 0 {
		t.Fatalf("send: %+v", res)
	}
	msgs := g.up.messages()
	if len(msgs) != 1 {
		t.Fatalf("upstream got %d messages", len(msgs))
	}
	raw := msgs[0].data
	if bytes.Contains(raw, []byte("CANARY-BODY")) || bytes.Contains(raw, []byte("Merger")) || bytes.Contains(raw, []byte("TestMailer")) {
		t.Fatal("plaintext body, subject or X-Mailer leaked to upstream")
	}
	outer, inner, ids := decryptPGPMIME(t, raw, openpgp.EntityList{alice})
	if got := outer.Get("Subject"); got != "..." {
		t.Errorf("outer Subject %q", got)
	}
	if outer.Get("From") == "" || outer.Get("To") == "" || outer.Get("Message-Id") != "<1@firm.example>" {
		t.Errorf("routing headers missing outside: %v", outer)
	}
	if !slices.Equal(ids, []uint64{encryptionKeyID(t, alice)}) {
		t.Errorf("encrypted to %x", ids)
	}
	// The inner entity is the original, byte for byte, with the RFC 9788
	// additions: hp="cipher" on Content-Type and HP-Outer fields.
	want := strings.Replace(testMsg, "Content-Type: text/plain; charset=utf-8\r\n", "Content-Type: text/plain; charset=utf-8;\r\n hp=\"cipher\"\r\n", 1)
	hdrEnd := strings.Index(want, "\r\n\r\n") + 2
	if !bytes.HasPrefix(inner, []byte(want[:hdrEnd])) {
		t.Fatalf("inner header does not start with the original fields:\n%s", inner)
	}
	if !bytes.HasSuffix(inner, []byte(want[hdrEnd:])) {
		t.Fatalf("inner body differs:\n%q", inner)
	}
	for _, f := range []string{"HP-Outer: Subject: ...\r\n", "HP-Outer: To: Alice <alice@client.example>\r\n"} {
		if !bytes.Contains(inner, []byte(f)) {
			t.Errorf("inner lacks %q", f)
		}
	}
}

func TestProtectHeadersOff(t *testing.T) {
	g := startGateway(t, nil, func(o *Options) { o.ProtectHeaders = false })
	alice := g.newKey(t, "alice@client.example")
	if res := g.send(t, "sender@firm.example", []string{"alice@client.example"}, testMsg, nil); res.dataErr != nil {
		t.Fatal(res.dataErr)
	}
	outer, inner, _ := decryptPGPMIME(t, g.up.messages()[0].data, openpgp.EntityList{alice})
	if outer.Get("Subject") != "Merger terms - confidential" || outer.Get("X-Mailer") == "" {
		t.Errorf("without protection the outer header keeps Subject and X-Mailer: %v", outer)
	}
	want := "Content-Type: text/plain; charset=utf-8\r\n\r\nCANARY-BODY the terms are attached.\r\n"
	if string(inner) != want {
		t.Errorf("inner = %q, want %q", inner, want)
	}
}

func TestMixedPoliciesAndRequiredWithoutKey(t *testing.T) {
	g := startGateway(t, []policy.Rule{
		{Match: "court.example", Encrypt: policy.Required},
		{Match: "news.example", Encrypt: policy.Never},
	}, nil)
	judge := g.newKey(t, "judge@court.example")
	g.newKey(t, "editor@news.example") // has a key, but policy says never
	msg := strings.Replace(testMsg, "To: Alice <alice@client.example>", "To: judge@court.example, clerk@court.example, editor@news.example, bob@other.example", 1)
	res := g.send(t, "sender@firm.example",
		[]string{"judge@court.example", "clerk@court.example", "editor@news.example", "bob@other.example"}, msg, nil)
	if code := smtpCode(res.rcptErrs["clerk@court.example"]); code != 550 {
		t.Fatalf("required recipient without key: RCPT reply %d (%v), want 550", code, res.rcptErrs["clerk@court.example"])
	}
	if len(res.rcptErrs) != 1 || res.dataErr != nil {
		t.Fatalf("others should go on: %+v", res)
	}
	msgs := g.up.messages()
	if len(msgs) != 2 {
		t.Fatalf("upstream got %d transactions, want 2 (pgp, plain)", len(msgs))
	}
	var enc, plain captured
	for _, m := range msgs {
		if bytes.Contains(m.data, []byte("multipart/encrypted")) {
			enc = m
		} else {
			plain = m
		}
	}
	if !slices.Equal(enc.rcpts, []string{"judge@court.example"}) {
		t.Errorf("encrypted copy to %v", enc.rcpts)
	}
	slices.Sort(plain.rcpts)
	if !slices.Equal(plain.rcpts, []string{"bob@other.example", "editor@news.example"}) {
		t.Errorf("plain copy to %v", plain.rcpts)
	}
	if !bytes.Contains(plain.data, []byte("CANARY-BODY")) {
		t.Error("plain copy lost its body")
	}
	if bytes.Contains(enc.data, []byte("CANARY-BODY")) {
		t.Error("encrypted copy leaks the body")
	}
	decryptPGPMIME(t, enc.data, openpgp.EntityList{judge})
}

func TestBccRecipientGetsOwnCopy(t *testing.T) {
	g := startGateway(t, nil, nil)
	alice := g.newKey(t, "alice@client.example")
	carol := g.newKey(t, "carol@client.example")
	bob := g.newKey(t, "bob@secret.example") // Bcc: in no header
	msg := strings.Replace(testMsg, "To: Alice <alice@client.example>", "To: Alice <alice@client.example>\r\nCc: carol@client.example\r\nBcc: bob@secret.example", 1)
	res := g.send(t, "sender@firm.example", []string{"alice@client.example", "bob@secret.example", "carol@client.example"}, msg, nil)
	if res.dataErr != nil {
		t.Fatal(res.dataErr)
	}
	msgs := g.up.messages()
	if len(msgs) != 2 {
		t.Fatalf("upstream got %d transactions, want 2", len(msgs))
	}
	bobID := encryptionKeyID(t, bob)
	for _, m := range msgs {
		// Only the header is plaintext: the armored body could hold "Bcc"
		// by chance. The decrypted parts are checked below.
		outer, _, _ := bytes.Cut(m.data, []byte("\r\n\r\n"))
		if bytes.Contains(outer, []byte("Bcc")) || bytes.Contains(outer, []byte("bob@secret.example")) && !slices.Contains(m.rcpts, "bob@secret.example") {
			t.Errorf("copy to %v names the Bcc recipient", m.rcpts)
		}
		switch {
		case slices.Contains(m.rcpts, "bob@secret.example"):
			if len(m.rcpts) != 1 {
				t.Errorf("Bcc copy shared with %v", m.rcpts)
			}
			_, inner, ids := decryptPGPMIME(t, m.data, openpgp.EntityList{bob})
			if !slices.Equal(ids, []uint64{bobID}) {
				t.Errorf("Bcc copy encrypted to %x", ids)
			}
			if bytes.Contains(inner, []byte("Bcc:")) {
				t.Error("Bcc header inside the encrypted copy")
			}
		default:
			_, inner, ids := decryptPGPMIME(t, m.data, openpgp.EntityList{alice, carol})
			if slices.Contains(ids, bobID) {
				t.Error("To/Cc copy reveals the Bcc recipient's key ID")
			}
			if bytes.Contains(inner, []byte("Bcc")) || bytes.Contains(inner, []byte("bob@secret.example")) {
				t.Error("To/Cc copy names the Bcc recipient inside the encrypted part")
			}
			if len(ids) != 2 {
				t.Errorf("To/Cc copy encrypted to %d keys, want 2", len(ids))
			}
		}
	}
}

func TestUpstreamDownIsTemporary(t *testing.T) {
	g := startGateway(t, nil, nil)
	g.newKey(t, "alice@client.example")
	g.up.srv.Close()
	res := g.send(t, "sender@firm.example", []string{"alice@client.example", "bob@other.example"}, testMsg, nil)
	if code := smtpCode(res.dataErr); code/100 != 4 {
		t.Fatalf("upstream down: DATA reply %d (%v), want 4xx", code, res.dataErr)
	}
}

func TestUpstreamRefusingOneGroupDefersWholeMessage(t *testing.T) {
	g := startGateway(t, nil, nil)
	g.newKey(t, "alice@client.example")
	g.up.failRcpt["bob@other.example"] = 550
	res := g.send(t, "sender@firm.example", []string{"alice@client.example", "bob@other.example"}, testMsg, nil)
	if code := smtpCode(res.dataErr); code/100 != 4 {
		t.Fatalf("DATA reply %d (%v), want 4xx", code, res.dataErr)
	}
	if n := len(g.up.messages()); n != 0 {
		t.Fatalf("upstream committed %d messages; the encrypted group must be aborted too", n)
	}
}

func TestUpstreamRejectingDataIsTemporary(t *testing.T) {
	g := startGateway(t, nil, nil)
	g.newKey(t, "alice@client.example")
	g.up.failData = 554
	res := g.send(t, "sender@firm.example", []string{"alice@client.example"}, testMsg, nil)
	if code := smtpCode(res.dataErr); code != 451 {
		t.Fatalf("DATA reply %d (%v), want 451", code, res.dataErr)
	}
}

func TestLookupFailureDefers(t *testing.T) {
	g := startGateway(t, []policy.Rule{{Match: "court.example", Encrypt: policy.Required}}, nil)
	g.store.Close() // the directory is gone: lookups fail
	res := g.send(t, "sender@firm.example", []string{"judge@court.example", "bob@other.example"}, testMsg, nil)
	for _, r := range []string{"judge@court.example", "bob@other.example"} {
		if code := smtpCode(res.rcptErrs[r]); code != 451 {
			t.Errorf("%s: RCPT reply %d (%v), want 451", r, code, res.rcptErrs[r])
		}
	}
	if len(g.up.messages()) != 0 {
		t.Fatal("something was relayed")
	}
}

func TestBareLineEndingsAndDotLineGiveOneWellFormedMessage(t *testing.T) {
	g := startGateway(t, nil, nil)
	alice := g.newKey(t, "alice@client.example")
	// Written raw: the client's DotWriter would otherwise repair it.
	body := "From: s@firm.example\nTo: alice@client.example, bob@other.example\nSubject: x\n\nline1\n.\nMAIL FROM:<evil@x>\r\nline3\r.\rline4\r\n"
	conn, err := net.Dial("tcp", g.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rd := bufio.NewReader(conn)
	expect := func(prefix string) {
		t.Helper()
		for {
			line, err := rd.ReadString('\n')
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if len(line) >= 4 && line[3] == '-' {
				continue
			}
			if !strings.HasPrefix(line, prefix) {
				t.Fatalf("got %q, want %s", line, prefix)
			}
			return
		}
	}
	expect("220")
	for _, step := range []struct{ cmd, want string }{
		{"EHLO c.test", "250"}, {"MAIL FROM:<s@firm.example>", "250"},
		{"RCPT TO:<alice@client.example>", "250"}, {"RCPT TO:<bob@other.example>", "250"}, {"DATA", "354"},
	} {
		fmt.Fprintf(conn, "%s\r\n", step.cmd)
		expect(step.want)
	}
	fmt.Fprintf(conn, "%s\r\n.\r\n", body)
	expect("250")
	msgs := g.up.messages()
	if len(msgs) != 2 {
		t.Fatalf("upstream got %d messages, want 2 (one per group)", len(msgs))
	}
	for _, m := range msgs {
		if i := bytes.IndexFunc(m.data, func(r rune) bool { return r == '\r' || r == '\n' }); i >= 0 {
			d := strings.ReplaceAll(string(m.data), "\r\n", "")
			if strings.ContainsAny(d, "\r\n") {
				t.Errorf("bare CR or LF in upstream copy to %v", m.rcpts)
			}
		}
		if slices.Contains(m.rcpts, "alice@client.example") {
			_, inner, _ := decryptPGPMIME(t, m.data, openpgp.EntityList{alice})
			if !bytes.Contains(inner, []byte("line1\r\n.\r\nMAIL FROM:<evil@x>\r\nline3\r\n.\r\nline4\r\n")) {
				t.Errorf("inner body not canonical: %q", inner)
			}
		} else if !bytes.Contains(m.data, []byte("line1\r\n.\r\nMAIL FROM:<evil@x>\r\n")) {
			t.Errorf("plain copy body: %q", m.data)
		}
	}
}

func TestSMTPUTF8AndEightBit(t *testing.T) {
	g := startGateway(t, nil, nil)
	alice := g.newKey(t, "alice@client.example")
	msg := "From: Jürgen <jürgen@firm.example>\r\nTo: alice@client.example, zoë@other.example\r\nSubject: Grüße\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nÄrger über Öl — 8-bit body\r\n"
	res := g.send(t, "jürgen@firm.example", []string{"alice@client.example", "zoë@other.example"}, msg, &smtp.MailOptions{UTF8: true, Body: smtp.Body8BitMIME})
	if res.dataErr != nil || len(res.rcptErrs) != 0 {
		t.Fatalf("%+v", res)
	}
	for _, m := range g.up.messages() {
		if m.from != "jürgen@firm.example" {
			t.Errorf("envelope sender %q", m.from)
		}
		if slices.Contains(m.rcpts, "alice@client.example") {
			_, inner, _ := decryptPGPMIME(t, m.data, openpgp.EntityList{alice})
			if !bytes.HasSuffix(inner, []byte("\r\n\r\nÄrger über Öl — 8-bit body\r\n")) || !bytes.Contains(inner, []byte("Subject: Grüße\r\n")) {
				t.Errorf("inner: %q", inner)
			}
		} else if !bytes.Contains(m.data, []byte("Ärger über Öl")) || !slices.Equal(m.rcpts, []string{"zoë@other.example"}) {
			t.Errorf("plain copy %v: %q", m.rcpts, m.data)
		}
	}
}

func TestClientOutsideAllowedNetworksIsRefused(t *testing.T) {
	g := startGateway(t, nil, func(o *Options) {
		o.AllowedNetworks = o.AllowedNetworks[:0:0]
		o.AllowedNetworks = append(o.AllowedNetworks, mustPrefix("10.99.0.0/16"))
	})
	conn, err := net.Dial("tcp", g.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	line, _ := bufio.NewReader(conn).ReadString('\n')
	if !strings.HasPrefix(line, "554 5.7.1") {
		t.Fatalf("greeting %q, want 554 5.7.1", line)
	}
}

func TestTooLargeIsPermanent(t *testing.T) {
	g := startGateway(t, nil, func(o *Options) { o.MaxMessageBytes = 4096 })
	big := testMsg + strings.Repeat("x", 80) + "\r\n"
	big += strings.Repeat(strings.Repeat("y", 76)+"\r\n", 100)
	res := g.send(t, "sender@firm.example", []string{"bob@other.example"}, big, nil)
	if code := smtpCode(res.dataErr); code != 552 {
		t.Fatalf("DATA reply %d (%v), want 552", code, res.dataErr)
	}
	if len(g.up.messages()) != 0 {
		t.Fatal("oversized message relayed")
	}
}

func TestLargeMessageSpoolsAndEncrypts(t *testing.T) {
	g := startGateway(t, nil, nil)
	alice := g.newKey(t, "alice@client.example")
	body := strings.Repeat("0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n", 40000) // ~3 MiB > spool memory
	res := g.send(t, "sender@firm.example", []string{"alice@client.example"}, testMsg+body, nil)
	if res.dataErr != nil {
		t.Fatal(res.dataErr)
	}
	_, inner, _ := decryptPGPMIME(t, g.up.messages()[0].data, openpgp.EntityList{alice})
	if !bytes.HasSuffix(inner, []byte("CANARY-BODY the terms are attached.\r\n"+body)) {
		t.Fatalf("large body differs (%d bytes)", len(inner))
	}
}

func TestSMTPUTF8ToUpstreamWithoutItIsPermanent(t *testing.T) {
	g := startGateway(t, nil, nil)
	g.up.srv.EnableSMTPUTF8 = false
	msg := "From: jürgen@firm.example\r\nTo: zoë@other.example\r\nSubject: x\r\n\r\nbody\r\n"
	res := g.send(t, "jürgen@firm.example", []string{"zoë@other.example"}, msg, &smtp.MailOptions{UTF8: true})
	if code := smtpCode(res.dataErr); code != 550 {
		t.Fatalf("DATA reply %d (%v), want 550 5.6.7", code, res.dataErr)
	}
	if len(g.up.messages()) != 0 {
		t.Fatal("relayed without SMTPUTF8")
	}
}
