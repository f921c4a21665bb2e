package main

// PGP/MIME signatures inside the encryption (RFC 3156 §6.1, the nested
// method): gpg signs the body part with --detach-sign --armor, the test
// builds the multipart/signed around it as Enigmail and Thunderbird do,
// and gpg encrypts the whole entity to the sealmail key.

import (
	"strings"
	"testing"
)

// gina is a gpg home with alice's public key and Gina's signing key, and
// Gina's public key as a file.
type gina struct {
	home, pub string
}

const ginaAddress = "gina@example.net"

func newGina(t *testing.T, a *home) *gina {
	t.Helper()
	g := &gina{home: gpgHome(t)}
	gpg(t, g.home, a.public(t), "--import")
	gpg(t, g.home, nil, "--passphrase", "", "--quick-gen-key", "Gina <"+ginaAddress+">", "future-default", "default", "never")
	g.pub = writeFile(t, t.TempDir(), "gina.asc", gpg(t, g.home, nil, "--armor", "--export", ginaAddress))
	return g
}

// sign returns an RFC 3156 §5 multipart/signed entity: part exactly as
// it appears between the boundaries, and gpg's detached signature over it.
func (g *gina) sign(t *testing.T, part string) string {
	t.Helper()
	sig := gpg(t, g.home, []byte(part), "--passphrase", "", "--local-user", ginaAddress, "--detach-sign", "--armor", "--digest-algo", "SHA256")
	return crlf(`Content-Type: multipart/signed; micalg=pgp-sha256;`,
		` protocol="application/pgp-signature"; boundary="sig-b"`, "",
		"This is an OpenPGP/MIME signed message (RFC 4880 and 3156)", "--sig-b") +
		part + crlf("", "--sig-b", `Content-Type: application/pgp-signature; name="signature.asc"`,
		"Content-Description: OpenPGP digital signature", `Content-Disposition: attachment; filename="signature.asc"`, "") +
		toCRLF(string(sig)) + crlf("--sig-b--", "")
}

// encrypt encrypts entity to alice with gpg (no combined signature unless
// signToo) and wraps it as PGP/MIME under header.
func (g *gina) encrypt(t *testing.T, header, entity string, signToo bool) []byte {
	t.Helper()
	args := []string{"--armor", "--recipient", "alice@example.org"}
	if signToo {
		args = append(args, "--passphrase", "", "--local-user", ginaAddress, "--sign")
	}
	return pgpMIMEMessage(header, gpg(t, g.home, []byte(entity), append(args, "--encrypt")...))
}

var fromGina = strings.Replace(outer, "Bob <bob@example.net>", "Gina <"+ginaAddress+">", 1)

func TestPGPMIMENestedSignature(t *testing.T) {
	t.Parallel()
	a := alice(t)
	g := newGina(t, a)
	part := crlf("Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit", "", "Grüße, signed by Gina.")
	signed := g.sign(t, part)
	tampered := strings.Replace(signed, "signed by Gina", "signed by Gin4", 1)
	protected := g.sign(t, crlf(`Content-Type: text/plain; charset=utf-8; hp="cipher"`, "From: Gina <"+ginaAddress+">",
		"Subject: the real subject", "X-Sealmail-Signature: good", "", "protected"))
	wrapped := crlf(`Content-Type: multipart/mixed; boundary="mix"`, "", "--mix", "Content-Type: text/plain", "",
		"Prepended by the attacker.", "--mix") + signed + crlf("--mix--")

	for _, tt := range []struct {
		name, header, entity string
		signToo, key         bool
		verdict, body        string
		note                 string
	}{
		{name: "good", header: fromGina, entity: signed, key: true, verdict: "good", body: "Grüße, signed by Gina.\r\n"},
		{name: "good, LF line ends inside the encryption", header: fromGina, entity: strings.ReplaceAll(signed, "\r\n", "\n"),
			key: true, verdict: "good", body: "Grüße, signed by Gina.\n"},
		{name: "good, combined signature too", header: fromGina, entity: signed, signToo: true, key: true, verdict: "good",
			body: "Grüße, signed by Gina.\r\n"},
		{name: "tampered signed part", header: fromGina, entity: tampered, key: true, verdict: "bad",
			body: "Grüße, signed by Gin4.\r\n", note: "PGP/MIME signature: bad: endpoint: openpgp: invalid signature"},
		{name: "signer unknown", header: fromGina, entity: signed, verdict: "unknown-key", body: "Grüße, signed by Gina.\r\n"},
		{name: "signer is not From", header: outer, entity: signed, key: true, verdict: "mismatch", body: "Grüße, signed by Gina.\r\n",
			note: "PGP/MIME signature: mismatch: signed by gina@example.net, not by the From address bob@example.net"},
		{name: "protected From inside the signed part", header: outer, entity: protected, key: true, verdict: "good", body: "protected\r\n"},
		// reliability.md P2 (MIME wrapping): a signed part that is not
		// the root vouches for nothing shown beside it.
		{name: "signed part beside attacker text", header: fromGina, entity: wrapped, key: true, verdict: "none"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var extra []string
			if tt.key {
				extra = []string{"--key", g.pub}
			}
			r := a.decrypt(t, g.encrypt(t, tt.header, tt.entity, tt.signToo), extra...)
			if r.code != 0 {
				t.Fatalf("exit %d: %s", r.code, r.stderr)
			}
			fields, body := splitOutput(t, toCRLF(r.stdout))
			if fields[0] != "X-Sealmail-Signature: "+tt.verdict || !strings.HasPrefix(r.stderr, "sealmail: signature: "+tt.verdict) {
				t.Errorf("verdict %q, stderr %q; want %s", fields[0], r.stderr, tt.verdict)
			}
			hasSigner := len(fields) > 1 && strings.HasPrefix(fields[1], "X-Sealmail-Signer: ")
			if wantSigner := tt.verdict != "unknown-key" && tt.verdict != "none"; hasSigner != wantSigner {
				t.Errorf("X-Sealmail-Signer present %v, want %v: %q", hasSigner, wantSigner, fields)
			}
			if tt.body != "" && strings.ReplaceAll(body, "\r\n", "\n") != strings.ReplaceAll(tt.body, "\r\n", "\n") {
				t.Errorf("body %q, want %q", body, tt.body)
			}
			if tt.note != "" && !strings.Contains(r.stderr, "\nsealmail: "+tt.note) {
				t.Errorf("stderr %q lacks %q", r.stderr, tt.note)
			}
			if strings.Contains(r.stdout, "multipart/signed") || strings.Count(r.stdout, "X-Sealmail-Signature") != 1 {
				if tt.verdict != "none" {
					t.Errorf("output keeps the signature wrapper or a forged verdict: %q", r.stdout)
				}
			}
		})
	}
}

// TestPGPMIMENestedHeaders: the output is the message with the signed
// part as its body; the part's Content-* fields replace the outer ones.
func TestPGPMIMENestedHeaders(t *testing.T) {
	t.Parallel()
	a := alice(t)
	g := newGina(t, a)
	msg := g.encrypt(t, fromGina, g.sign(t, crlf("Content-Type: text/plain; charset=us-ascii", "", "hello")), false)
	r := a.decrypt(t, msg, "--key", g.pub)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	fields, body := splitOutput(t, r.stdout)
	if len(fields) < 2 {
		t.Fatalf("fields %q", fields)
	}
	wantFields(t, fields[2:], "From: Gina <gina@example.net>", "To: Alice <alice@example.org>",
		"Subject: ...", "Date: Mon, 2 Mar 2026 10:00:00 +0100", "Message-ID: <m1@example.net>", "MIME-Version: 1.0",
		"Content-Type: text/plain; charset=us-ascii")
	if body != "hello\r\n" {
		t.Errorf("body %q", body)
	}
}

// TestPGPMIMENestedMalformed: a multipart/signed whose content cannot be
// told is refused like any malformed message, with nothing on stdout.
func TestPGPMIMENestedMalformed(t *testing.T) {
	t.Parallel()
	a := alice(t)
	g := newGina(t, a)
	signed := g.sign(t, crlf("Content-Type: text/plain", "", "x"))
	for name, entity := range map[string]string{
		"three parts":         strings.Replace(signed, "--sig-b--", "--sig-b\r\nContent-Type: text/plain\r\n\r\nextra\r\n--sig-b--", 1),
		"second part is text": strings.Replace(signed, "Content-Type: application/pgp-signature", "Content-Type: text/plain", 1),
	} {
		r := a.decrypt(t, g.encrypt(t, fromGina, entity, false), "--key", g.pub)
		if r.code != 2 || r.stdout != "" {
			t.Errorf("%s: exit %d, stdout %q", name, r.code, r.stdout)
		}
	}
}

func TestRawParts(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name, body string
		want       []string
		ok         bool
	}{
		{"CRLF", "pre\r\n--b\r\none\r\n--b\r\ntwo\r\n--b--\r\nepilogue", []string{"one", "two"}, true},
		{"LF", "--b\none\n\n--b\ntwo\n--b--\n", []string{"one\n", "two"}, true},
		{"white space after the boundary", "--b \t\r\none\r\n--b\r\ntwo\r\n--b-- \r\n", []string{"one", "two"}, true},
		{"a longer boundary is not ours", "--b\r\none\r\n--bx\r\nstill one\r\n--b\r\ntwo\r\n--b--", []string{"one\r\n--bx\r\nstill one", "two"}, true},
		{"empty part", "--b\r\n--b\r\ntwo\r\n--b--", []string{"", "two"}, true},
		{"no close delimiter", "--b\r\none\r\n--b\r\ntwo\r\n", nil, false},
		{"too many parts", "--b\r\n1\r\n--b\r\n2\r\n--b\r\n3\r\n--b--", nil, false},
		{"close first", "--b--\r\n", nil, false},
	} {
		got, err := rawParts([]byte(tt.body), "b", 2)
		if (err == nil) != tt.ok {
			t.Errorf("%s: err %v", tt.name, err)
			continue
		}
		if strings.Join(toStrings(got), "|") != strings.Join(tt.want, "|") {
			t.Errorf("%s: parts %q, want %q", tt.name, got, tt.want)
		}
	}
	if got := string(canonicalCRLF([]byte("a\nb\r\nc\n"))); got != "a\r\nb\r\nc\r\n" {
		t.Errorf("canonicalCRLF: %q", got)
	}
}

func toStrings(b [][]byte) []string {
	out := make([]string, len(b))
	for i := range b {
		out[i] = string(b[i])
	}
	return out
}
