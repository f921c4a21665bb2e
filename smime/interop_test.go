package smime

import (
	"bytes"
	"crypto/x509"
	"path/filepath"
	"strings"
	"testing"
)

// Interop: what Encrypt writes decrypts with the real peers, OpenSSL,
// GnuPG's gpgsm and NSS's cmsutil (Thunderbird's S/MIME engine), using a
// recipient key and certificate that openssl generated; the plaintext is
// the input, byte for byte. The messages have two recipients, so the peers
// have to pick their RecipientInfo.

type interopMessage struct {
	name  string
	plain []byte
	der   []byte
	path  string // DER file
}

func interopMessages(t *testing.T, r *opensslRecipient, to []*x509.Certificate) []interopMessage {
	t.Helper()
	Setup()
	var msgs []interopMessage
	for _, m := range []struct {
		name  string
		plain []byte
	}{
		{"small", []byte("Content-Type: text/plain\r\n\r\nhello\r\n")},
		{"70KiB 8-bit", sampleEntity(70 << 10)},
		{"binary bytes", bytes.Repeat([]byte{0, 0xff, '\r', '\n', 0x80, 'a'}, 3000)},
	} {
		der, err := Encrypt(m.plain, to)
		if err != nil {
			t.Fatal(err)
		}
		alg, err := ContentAlgorithm(der)
		if err != nil || !alg.Equal(oidAES256CBC) {
			t.Fatalf("content algorithm %v, %v; want AES-256-CBC", alg, err)
		}
		name := strings.ReplaceAll(m.name, " ", "-") + ".p7m"
		msgs = append(msgs, interopMessage{name: m.name, plain: m.plain, der: der, path: writeFile(t, r.dir, name, der)})
	}
	return msgs
}

// interopSetup makes the recipient and messages encrypted to it and to
// Carol (DER sorts the RecipientInfos, so either may come first), or, with
// sole, to it alone.
func interopSetup(t *testing.T, sole bool) (*opensslRecipient, []interopMessage) {
	t.Helper()
	root := newCA(t, "Interop Root", nil)
	r := newOpenSSLRecipient(t, root)
	carol := root.issue(t, leafTemplate("carol@example.org"), rsaKey(t, 2).Public())
	to := []*x509.Certificate{carol, r.cert}
	if sole {
		to = to[1:]
	}
	return r, interopMessages(t, r, to)
}

func TestInteropOpenSSLDecrypts(t *testing.T) {
	r, msgs := interopSetup(t, false)
	for _, m := range msgs {
		got := run(t, r.dir, nil, nil, "openssl", "cms", "-decrypt", "-inform", "DER", "-in", m.path,
			"-recip", r.certPath, "-inkey", r.keyPath)
		if !bytes.Equal(got, m.plain) {
			t.Errorf("openssl cms -decrypt (%s): %d bytes differ from the %d bytes encrypted", m.name, len(got), len(m.plain))
		}
		// The same through the whole MIME message, as a mail client gets it.
		var eml bytes.Buffer
		eml.WriteString("From: a@example.com\r\nTo: bob@example.org\r\nSubject: ...\r\nMIME-Version: 1.0\r\n")
		for _, f := range MIMEHeader() {
			eml.WriteString(f[0] + ": " + f[1] + "\r\n")
		}
		eml.WriteString("\r\n")
		if err := WriteMIMEBody(&eml, m.der); err != nil {
			t.Fatal(err)
		}
		emlPath := writeFile(t, r.dir, "msg.eml", eml.Bytes())
		for _, cmd := range []string{"cms", "smime"} {
			got := run(t, r.dir, nil, nil, "openssl", cmd, "-decrypt", "-in", emlPath, "-recip", r.certPath, "-inkey", r.keyPath)
			if !bytes.Equal(got, m.plain) {
				t.Errorf("openssl %s -decrypt of the MIME message (%s): plaintext differs", cmd, m.name)
			}
		}
	}
	// openssl agrees about the algorithm.
	out := run(t, r.dir, nil, nil, "openssl", "cms", "-cmsout", "-print", "-inform", "DER", "-in", msgs[0].path)
	if !bytes.Contains(out, []byte("aes-256-cbc")) || bytes.Contains(bytes.ToLower(out), []byte("des")) {
		t.Errorf("openssl cms -cmsout -print does not show aes-256-cbc only:\n%s", out)
	}
}

func TestInteropGpgsmDecrypts(t *testing.T) {
	for _, sole := range []bool{true, false} {
		r, msgs := interopSetup(t, sole)
		env := gpgsmHome(t, r)
		for _, m := range msgs {
			// The key carries the PKCS#12 passphrase in gpg-agent: give it on fd 0.
			got, err := runErr(t, r.dir, []byte("test\n"), env, "gpgsm", "--batch", "--disable-dirmngr", "--pinentry-mode", "loopback",
				"--passphrase-fd", "0", "--disable-crl-checks", "--decrypt", m.path)
			// gpgsm 2.2 decrypts but exits 2 when it met another
			// recipient's RecipientInfo first ("failed to find the
			// certificate"): only a sole recipient must give exit 0.
			if err != nil && (sole || !strings.Contains(err.Error(), "exit status 2")) {
				t.Fatalf("gpgsm --decrypt (%s, sole %v): %v", m.name, sole, err)
			}
			if !bytes.Equal(got, m.plain) {
				t.Errorf("gpgsm --decrypt (%s, sole %v): %d bytes differ from the %d bytes encrypted", m.name, sole, len(got), len(m.plain))
			}
		}
	}
}

func TestInteropNSSDecrypts(t *testing.T) {
	r, msgs := interopSetup(t, false)
	db := nssDB(t, r)
	for _, m := range msgs {
		out := filepath.Join(r.dir, "nss.out")
		run(t, r.dir, nil, nil, "cmsutil", "-D", "-i", m.path, "-d", db, "-p", "", "-o", out)
		if got := readFile(t, out); !bytes.Equal(got, m.plain) {
			t.Errorf("cmsutil -D (%s): %d bytes differ from the %d bytes encrypted", m.name, len(got), len(m.plain))
		}
	}
}
