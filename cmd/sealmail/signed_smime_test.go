package main

// S/MIME signatures inside the encryption (Outlook signs, then encrypts)
// and around it (encrypt, then sign): openssl cms -sign writes opaque
// signed-data and multipart/signed, gpgsm a detached signature, openssl
// cms -encrypt -aes256 encrypts to alice, and sealmail verifies against
// --trust.

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
)

const smimeSignerAddress = "bob@example.net" // the From of outer

// issueSigner makes a signing certificate for address with the CA of p,
// as an admin does with openssl; it returns the certificate and key files.
func issueSigner(t testing.TB, p *smimePKI, address string) (cert, key string) {
	t.Helper()
	name := strings.ReplaceAll(address, "@", "_")
	writeFile(t, p.dir, name+".cnf", []byte(strings.Join([]string{
		"subjectAltName=email:" + address, "keyUsage=critical,digitalSignature,nonRepudiation",
		"extendedKeyUsage=emailProtection", "basicConstraints=CA:FALSE"}, "\n")+"\n"))
	tool(t, p.dir, nil, nil, "openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", name+".key",
		"-out", name+".csr", "-subj", "/CN=Signer/emailAddress="+address)
	tool(t, p.dir, nil, nil, "openssl", "x509", "-req", "-in", name+".csr", "-CA", "ca.pem", "-CAkey", "ca.key",
		"-CAcreateserial", "-days", "30", "-extfile", name+".cnf", "-out", name+".pem")
	return filepath.Join(p.dir, name+".pem"), filepath.Join(p.dir, name+".key")
}

// smimeSign runs openssl cms -sign over entity; extra chooses the form.
func smimeSign(t testing.TB, dir, cert, key, entity string, extra ...string) []byte {
	t.Helper()
	in := writeFile(t, t.TempDir(), "entity.eml", []byte(entity))
	return tool(t, dir, nil, nil, "openssl", append([]string{"cms", "-sign", "-in", in, "-signer", cert, "-inkey", key}, extra...)...)
}

// smimeEncrypt encrypts a MIME entity to alice with openssl cms -encrypt
// -aes256 and wraps the DER under header.
func smimeEncrypt(t testing.TB, p *smimePKI, header string, entity []byte) []byte {
	t.Helper()
	in := writeFile(t, t.TempDir(), "signed.eml", entity)
	der := tool(t, p.dir, nil, nil, "openssl", "cms", "-encrypt", "-aes256", "-in", in, "-outform", "DER", p.certPath)
	return smimeMessage(header, der)
}

// opaqueEntity wraps SignedData DER as application/pkcs7-mime.
func opaqueEntity(der []byte) []byte {
	return []byte(crlf(`Content-Type: application/pkcs7-mime; smime-type=signed-data; name="smime.p7m"`,
		"Content-Transfer-Encoding: base64", `Content-Disposition: attachment; filename="smime.p7m"`, "") + base64Lines(der))
}

func TestSMIMESignedInsideEncryption(t *testing.T) {
	t.Parallel()
	p := newSMIMEPKI(t)
	bobCert, bobKey := issueSigner(t, p, smimeSignerAddress)
	other := newSMIMEPKI(t) // another CA, not trusted
	strangerCert, strangerKey := issueSigner(t, other, smimeSignerAddress)

	entity := crlf("Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit", "", "Signed by Bob, then encrypted.")
	const body = "Signed by Bob, then encrypted.\r\n"
	opaque := smimeSign(t, p.dir, bobCert, bobKey, entity, "-nodetach")
	detached := smimeSign(t, p.dir, bobCert, bobKey, entity) // multipart/signed, application/x-pkcs7-signature
	opaqueDER := smimeSign(t, p.dir, bobCert, bobKey, entity, "-nodetach", "-binary", "-outform", "DER")
	tamperedOpaque := opaqueEntity(bytes.Replace(opaqueDER, []byte("Signed by Bob"), []byte("Signed by Rob"), 1))
	tamperedDetached := bytes.Replace(detached, []byte("Signed by Bob"), []byte("Signed by Rob"), 1)
	stranger := smimeSign(t, other.dir, strangerCert, strangerKey, entity, "-nodetach")
	fromCarol := strings.Replace(outer, "Bob <bob@example.net>", "Carol <carol@example.net>", 1)
	trust := []string{"--trust", p.caPath}

	for _, tt := range []struct {
		name    string
		msg     []byte
		args    []string
		verdict string
		body    string
		note    string
	}{
		{"opaque, good", smimeEncrypt(t, p, outer, opaque), trust, "good", body, ""},
		{"detached, good", smimeEncrypt(t, p, outer, detached), trust, "good", body, ""},
		{"opaque, binary DER, good", smimeEncrypt(t, p, outer, opaqueEntity(opaqueDER)), trust, "good", body, ""},
		{"opaque, no --trust", smimeEncrypt(t, p, outer, opaque), nil, "unknown-key", body, "certificate signed by unknown authority"},
		{"opaque, trusted CA is another", smimeEncrypt(t, p, outer, opaque), []string{"--trust", other.caPath}, "unknown-key", body, "unknown authority"},
		{"signer from an untrusted CA", smimeEncrypt(t, p, outer, stranger), trust, "unknown-key", body, "unknown authority"},
		{"opaque, tampered", smimeEncrypt(t, p, outer, tamperedOpaque), trust, "bad", "Signed by Rob, then encrypted.\r\n",
			"S/MIME signature: bad: smime: bad signature: the content does not match the signed digest"},
		{"detached, tampered", smimeEncrypt(t, p, outer, tamperedDetached), trust, "bad", "Signed by Rob, then encrypted.\r\n", "digest"},
		{"opaque, signer is not From", smimeEncrypt(t, p, fromCarol, opaque), trust, "mismatch", body,
			"S/MIME signature: mismatch: signed by bob@example.net, not by the From address carol@example.net"},
		{"detached, signer is not From", smimeEncrypt(t, p, fromCarol, detached), trust, "mismatch", body, "carol@example.net"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := p.decrypt(t, tt.msg, p.pemPath, tt.args...)
			checkVerdict(t, r, tt.verdict, tt.body, tt.note)
		})
	}
}

// checkVerdict checks decrypt's verdict header and stderr, the signer
// field, the body and the stderr note.
func checkVerdict(t *testing.T, r result, verdict, body, note string) {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	fields, gotBody := splitOutput(t, toCRLF(r.stdout))
	if fields[0] != "X-Sealmail-Signature: "+verdict || !strings.HasPrefix(r.stderr, "sealmail: signature: "+verdict) {
		t.Errorf("verdict %q, stderr %q; want %s", fields[0], r.stderr, verdict)
	}
	hasSigner := len(fields) > 1 && strings.HasPrefix(fields[1], "X-Sealmail-Signer: ")
	if want := verdict != "unknown-key" && verdict != "none"; hasSigner != want {
		t.Errorf("X-Sealmail-Signer present %v, want %v: %q", hasSigner, want, fields)
	}
	if strings.ReplaceAll(gotBody, "\r\n", "\n") != strings.ReplaceAll(body, "\r\n", "\n") {
		t.Errorf("body %q, want %q", gotBody, body)
	}
	if note != "" && !strings.Contains(r.stderr, note) {
		t.Errorf("stderr %q lacks %q", r.stderr, note)
	}
	if strings.Contains(r.stdout, "pkcs7-signature") || strings.Contains(r.stdout, "signed-data") {
		t.Errorf("the signature wrapper is in the output: %q", r.stdout)
	}
}

// TestSMIMESignedAroundEncryption: encrypt, then sign (RFC 8551 §3.7);
// openssl writes the whole message.
func TestSMIMESignedAroundEncryption(t *testing.T) {
	t.Parallel()
	p := newSMIMEPKI(t)
	bobCert, bobKey := issueSigner(t, p, smimeSignerAddress)
	in := writeFile(t, p.dir, "entity.txt", []byte(crlf("Content-Type: text/plain", "", "encrypted, then signed")))
	encrypted := tool(t, p.dir, nil, nil, "openssl", "cms", "-encrypt", "-aes256", "-in", in, p.certPath)
	whole := smimeSign(t, p.dir, bobCert, bobKey, string(encrypted), "-from", smimeSignerAddress, "-to", smimeAddress, "-subject", "signed around")
	opaque := smimeSign(t, p.dir, bobCert, bobKey, string(encrypted), "-nodetach", "-from", smimeSignerAddress, "-to", smimeAddress)

	for name, msg := range map[string][]byte{"multipart/signed": whole, "opaque signed-data": opaque} {
		r := p.decrypt(t, msg, p.pemPath, "--trust", p.caPath)
		checkVerdict(t, r, "good", "encrypted, then signed\r\n", "")
		r = p.decrypt(t, msg, p.pemPath)
		checkVerdict(t, r, "unknown-key", "encrypted, then signed\r\n", "signature around the encryption (S/MIME signature): unknown-key")
		if name == "multipart/signed" && !strings.Contains(r.stdout, "Subject: signed around") {
			t.Errorf("outer header lost: %q", r.stdout)
		}
	}
	// Tampering with the signed ciphertext: the signature is bad; the
	// message still decrypts (the change is in a header of the signed
	// part, where decryption does not see it).
	tampered := bytes.Replace(whole, []byte("Content-Disposition: attachment"), []byte("Content-Disposition: inline"), 1)
	if bytes.Equal(tampered, whole) {
		t.Fatal("nothing to tamper with")
	}
	checkVerdict(t, p.decrypt(t, tampered, p.pemPath, "--trust", p.caPath), "bad", "encrypted, then signed\r\n", "digest")
}

// TestSMIMEGpgsmDetachedSignature: gpgsm -b signs the part; the
// multipart/signed uses the RFC 8551 protocol name
// application/pkcs7-signature, as Outlook writes it.
func TestSMIMEGpgsmDetachedSignature(t *testing.T) {
	t.Parallel()
	p := newSMIMEPKI(t)
	bobCert, bobKey := issueSigner(t, p, smimeSignerAddress)
	part := crlf("Content-Type: text/plain", "", "signed with gpgsm")
	home := gpgsmSignerHome(t, p, bobCert, bobKey)
	in := writeFile(t, home.dir, "part.txt", []byte(part))
	sigPath := filepath.Join(home.dir, "part.p7s")
	tool(t, home.dir, []byte("test\n"), home.env, "gpgsm", "--batch", "--disable-dirmngr", "--disable-crl-checks",
		"--pinentry-mode", "loopback", "--passphrase-fd", "0", "-u", smimeSignerAddress, "-b", "-o", sigPath, in)
	entity := crlf(`Content-Type: multipart/signed; protocol="application/pkcs7-signature"; micalg=sha-256; boundary="gs"`, "",
		"--gs") + part + crlf("", "--gs", `Content-Type: application/pkcs7-signature; name="smime.p7s"`,
		"Content-Transfer-Encoding: base64", "") + base64Lines(readFile(t, sigPath)) + crlf("--gs--")
	r := p.decrypt(t, smimeEncrypt(t, p, outer, []byte(entity)), p.pemPath, "--trust", p.caPath)
	checkVerdict(t, r, "good", "signed with gpgsm\r\n", "")
}

type gpgsmHomeDir struct {
	dir string
	env []string
}

// gpgsmSignerHome imports the signer's key (as legacy PKCS#12, which
// gpgsm 2.2 reads) and trusts p's CA.
func gpgsmSignerHome(t *testing.T, p *smimePKI, cert, key string) gpgsmHomeDir {
	t.Helper()
	h := gpgsmHomeDir{dir: gpgHome(t)}
	h.env = []string{"GNUPGHOME=" + h.dir}
	p12 := filepath.Join(h.dir, "signer.p12")
	tool(t, p.dir, nil, nil, "openssl", "pkcs12", "-export", "-inkey", key, "-in", cert, "-certfile", p.caPath,
		"-out", p12, "-passout", "pass:test", "-keypbe", "PBE-SHA1-3DES", "-certpbe", "PBE-SHA1-3DES", "-macalg", "sha1")
	tool(t, h.dir, []byte("test\n"), h.env, "gpgsm", "--batch", "--disable-dirmngr", "--pinentry-mode", "loopback",
		"--passphrase-fd", "0", "--import", p12)
	fpr := tool(t, h.dir, nil, nil, "openssl", "x509", "-in", p.caPath, "-noout", "-fingerprint", "-sha1")
	_, f, _ := strings.Cut(strings.TrimSpace(string(fpr)), "=")
	writeFile(t, h.dir, "trustlist.txt", []byte(f+" S relax\n"))
	return h
}

// TestSMIMESignedMalformedIsRefused: opaque signed-data whose content
// cannot be read is a malformed message: refused, nothing on stdout.
func TestSMIMESignedMalformedIsRefused(t *testing.T) {
	t.Parallel()
	p := newSMIMEPKI(t)
	for name, entity := range map[string][]byte{
		"not DER":   opaqueEntity([]byte("this is not a SignedData")),
		"truncated": opaqueEntity([]byte{0x30, 0x80, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02}),
	} {
		r := p.decrypt(t, smimeEncrypt(t, p, outer, entity), p.pemPath)
		if r.code != 2 || r.stdout != "" || r.stderr != "sealmail: message cannot be decrypted\n" {
			t.Errorf("%s: exit %d, stdout %q, stderr %q", name, r.code, r.stdout, r.stderr)
		}
	}
}

func TestTrustFileProblems(t *testing.T) {
	t.Parallel()
	p := newSMIMEPKI(t)
	msg := smimeEncrypt(t, p, outer, []byte(crlf("Content-Type: text/plain", "", "x")))
	for name, tt := range map[string]struct{ file, want string }{
		"missing":       {filepath.Join(p.dir, "nope.pem"), "no such file"},
		"holds a key":   {p.pemPath, "private key"},
		"holds no cert": {writeFile(t, p.dir, "empty.pem", []byte("nothing\n")), "not an X.509 certificate"},
	} {
		r := p.decrypt(t, msg, p.pemPath, "--trust", tt.file)
		if r.code != 1 || r.stdout != "" || !strings.Contains(r.stderr, tt.want) {
			t.Errorf("%s: exit %d, stdout %q, stderr %q", name, r.code, r.stdout, r.stderr)
		}
	}
}
