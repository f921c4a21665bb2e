package gateway

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/emersion/go-message"

	"github.com/sealgate/sealgate/gateway/policy"
	"github.com/sealgate/sealgate/keydir"
	"github.com/sealgate/sealgate/smime"
)

// testCA issues S/MIME certificates for the gateway tests.
type testCA struct {
	cert *x509.Certificate
	key  *rsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Test S/MIME CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// issue makes an RSA-2048 recipient certificate for address.
func (ca *testCA) issue(t *testing.T, address string) (*x509.Certificate, *rsa.PrivateKey) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: address},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		EmailAddresses: []string{address},
		KeyUsage:       x509.KeyUsageKeyEncipherment | x509.KeyUsageDigitalSignature,
		ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return cert, key
}

// enableSMIME gives a test gateway an S/MIME validator trusting ca.
func enableSMIME(t *testing.T, ca *testCA) func(*Options) {
	smime.Setup()
	v, err := smime.NewValidator(smime.Options{Roots: ca.pool, Revocation: smime.Off})
	if err != nil {
		t.Fatal(err)
	}
	return func(o *Options) { o.SMIME, o.SMIMEMaxBytes = v, 10<<20 }
}

func (g *testGateway) publishX509(t *testing.T, cert *x509.Certificate) {
	t.Helper()
	data := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
	res, err := keydir.ImportX509(context.Background(), g.store, data, time.Now(), nil)
	if err != nil || len(res) != 1 || res[0].Err != nil {
		t.Fatalf("import certificate: %v %+v", err, res)
	}
}

// decryptSMIME checks the RFC 8551 structure of an upstream message and
// decrypts it; it returns the outer header and the inner entity.
func decryptSMIME(t *testing.T, raw []byte, cert *x509.Certificate, key *rsa.PrivateKey) (message.Header, []byte) {
	t.Helper()
	ent, err := message.Read(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	ct, params, _ := ent.Header.ContentType()
	if ct != "application/pkcs7-mime" || params["smime-type"] != "enveloped-data" || params["name"] != "smime.p7m" {
		t.Fatalf("outer Content-Type %q %v", ct, params)
	}
	b64, _ := io.ReadAll(ent.Body) // go-message decodes the base64 transfer encoding
	for _, line := range strings.Split(string(bytes.TrimSpace(rawBody(raw))), "\r\n") {
		if len(line) > 76 {
			t.Fatalf("base64 line of %d columns", len(line))
		}
	}
	plain, err := smime.Decrypt(b64, cert, key)
	if err != nil {
		t.Fatalf("decrypt: %v", err)
	}
	return ent.Header, plain
}

func rawBody(raw []byte) []byte {
	i := bytes.Index(raw, []byte("\r\n\r\n"))
	return raw[i+4:]
}

func TestSMIMEEncryptionWithHeaderProtection(t *testing.T) {
	ca := newTestCA(t)
	g := startGateway(t, nil, enableSMIME(t, ca))
	cert, key := ca.issue(t, "alice@client.example")
	g.publishX509(t, cert)
	if res := g.send(t, "sender@firm.example", []string{"alice@client.example"}, testMsg, nil); res.dataErr != nil {
		t.Fatal(res.dataErr)
	}
	raw := g.up.messages()[0].data
	if bytes.Contains(raw, []byte("CANARY-BODY")) || bytes.Contains(raw, []byte("Merger")) {
		t.Fatal("plaintext leaked")
	}
	outer, inner := decryptSMIME(t, raw, cert, key)
	if outer.Get("Subject") != "..." {
		t.Errorf("outer Subject %q", outer.Get("Subject"))
	}
	if !bytes.HasSuffix(inner, []byte("\r\n\r\nCANARY-BODY the terms are attached.\r\n")) || !bytes.Contains(inner, []byte("Subject: Merger terms - confidential\r\n")) {
		t.Errorf("inner entity:\n%s", inner)
	}
	alg, err := smime.ContentAlgorithm(mustB64(t, rawBody(raw)))
	if err != nil || !alg.Equal(oidAES256CBC) {
		t.Errorf("content encryption %v (%v), want AES-256-CBC", alg, err)
	}
}

var oidAES256CBC = []int{2, 16, 840, 1, 101, 3, 4, 1, 42}

func mustB64(t *testing.T, b []byte) []byte {
	t.Helper()
	der, err := base64.StdEncoding.DecodeString(strings.ReplaceAll(string(bytes.TrimSpace(b)), "\r\n", ""))
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestPGPSMIMEAndPlainLeaveAsThreeTransactions(t *testing.T) {
	ca := newTestCA(t)
	g := startGateway(t, nil, enableSMIME(t, ca))
	pgpKey := g.newKey(t, "alice@client.example")
	cert, key := ca.issue(t, "judge@court.example")
	g.publishX509(t, cert)
	msg := strings.Replace(testMsg, "To: Alice <alice@client.example>", "To: alice@client.example, judge@court.example, bob@other.example", 1)
	res := g.send(t, "sender@firm.example", []string{"alice@client.example", "judge@court.example", "bob@other.example"}, msg, nil)
	if res.dataErr != nil {
		t.Fatal(res.dataErr)
	}
	msgs := g.up.messages()
	if len(msgs) != 3 {
		t.Fatalf("%d transactions, want 3", len(msgs))
	}
	for _, m := range msgs {
		switch {
		case slices.Equal(m.rcpts, []string{"alice@client.example"}):
			decryptPGPMIME(t, m.data, openpgp.EntityList{pgpKey})
		case slices.Equal(m.rcpts, []string{"judge@court.example"}):
			decryptSMIME(t, m.data, cert, key)
		case slices.Equal(m.rcpts, []string{"bob@other.example"}):
			if !bytes.Contains(m.data, []byte("CANARY-BODY")) {
				t.Error("plain copy lacks its body")
			}
		default:
			t.Errorf("unexpected transaction to %v", m.rcpts)
		}
	}
}

func TestSMIMEFormatChoiceAndBcc(t *testing.T) {
	ca := newTestCA(t)
	g := startGateway(t, []policy.Rule{
		{Match: "both.example", Encrypt: policy.Required, Format: policy.Auto, Prefer: policy.SMIME},
		{Match: "pgponly.example", Encrypt: policy.Required, Format: policy.PGP},
	}, enableSMIME(t, ca))
	for _, a := range []string{"x@both.example", "y@pgponly.example"} {
		g.newKey(t, a)
		c, _ := ca.issue(t, a)
		g.publishX509(t, c)
	}
	bccCert, bccKey := ca.issue(t, "bcc@court.example")
	g.publishX509(t, bccCert)
	msg := strings.Replace(testMsg, "To: Alice <alice@client.example>", "To: x@both.example, y@pgponly.example", 1)
	res := g.send(t, "s@firm.example", []string{"x@both.example", "y@pgponly.example", "bcc@court.example"}, msg, nil)
	if res.dataErr != nil {
		t.Fatal(res.dataErr)
	}
	got := map[string]string{}
	for _, m := range g.up.messages() {
		kind := "pgp"
		if bytes.Contains(m.data, []byte("application/pkcs7-mime")) {
			kind = "smime"
		}
		got[strings.Join(m.rcpts, ",")] = kind
		if slices.Contains(m.rcpts, "bcc@court.example") {
			decryptSMIME(t, m.data, bccCert, bccKey)
		}
	}
	want := map[string]string{"x@both.example": "smime", "y@pgponly.example": "pgp", "bcc@court.example": "smime"}
	if len(got) != len(want) {
		t.Fatalf("transactions %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %s, want %s (all: %v)", k, got[k], v, got)
		}
	}
}

func TestSMIMERevocationUnknownDefersRequired(t *testing.T) {
	ca := newTestCA(t)
	smime.Setup()
	// The certificate names an OCSP responder that does not answer.
	v, err := smime.NewValidator(smime.Options{Roots: ca.pool, Revocation: smime.HardFail,
		HTTPClient: &http.Client{Timeout: time.Second}, FetchTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	g := startGateway(t, []policy.Rule{{Match: "court.example", Encrypt: policy.Required}},
		func(o *Options) { o.SMIME, o.SMIMEMaxBytes = v, 10<<20 })
	cert := ca.issueWithOCSP(t, "judge@court.example", "http://127.0.0.1:1/ocsp")
	g.publishX509(t, cert)
	res := g.send(t, "s@firm.example", []string{"judge@court.example"}, testMsg, nil)
	if code := smtpCode(res.rcptErrs["judge@court.example"]); code != 451 {
		t.Fatalf("RCPT %d (%v), want 451 while the responder is unreachable", code, res.rcptErrs["judge@court.example"])
	}
}

func (ca *testCA) issueWithOCSP(t *testing.T, address, ocspURL string) *x509.Certificate {
	t.Helper()
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(77), Subject: pkix.Name{CommonName: address},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		EmailAddresses: []string{address}, OCSPServer: []string{ocspURL},
		KeyUsage:    x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return cert
}

func TestSMIMEMessageOverCapIsRefused(t *testing.T) {
	ca := newTestCA(t)
	g := startGateway(t, nil, func(o *Options) { enableSMIME(t, ca)(o); o.SMIMEMaxBytes = 2048 })
	cert, _ := ca.issue(t, "alice@client.example")
	g.publishX509(t, cert)
	big := testMsg + strings.Repeat("0123456789\r\n", 400)
	res := g.send(t, "s@firm.example", []string{"alice@client.example"}, big, nil)
	if code := smtpCode(res.dataErr); code != 552 {
		t.Fatalf("DATA %d (%v), want 552", code, res.dataErr)
	}
	if len(g.up.messages()) != 0 {
		t.Fatal("relayed")
	}
}

// TestSMIMERefusalMatrix: a required recipient whose only certificate is
// unusable at the time of sending gets 550 at RCPT, whatever the reason.
// The certificates are stored directly, as if they had been valid at import.
func TestSMIMERefusalMatrix(t *testing.T) {
	ca, other := newTestCA(t), newTestCA(t)
	g := startGateway(t, []policy.Rule{{Match: "court.example", Encrypt: policy.Required}}, enableSMIME(t, ca))
	cases := map[string]func(*x509.Certificate){
		"expired": func(c *x509.Certificate) {
			c.NotBefore, c.NotAfter = time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour)
		},
		"not yet valid":      func(c *x509.Certificate) { c.NotBefore = time.Now().Add(24 * time.Hour) },
		"wrong EKU":          func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth} },
		"no keyEncipherment": func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageDigitalSignature },
		"address mismatch":   func(c *x509.Certificate) { c.EmailAddresses = []string{"someone.else@court.example"} },
	}
	i := 0
	for name, mutate := range cases {
		i++
		addr := fmt.Sprintf("r%d@court.example", i)
		cert := ca.issueMutated(t, addr, mutate)
		g.storeX509(t, cert, addr)
		res := g.send(t, "s@firm.example", []string{addr}, testMsg, nil)
		if code := smtpCode(res.rcptErrs[addr]); code != 550 {
			t.Errorf("%s: RCPT %d (%v), want 550", name, code, res.rcptErrs[addr])
		}
	}
	// Signed by a CA the gateway does not trust.
	untrusted, _ := other.issue(t, "u@court.example")
	g.storeX509(t, untrusted, "u@court.example")
	if code := smtpCode(g.send(t, "s@firm.example", []string{"u@court.example"}, testMsg, nil).rcptErrs["u@court.example"]); code != 550 {
		t.Errorf("untrusted chain: RCPT %d, want 550", code)
	}
	if len(g.up.messages()) != 0 {
		t.Fatal("something was relayed")
	}
}

func (ca *testCA) issueMutated(t *testing.T, address string, mutate func(*x509.Certificate)) *x509.Certificate {
	t.Helper()
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: address},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		EmailAddresses: []string{address},
		KeyUsage:       x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
	}
	mutate(tmpl)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return cert
}

// storeX509 puts a certificate in the directory under address, bypassing
// the import checks.
func (g *testGateway) storeX509(t *testing.T, cert *x509.Certificate, address string) {
	t.Helper()
	k := keydir.Key{Fingerprint: smime.Fingerprint(cert), Kind: keydir.KindX509, Data: cert.Raw, Addresses: []string{address}}
	if err := g.store.Put(context.Background(), k); err != nil {
		t.Fatal(err)
	}
}

// TestSMIMEChainThroughIntermediate: a certificate issued by an
// intermediate CA, imported together with that intermediate, chains to the
// trusted root at every use (x509.Verify fetches nothing by itself).
func TestSMIMEChainThroughIntermediate(t *testing.T) {
	root := newTestCA(t)
	ikey, _ := rsa.GenerateKey(rand.Reader, 2048)
	itmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "Test Intermediate"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	ider, err := x509.CreateCertificate(rand.Reader, itmpl, root.cert, &ikey.PublicKey, root.key)
	if err != nil {
		t.Fatal(err)
	}
	icert, _ := x509.ParseCertificate(ider)
	inter := &testCA{cert: icert, key: ikey}
	leaf, key := inter.issue(t, "alice@client.example")

	g := startGateway(t, []policy.Rule{{Match: "client.example", Encrypt: policy.Required}}, enableSMIME(t, root))
	bundle := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: icert.Raw})...)
	res, err := keydir.ImportX509(context.Background(), g.store, bundle, time.Now(), nil)
	if err != nil || len(res) != 2 || res[0].Err != nil {
		t.Fatalf("import: %v %+v", err, res)
	}
	if r := g.send(t, "s@firm.example", []string{"alice@client.example"}, testMsg, nil); r.dataErr != nil || len(r.rcptErrs) != 0 {
		t.Fatalf("send: %+v", r)
	}
	decryptSMIME(t, g.up.messages()[0].data, leaf, key)
}
