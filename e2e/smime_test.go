package e2e

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// smimePeer is an S/MIME recipient made with openssl: a CA, a certificate
// for the address and its key, in PEM and legacy PKCS#12 (for gpgsm 2.2).
type smimePeer struct {
	dir, ca, cert, key, p12 string
}

func newSMIMEPeer(t *testing.T, address string) smimePeer {
	t.Helper()
	d := t.TempDir()
	p := smimePeer{dir: d, ca: filepath.Join(d, "ca.pem"), cert: filepath.Join(d, "bob.pem"), key: filepath.Join(d, "bob.key"), p12: filepath.Join(d, "bob.p12")}
	o := cmdOpts{dir: d}
	mustRun(t, o, "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", p.ca, "-days", "2",
		"-subj", "/CN=E2E S-MIME CA", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
	mustRun(t, o, "openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", p.key, "-out", "bob.csr", "-subj", "/CN=Bob/emailAddress="+address)
	ext := fmt.Sprintf("subjectAltName=email:%s\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=emailProtection\nbasicConstraints=CA:FALSE\n", address)
	os.WriteFile(filepath.Join(d, "ext.cnf"), []byte(ext), 0o600)
	mustRun(t, o, "openssl", "x509", "-req", "-in", "bob.csr", "-CA", p.ca, "-CAkey", "ca.key", "-CAcreateserial", "-days", "2", "-extfile", "ext.cnf", "-out", p.cert)
	mustRun(t, o, "openssl", "pkcs12", "-export", "-inkey", p.key, "-in", p.cert, "-certfile", p.ca, "-out", p.p12, "-passout", "pass:test",
		"-keypbe", "PBE-SHA1-3DES", "-certpbe", "PBE-SHA1-3DES", "-macalg", "sha1")
	return p
}

// TestSMIMEOutputDecryptsWithOpenSSLGpgsmAndNSS: the gateway's S/MIME copy
// decrypts with openssl cms, GnuPG's gpgsm and NSS cmsutil (Thunderbird's
// engine) to the original entity.
func TestSMIMEOutputDecryptsWithOpenSSLGpgsmAndNSS(t *testing.T) {
	peer := newSMIMEPeer(t, "bob@court.example")
	g := startGateway(t, fmt.Sprintf("[smime]\ntrust_roots = [%q]\nrevocation = \"off\"\n", peer.ca))
	g.importKeys(t, peer.cert)
	body := "Privileged: the settlement is CANARY-SMIME-7731.\r\n"
	msg := []byte("From: s@firm.example\r\nTo: bob@court.example\r\nSubject: Settlement\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + body)
	if out, code := swaks(t, g.smtpAddr, "s@firm.example", []string{"bob@court.example"}, msg); code != 0 {
		t.Fatalf("swaks: %d\n%s", code, out)
	}
	m := g.sink.wait(t, 1)[0]
	if bytes.Contains(m.raw, []byte("CANARY-SMIME")) || bytes.Contains(m.raw, []byte("Settlement")) {
		t.Fatal("plaintext in the upstream copy")
	}
	hdr, b64 := splitEntity(t, m.data)
	if !bytes.Contains(hdr, []byte("application/pkcs7-mime; smime-type=enveloped-data")) || !bytes.Contains(hdr, []byte("Subject: ...")) {
		t.Fatalf("outer header:\n%s", hdr)
	}
	der, err := base64.StdEncoding.DecodeString(strings.ReplaceAll(string(bytes.TrimSpace(b64)), "\r\n", ""))
	if err != nil {
		t.Fatal(err)
	}
	p7m := filepath.Join(peer.dir, "m.p7m")
	os.WriteFile(p7m, der, 0o600)
	o := cmdOpts{dir: peer.dir}

	check := func(tool string, plain []byte) {
		t.Helper()
		if !bytes.HasSuffix(plain, []byte("\r\n\r\n"+body)) || !bytes.Contains(plain, []byte("Subject: Settlement\r\n")) {
			t.Errorf("%s decrypted to:\n%s", tool, plain)
		}
	}
	check("openssl cms", mustRun(t, o, "openssl", "cms", "-decrypt", "-inform", "DER", "-in", p7m, "-recip", peer.cert, "-inkey", peer.key))
	// The whole message as a mail client would get it.
	eml := filepath.Join(peer.dir, "m.eml")
	os.WriteFile(eml, m.data, 0o600)
	check("openssl cms (MIME)", mustRun(t, o, "openssl", "cms", "-decrypt", "-in", eml, "-recip", peer.cert, "-inkey", peer.key))

	// gpgsm (GnuPG's S/MIME), with its own home.
	home, err := os.MkdirTemp("", "gs")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(home)
	gs := cmdOpts{dir: peer.dir, env: []string{"GNUPGHOME=" + home}, stdin: []byte("test\n")}
	defer execute(t, gs, "gpgconf", "--kill", "all")
	mustRun(t, gs, "gpgsm", "--batch", "--disable-dirmngr", "--pinentry-mode", "loopback", "--passphrase-fd", "0", "--import", peer.p12)
	check("gpgsm", mustRun(t, gs, "gpgsm", "--batch", "--disable-dirmngr", "--pinentry-mode", "loopback", "--passphrase-fd", "0",
		"--disable-crl-checks", "--decrypt", p7m))

	// NSS cmsutil, with a fresh NSS database.
	db := "sql:" + filepath.Join(peer.dir, "nss")
	os.Mkdir(filepath.Join(peer.dir, "nss"), 0o700)
	mustRun(t, o, "certutil", "-N", "--empty-password", "-d", db)
	mustRun(t, o, "pk12util", "-i", peer.p12, "-d", db, "-W", "test", "-K", "")
	out := filepath.Join(peer.dir, "nss.out")
	mustRun(t, o, "cmsutil", "-D", "-i", p7m, "-d", db, "-p", "", "-o", out)
	plain, _ := os.ReadFile(out)
	check("cmsutil", plain)
}
