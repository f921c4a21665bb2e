package main

// S/MIME: what OpenSSL (`openssl cms -encrypt`) and GnuPG's gpgsm write
// decrypts with the identity as PEM key and certificate or as PKCS#12.

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const smimeAddress = "alice@example.org"

// smimePKI is a CA and alice's certificate made with openssl, as an admin
// makes them.
type smimePKI struct {
	dir, caPath, certPath, keyPath, pemPath, p12Path, passFile string
}

func newSMIMEPKI(t testing.TB) *smimePKI {
	t.Helper()
	dir := t.TempDir()
	p := &smimePKI{dir: dir, caPath: filepath.Join(dir, "ca.pem"), certPath: filepath.Join(dir, "alice.pem"),
		keyPath: filepath.Join(dir, "alice.key"), pemPath: filepath.Join(dir, "alice-key-and-cert.pem"),
		p12Path: filepath.Join(dir, "alice.p12"), passFile: writeFile(t, dir, "p12pass", []byte("test\n"))}
	tool(t, dir, nil, nil, "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
		"-days", "30", "-subj", "/CN=Test CA", "-addext", "basicConstraints=critical,CA:TRUE",
		"-addext", "keyUsage=critical,keyCertSign,cRLSign")
	writeFile(t, dir, "ext.cnf", []byte(strings.Join([]string{
		"subjectAltName=email:" + smimeAddress, "keyUsage=critical,digitalSignature,keyEncipherment",
		"extendedKeyUsage=emailProtection", "basicConstraints=CA:FALSE",
		"subjectKeyIdentifier=hash", "authorityKeyIdentifier=keyid"}, "\n")+"\n"))
	tool(t, dir, nil, nil, "openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", "alice.key", "-out", "alice.csr",
		"-subj", "/CN=Alice Example/emailAddress="+smimeAddress)
	tool(t, dir, nil, nil, "openssl", "x509", "-req", "-in", "alice.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
		"-CAcreateserial", "-days", "30", "-extfile", "ext.cnf", "-out", "alice.pem")
	writeFile(t, dir, filepath.Base(p.pemPath), append(readFile(t, p.keyPath), readFile(t, p.certPath)...))
	tool(t, dir, nil, nil, "openssl", "pkcs12", "-export", "-inkey", "alice.key", "-in", "alice.pem", "-certfile", "ca.pem",
		"-name", "Alice", "-out", "alice.p12", "-passout", "pass:test")
	return p
}

// decrypt runs sealmail decrypt with one --key and no home key.
func (p *smimePKI) decrypt(t testing.TB, msg []byte, key string, extra ...string) result {
	t.Helper()
	args := append([]string{"decrypt", "--home", filepath.Join(p.dir, "no-home"), "--key", key}, extra...)
	return sealmail(t, msg, args...)
}

func TestSMIMEPeers(t *testing.T) {
	t.Parallel()
	p := newSMIMEPKI(t)
	entity := crlf("Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit", "", "Grüße über S/MIME")
	in := writeFile(t, p.dir, "entity.txt", []byte(entity))

	// openssl cms writes a whole message (LF line ends) with -from/-to/-subject.
	opensslWhole := tool(t, p.dir, nil, nil, "openssl", "cms", "-encrypt", "-aes256", "-in", in, "-from", "bob@example.net",
		"-to", smimeAddress, "-subject", "S/MIME from openssl", p.certPath)
	opensslDER := tool(t, p.dir, nil, nil, "openssl", "cms", "-encrypt", "-aes256", "-binary", "-in", in, "-outform", "DER", p.certPath)
	opensslGCM := tool(t, p.dir, nil, nil, "openssl", "cms", "-encrypt", "-aes-256-gcm", "-binary", "-in", in, "-outform", "DER", p.certPath)
	gpgsmDER := gpgsmEncrypt(t, p, in)

	messages := map[string][]byte{
		"openssl cms, whole message": opensslWhole,
		"openssl cms -aes256":        smimeMessage(outer, opensslDER),
		"openssl cms -aes-256-gcm (AuthEnvelopedData)": bytes.Replace(smimeMessage(outer, opensslGCM),
			[]byte("enveloped-data"), []byte("authEnveloped-data"), 1),
		"gpgsm --encrypt": smimeMessage(outer, gpgsmDER),
	}
	for name, msg := range messages {
		for keyName, args := range map[string][]string{
			"PEM key and certificate": {p.pemPath},
			"PKCS#12":                 {p.p12Path, "--passphrase-file", p.passFile},
		} {
			r := p.decrypt(t, msg, args[0], args[1:]...)
			if _, body := splitOutput(t, toCRLF(r.stdout)); r.code != 0 ||
				strings.ReplaceAll(body, "\r", "") != "Grüße über S/MIME\n" {
				t.Errorf("%s with %s: exit %d, stdout %q, stderr %q", name, keyName, r.code, r.stdout, r.stderr)
				continue
			}
			if r.stderr != "sealmail: signature: none\n" || !strings.HasPrefix(r.stdout, "X-Sealmail-Signature: none") {
				t.Errorf("%s: verdict %q / %.40q", name, r.stderr, r.stdout)
			}
		}
	}
	if r := p.decrypt(t, messages["openssl cms, whole message"], p.pemPath); !strings.Contains(r.stdout, "\nSubject: S/MIME from openssl\n") {
		t.Errorf("the outer header of openssl's message is lost: %q", r.stdout)
	}
}

func toCRLF(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", "\n"), "\n", "\r\n")
}

// gpgsmEncrypt encrypts file in to alice with gpgsm 2.2 and returns DER.
func gpgsmEncrypt(t testing.TB, p *smimePKI, in string) []byte {
	t.Helper()
	home, err := os.MkdirTemp("", "sm-gpgsm-") // short: the agent's socket lives here
	if err != nil {
		t.Fatal(err)
	}
	env := []string{"GNUPGHOME=" + home}
	t.Cleanup(func() {
		_, _ = toolErr(home, nil, env, "gpgconf", "--kill", "all")
		os.RemoveAll(home)
	})
	tool(t, home, nil, env, "gpgsm", "--batch", "--import", p.caPath, p.certPath)
	fpr := tool(t, home, nil, nil, "openssl", "x509", "-in", p.caPath, "-noout", "-fingerprint", "-sha1")
	_, f, _ := strings.Cut(strings.TrimSpace(string(fpr)), "=")
	writeFile(t, home, "trustlist.txt", []byte(f+" S relax\n"))
	out := filepath.Join(home, "out.p7m")
	tool(t, home, nil, env, "gpgsm", "--batch", "--disable-crl-checks", "-r", smimeAddress, "--encrypt", "-o", out, in)
	return readFile(t, out)
}

// TestSMIMEPaddingOracleInputsAreValidCMS: the hand-built EnvelopedData of
// the EFAIL tests is real CMS. OpenSSL decrypts the well-formed one and
// refuses the one with bad padding, so sealmail's refusal of the latter is
// the padding's doing.
func TestSMIMEPaddingOracleInputsAreValidCMS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	id := newSMIMEIdentity(t, smimeAddress)
	keyFile := writeFile(t, dir, "id.pem", id.pem)
	content := []byte(crlf("Content-Type: text/plain", "", "padding check"))
	good := writeFile(t, dir, "good.der", cmsEnvelope(t, id, content, cmsOptions{}))
	bad := writeFile(t, dir, "bad.der", cmsEnvelope(t, id, content, cmsOptions{badPadding: true}))
	args := func(in string) []string {
		return []string{"cms", "-decrypt", "-inform", "DER", "-in", in, "-inkey", keyFile, "-recip", keyFile}
	}
	if got := tool(t, dir, nil, nil, "openssl", args(good)...); !bytes.Equal(got, content) {
		t.Errorf("openssl decrypted %q", got)
	}
	if _, err := toolErr(dir, nil, nil, "openssl", args(bad)...); err == nil {
		t.Error("openssl decrypted the message with bad padding")
	}
}
