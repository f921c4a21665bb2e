package main

import (
	"bytes"
	"mime/quotedprintable"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sealgate/sealgate/pgp"
)

// gatewayShaped builds what the gateway sends with header protection on
// (gateway/compose.go, RFC 9788): the original header inside, with
// hp="cipher" and HP-Outer fields, the body untouched; outside only the
// routing fields, "Subject: ..." and the RFC 3156 structure made by
// pgp.EncryptMIME.
func gatewayShaped(t testing.TB, trace string, origHeader []string, body string, to ...*pgp.Cert) []byte {
	t.Helper()
	var inner, outerH strings.Builder
	outerH.WriteString(trace)
	for _, f := range origHeader {
		name, _, _ := strings.Cut(f, ":")
		switch name {
		case "Content-Type":
			inner.WriteString(f + ";\r\n hp=\"cipher\"\r\n")
		case "Subject":
			inner.WriteString(f + "\r\n")
		default:
			inner.WriteString(f + "\r\n")
			if name == "From" || name == "To" || name == "Date" || name == "Message-ID" {
				outerH.WriteString(f + "\r\n")
				inner.WriteString("HP-Outer: " + f + "\r\n")
			}
		}
	}
	inner.WriteString("HP-Outer: Subject: ...\r\n\r\n" + body)
	boundary := pgp.NewBoundary()
	outerH.WriteString("Subject: ...\r\nMIME-Version: 1.0\r\nContent-Type: " + pgp.MIMEContentType(boundary) + "\r\n\r\n")
	var msg bytes.Buffer
	msg.WriteString(outerH.String())
	w, err := pgp.EncryptMIME(&msg, boundary, to, pgp.EncryptOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte(inner.String())); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return msg.Bytes()
}

// encryptArmored encrypts data with the gateway's pgp.Encrypt.
func encryptArmored(t testing.TB, data []byte, to ...*pgp.Cert) []byte {
	t.Helper()
	var out bytes.Buffer
	w, err := pgp.Encrypt(&out, to, pgp.EncryptOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// splitOutput cuts decrypt's output into header fields and body.
func splitOutput(t testing.TB, out string) ([]string, string) {
	t.Helper()
	head, body, ok := strings.Cut(out, "\r\n\r\n")
	if !ok {
		t.Fatalf("no end of header in output %q", out)
	}
	var fields []string
	for _, l := range strings.Split(head, "\r\n") {
		if (strings.HasPrefix(l, " ") || strings.HasPrefix(l, "\t")) && len(fields) > 0 {
			fields[len(fields)-1] += "\r\n" + l
			continue
		}
		fields = append(fields, l)
	}
	return fields, body
}

func wantFields(t testing.TB, got []string, want ...string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("header fields:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestDecryptGatewayHeaderProtection(t *testing.T) {
	t.Parallel()
	a := alice(t)
	orig := []string{"From: Bob <bob@example.net>", "To: Alice <alice@example.org>", "Cc: carol@example.org",
		"Subject: Settlement figures", "Date: Mon, 2 Mar 2026 10:00:00 +0100", "Message-ID: <m1@example.net>",
		"X-Sealmail-Signature: good", "MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit"}
	const body = "Grüße — the figure is 1.2M.\r\n"
	trace := "Received: from mx.example.net by mx.example.org; Mon, 2 Mar 2026 10:00:01 +0100\r\nX-Sealmail-Signature: good\r\n"
	msg := gatewayShaped(t, trace, orig, body, a.cert(t))
	r := a.decrypt(t, msg)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	fields, gotBody := splitOutput(t, r.stdout)
	wantFields(t, fields, "X-Sealmail-Signature: none",
		"Received: from mx.example.net by mx.example.org; Mon, 2 Mar 2026 10:00:01 +0100",
		"From: Bob <bob@example.net>", "To: Alice <alice@example.org>", "Cc: carol@example.org",
		"Subject: Settlement figures", "Date: Mon, 2 Mar 2026 10:00:00 +0100", "Message-ID: <m1@example.net>",
		"MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit")
	if gotBody != body {
		t.Errorf("body %q, want %q", gotBody, body)
	}
	if r.stderr != "sealmail: signature: none\n" {
		t.Errorf("stderr %q", r.stderr)
	}
}

func TestDecryptWithoutHeaderProtection(t *testing.T) {
	t.Parallel()
	a := alice(t)
	// RFC 3156 §4: the encrypted entity is a body part; a From inside it
	// is not promoted to the message header.
	inner := crlf("Content-Type: text/plain; charset=us-ascii", "From: mallory@example.com", "", "hello")
	msg := pgpMIMEMessage(outer, encryptArmored(t, []byte(inner), a.cert(t)))
	r := a.decrypt(t, msg)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	fields, body := splitOutput(t, r.stdout)
	wantFields(t, fields, "X-Sealmail-Signature: none", "From: Bob <bob@example.net>", "To: Alice <alice@example.org>",
		"Subject: ...", "Date: Mon, 2 Mar 2026 10:00:00 +0100", "Message-ID: <m1@example.net>", "MIME-Version: 1.0",
		"Content-Type: text/plain; charset=us-ascii")
	if body != "hello\r\n" {
		t.Errorf("body %q", body)
	}
}

// TestDecryptLegacyProtectedHeaders: Thunderbird's and Enigmail's
// protected-headers="v1" replace the outer fields they name.
func TestDecryptLegacyProtectedHeaders(t *testing.T) {
	t.Parallel()
	a := alice(t)
	inner := crlf(`Content-Type: multipart/mixed; boundary="tb"; protected-headers="v1"`, "Subject: Real subject",
		"From: Bob <bob@example.net>", "", "--tb", "Content-Type: text/plain", "", "hi", "--tb--")
	r := a.decrypt(t, pgpMIMEMessage(outer, encryptArmored(t, []byte(inner), a.cert(t))))
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	fields, _ := splitOutput(t, r.stdout)
	wantFields(t, fields, "X-Sealmail-Signature: none", "To: Alice <alice@example.org>",
		"Date: Mon, 2 Mar 2026 10:00:00 +0100", "Message-ID: <m1@example.net>", "MIME-Version: 1.0",
		`Content-Type: multipart/mixed; boundary="tb"; protected-headers="v1"`, "Subject: Real subject", "From: Bob <bob@example.net>")
}

func TestDecryptInline(t *testing.T) {
	t.Parallel()
	a := alice(t)
	text := "Grüße, inline.\r\n"
	r := a.decrypt(t, inlineMessage(outer, encryptArmored(t, []byte(text), a.cert(t))))
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	fields, body := splitOutput(t, r.stdout)
	wantFields(t, fields, "X-Sealmail-Signature: none", "From: Bob <bob@example.net>", "To: Alice <alice@example.org>",
		"Subject: ...", "Date: Mon, 2 Mar 2026 10:00:00 +0100", "Message-ID: <m1@example.net>", "MIME-Version: 1.0",
		"Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit")
	if body != text {
		t.Errorf("body %q", body)
	}
}

// TestDecryptForms: other accepted shapes of the same message.
func TestDecryptForms(t *testing.T) {
	t.Parallel()
	a := alice(t)
	entity := crlf("Content-Type: text/plain", "", "hello")
	armored := encryptArmored(t, []byte(entity), a.cert(t))
	pgpmime := pgpMIMEMessage(outer, armored)
	_, partBody, _ := strings.Cut(string(pgpmime), "MIME-Version: 1.0\r\n")
	for name, msg := range map[string]string{
		"bare LF line ends": strings.ReplaceAll(string(pgpmime), "\r\n", "\n"),
		"multipart/mixed wrapper with one part": outer + crlf(`Content-Type: multipart/mixed; boundary="w"`, "", "--w") +
			partBody + crlf("", "--w--"),
		"inline, quoted-printable": strings.Replace(string(inlineMessage(outer, quotedPrintable(t, armored))), "7bit", "quoted-printable", 1),
	} {
		r := a.decrypt(t, []byte(msg))
		if r.code != 0 || !strings.Contains(r.stdout, "hello") {
			t.Errorf("%s: exit %d, stdout %q, stderr %q", name, r.code, r.stdout, r.stderr)
		}
		if name == "bare LF line ends" && !strings.HasPrefix(r.stdout, "X-Sealmail-Signature: none\nFrom:") {
			t.Errorf("%s: output header not in LF: %q", name, r.stdout)
		}
	}
}

func quotedPrintable(t testing.TB, b []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	w := quotedprintable.NewWriter(&out)
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func TestDecryptMIMEBounds(t *testing.T) {
	t.Parallel()
	a := alice(t)
	nest := func(depth int) string {
		e := crlf("Content-Type: text/plain", "", "leaf")
		for i := range depth {
			b := "n" + strings.Repeat("x", i)
			e = crlf(`Content-Type: multipart/mixed; boundary="`+b+`"`, "", "--"+b) + e + crlf("--"+b+"--")
		}
		return e
	}
	wide := func(n int) string {
		e := crlf(`Content-Type: multipart/mixed; boundary="w"`, "")
		for range n {
			e += crlf("--w", "Content-Type: text/plain", "", "part")
		}
		return e + crlf("--w--")
	}
	for _, tt := range []struct {
		name, entity string
		ok           bool
	}{
		{"depth 10", nest(maxMIMEDepth), true},
		{"depth 11", nest(maxMIMEDepth + 1), false},
		{"100 parts", wide(maxMIMEParts), true},
		{"101 parts", wide(maxMIMEParts + 1), false},
		{"no close delimiter", crlf(`Content-Type: multipart/mixed; boundary="w"`, "", "--w", "", "part"), false},
		{"not a MIME entity", "just some text without a header\r\n", false},
	} {
		r := a.decrypt(t, pgpMIMEMessage(outer, encryptArmored(t, []byte(tt.entity), a.cert(t))))
		if (r.code == 0) != tt.ok || (!tt.ok && (r.code != 2 || r.stdout != "")) {
			t.Errorf("%s: exit %d, stderr %q", tt.name, r.code, r.stderr)
		}
	}
}

func TestDecryptKeyProblems(t *testing.T) {
	t.Parallel()
	a := alice(t)
	dir := t.TempDir()
	msg := pgpMIMEMessage(outer, encryptArmored(t, []byte(crlf("Content-Type: text/plain", "", "x")), a.cert(t)))
	wrongPass := writeFile(t, dir, "wrong", []byte("not it\n"))
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"no key at all", []string{"decrypt", "--home", dir}, "no decryption key"},
		{"public key only", []string{"decrypt", "--home", dir, "--key", filepath.Join(a.dir, publicFile)}, "no decryption key"},
		{"wrong passphrase", []string{"decrypt", "--home", a.dir, "--passphrase-file", wrongPass}, "wrong passphrase"},
		{"no passphrase, no terminal", []string{"decrypt", "--home", a.dir}, "no passphrase: no terminal to ask on; use --passphrase-file FILE"},
		{"missing --key file", []string{"decrypt", "--home", a.dir, "--key", filepath.Join(dir, "nope")}, "no such file"},
		{"stray argument", []string{"decrypt", "extra"}, "Usage:"},
	} {
		r := sealmail(t, msg, tt.args...)
		if r.code != 1 || r.stdout != "" || !strings.Contains(r.stderr, tt.want) {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want exit 1 and %q", tt.name, r.code, r.stdout, r.stderr, tt.want)
		}
	}
}
