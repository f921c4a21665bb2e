package smime

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"path/filepath"
	"strings"
	"testing"

	"software.sslmate.com/src/go-pkcs12"
)

func TestReadKeyPair(t *testing.T) {
	root := newCA(t, "Test Root", nil)
	r := newOpenSSLRecipient(t, root)
	keyPEMBytes, certPEMBytes := readFile(t, r.keyPath), readFile(t, r.certPath)
	run(t, r.dir, nil, nil, "openssl", "rsa", "-in", "bob.key", "-traditional", "-out", "bob-pkcs1.key")
	for name, c := range map[string]struct {
		data     []byte
		password string
		chain    int
	}{
		"PEM key then certificate":   {append(keyPEMBytes, certPEMBytes...), "", 0},
		"PEM CA, certificate, key":   {append(append(readFile(t, r.caPath), certPEMBytes...), keyPEMBytes...), "", 1},
		"PEM PKCS#1 key":             {append(readFile(t, filepath.Join(r.dir, "bob-pkcs1.key")), certPEMBytes...), "", 0},
		"PKCS#12 from openssl (AES)": {readFile(t, r.p12(t, "aes.p12")), "test", 1},
		"PKCS#12 legacy 3DES": {readFile(t, r.p12(t, "3des.p12", "-keypbe", "PBE-SHA1-3DES", "-certpbe", "PBE-SHA1-3DES",
			"-macalg", "sha1")), "test", 1},
	} {
		kp, err := ReadKeyPair(c.data, c.password)
		if err != nil {
			t.Errorf("ReadKeyPair(%s): %v", name, err)
			continue
		}
		if !kp.Cert.Equal(r.cert) || !kp.Key.(*rsa.PrivateKey).Equal(r.key) || len(kp.Chain) != c.chain {
			t.Errorf("ReadKeyPair(%s): cert %v, chain %d; want Bob's pair and %d chain certificates", name, kp.Cert.Subject, len(kp.Chain), c.chain)
		}
	}
}

func TestReadKeyPairRefuses(t *testing.T) {
	root := newCA(t, "Test Root", nil)
	r := newOpenSSLRecipient(t, root)
	stranger := root.issue(t, leafTemplate("x@example.org"), rsaKey(t, 2).Public())
	run(t, r.dir, nil, nil, "openssl", "pkcs8", "-topk8", "-in", "bob.key", "-passout", "pass:x", "-out", "enc.pem")
	goP12, err := pkcs12.Modern.Encode(rsaKey(t, 2), stranger, nil, "pw")
	if err != nil {
		t.Fatal(err)
	}
	trust, err := pkcs12.EncodeTrustStore(rand.Reader, []*x509.Certificate{stranger}, "pw")
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		data     []byte
		password string
		want     string
	}{
		"wrong PKCS#12 password": {readFile(t, r.p12(t, "aes.p12")), "nope", "PKCS#12"},
		"key without its certificate": {append(readFile(t, r.keyPath), certPEM(stranger)...), "",
			"no certificate matches the private key"},
		"encrypted PEM key":   {append(readFile(t, filepath.Join(r.dir, "enc.pem")), readFile(t, r.certPath)...), "", "encrypted PEM keys"},
		"certificate only":    {readFile(t, r.certPath), "", "no private key"},
		"two keys":            {append(append(readFile(t, r.keyPath), keyPEM(t, rsaKey(t, 2))...), readFile(t, r.certPath)...), "", "more than one"},
		"PKCS#12 trust store": {trust, "pw", "PKCS#12"},
		"go-pkcs12, wrong pw": {goP12, "pw2", "PKCS#12"},
	} {
		if _, err := ReadKeyPair(c.data, c.password); err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "smime: ") {
			t.Errorf("ReadKeyPair(%s) = %v; want an error saying %q", name, err, c.want)
		}
	}
}
