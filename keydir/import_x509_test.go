package keydir

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"software.sslmate.com/src/go-pkcs12"

	"github.com/sealgate/sealgate/smime"
)

// RSA keys are slow to make under -race: the X.509 tests share two.
var x509Keys struct {
	once sync.Once
	ca   *rsa.PrivateKey
	leaf *rsa.PrivateKey
}

func x509TestKeys(t testing.TB) (ca, leaf *rsa.PrivateKey) {
	t.Helper()
	x509Keys.once.Do(func() {
		var wg sync.WaitGroup
		wg.Go(func() { x509Keys.ca, _ = rsa.GenerateKey(rand.Reader, 2048) })
		wg.Go(func() { x509Keys.leaf, _ = rsa.GenerateKey(rand.Reader, 2048) })
		wg.Wait()
	})
	if x509Keys.ca == nil || x509Keys.leaf == nil {
		t.Fatal("RSA key generation failed")
	}
	return x509Keys.ca, x509Keys.leaf
}

var x509Serial atomic.Int64

type x509CA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func newX509CA(t testing.TB, name string) *x509CA {
	t.Helper()
	key, _ := x509TestKeys(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(x509Serial.Add(1)),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	return &x509CA{cert: mustCreateCert(t, tmpl, tmpl, key.Public(), key), key: key}
}

// recipientTemplate is a good S/MIME recipient certificate for the SANs.
func recipientTemplate(sans ...string) *x509.Certificate {
	return &x509.Certificate{
		SerialNumber:   big.NewInt(x509Serial.Add(1)),
		Subject:        pkix.Name{CommonName: "Recipient"},
		EmailAddresses: sans,
		NotBefore:      time.Now().Add(-time.Hour),
		NotAfter:       time.Now().Add(24 * time.Hour),
		KeyUsage:       x509.KeyUsageKeyEncipherment | x509.KeyUsageDigitalSignature,
		ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
	}
}

func (ca *x509CA) issue(t testing.TB, tmpl *x509.Certificate, pub crypto.PublicKey) *x509.Certificate {
	t.Helper()
	if pub == nil {
		_, leaf := x509TestKeys(t)
		pub = leaf.Public()
	}
	return mustCreateCert(t, tmpl, ca.cert, pub, ca.key)
}

func mustCreateCert(t testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func pemCerts(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return strings.ToUpper(hex.EncodeToString(sum[:]))
}

func TestImportFileX509(t *testing.T) {
	ca := newX509CA(t, "Test CA")
	leaf := ca.issue(t, recipientTemplate("Bob@XN--BCHER-KVA.Example", "bob@example.org"), nil)
	for name, data := range map[string][]byte{"cert.pem": pemCerts(leaf), "cert.der": leaf.Raw} {
		t.Run(name, func(t *testing.T) {
			s := newImportStore(t)
			res, err := ImportFile(t.Context(), s, writeFile(t, name, data), time.Now())
			want := []string{"bob@example.org", "bob@xn--bcher-kva.example"}
			if err != nil || len(res) != 1 || res[0].Err != nil || !slices.Equal(res[0].Addresses, want) {
				t.Fatalf("ImportFile = %+v, %v; want one stored certificate with %q", res, err, want)
			}
			keys, err := s.Lookup(t.Context(), "BOB@bücher.example")
			if err != nil || len(keys) != 1 {
				t.Fatalf("Lookup = %v, %v", fingerprints(keys), err)
			}
			k := keys[0]
			if k.Kind != KindX509 || k.Fingerprint != sha256Hex(leaf.Raw) || res[0].Fingerprint != k.Fingerprint ||
				!slices.Equal(k.Data, leaf.Raw) || !slices.Equal(k.Addresses, want) {
				t.Errorf("stored %s %s %q (%d bytes); want x509 %s, the DER, %q", k.Kind, k.Fingerprint, k.Addresses, len(k.Data), sha256Hex(leaf.Raw), want)
			}
		})
	}
}

func TestImportX509BasicChecksPerCertificate(t *testing.T) {
	ca := newX509CA(t, "Test CA")
	good := ca.issue(t, recipientTemplate("good@example.org"), nil)
	expired := recipientTemplate("expired@example.org")
	expired.NotBefore, expired.NotAfter = time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour)
	wrongEKU := recipientTemplate("eku@example.org")
	wrongEKU.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	noAddress := recipientTemplate()
	badAddress := recipientTemplate("no-at-sign")
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	ecKey := selfSignedKey(t)
	certs := []*x509.Certificate{
		good,
		ca.issue(t, expired, nil),
		ca.issue(t, wrongEKU, nil),
		ca.issue(t, noAddress, nil),
		ca.issue(t, badAddress, nil),
		ca.issue(t, recipientTemplate("small@example.org"), small.Public()),
		ca.issue(t, recipientTemplate("ec@example.org"), ecKey),
		ca.cert,
	}
	wantErr := []string{"", "expired on", "emailProtection", "no e-mail address", "no valid e-mail address", "1024 bits",
		"RFC 5753", "a CA certificate"}
	s := newImportStore(t)
	res, err := ImportWith(t.Context(), s, pemCerts(certs...), time.Now(), ImportOptions{})
	if err != nil || len(res) != len(certs) {
		t.Fatalf("ImportWith = %d results, %v; want %d results", len(res), err, len(certs))
	}
	for i, r := range res {
		switch {
		case wantErr[i] == "" && r.Err != nil:
			t.Errorf("certificate %d: %v; want stored", i, r.Err)
		case wantErr[i] != "" && (r.Err == nil || !strings.Contains(r.Err.Error(), wantErr[i])):
			t.Errorf("certificate %d: err %v; want one saying %q", i, r.Err, wantErr[i])
		}
	}
	if !errors.Is(res[6].Err, smime.ErrUnsupportedKey) {
		t.Errorf("EC certificate: %v; want smime.ErrUnsupportedKey", res[6].Err)
	}
	keys, err := s.List(t.Context())
	if err != nil || len(keys) != 1 || keys[0].Fingerprint != sha256Hex(good.Raw) {
		t.Errorf("stored %v, %v; want only the good certificate", fingerprints(keys), err)
	}
}

func TestImportX509WithValidator(t *testing.T) {
	ca := newX509CA(t, "Trusted CA")
	stranger := newX509CA(t, "Stranger CA")
	var crlHits atomic.Int32
	var mu sync.Mutex
	var revoked []x509.RevocationListEntry
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		crlHits.Add(1)
		mu.Lock()
		defer mu.Unlock()
		der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
			Number: big.NewInt(1), ThisUpdate: time.Now().Add(-time.Minute), NextUpdate: time.Now().Add(time.Hour),
			RevokedCertificateEntries: revoked,
		}, ca.cert, ca.key)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		_, _ = w.Write(der)
	}))
	t.Cleanup(srv.Close)
	withCRL := func(url, addr string) *x509.Certificate {
		tmpl := recipientTemplate(addr)
		tmpl.CRLDistributionPoints = []string{url}
		return tmpl
	}
	good := ca.issue(t, withCRL(srv.URL, "good@example.org"), nil)
	gone := ca.issue(t, withCRL(srv.URL, "gone@example.org"), nil)
	mu.Lock()
	revoked = append(revoked, x509.RevocationListEntry{SerialNumber: gone.SerialNumber, RevocationTime: time.Now().Add(-time.Minute)})
	mu.Unlock()
	unreachable := ca.issue(t, withCRL(deadLoopbackURL(t), "far@example.org"), nil)
	untrusted := stranger.issue(t, recipientTemplate("stranger@example.org"), nil)

	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	v, err := smime.NewValidator(smime.Options{Roots: roots, HTTPClient: &http.Client{Timeout: 5 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	s := newImportStore(t)
	res, err := ImportFileWith(t.Context(), s, writeFile(t, "bundle.pem", pemCerts(good, gone, unreachable, untrusted)),
		time.Now(), ImportOptions{X509: v})
	if err != nil || len(res) != 4 {
		t.Fatalf("ImportFileWith = %+v, %v", res, err)
	}
	if res[0].Err != nil {
		t.Errorf("good certificate: %v", res[0].Err)
	}
	for i, want := range []error{nil, smime.ErrRevoked, smime.ErrRevocationUnknown, smime.ErrUnusable} {
		if want != nil && !errors.Is(res[i].Err, want) {
			t.Errorf("certificate %d: %v; want %v", i, res[i].Err, want)
		}
	}
	if !strings.Contains(res[3].Err.Error(), "untrusted chain") {
		t.Errorf("untrusted certificate: %v; want the reason named", res[3].Err)
	}
	keys, err := s.List(t.Context())
	if err != nil || len(keys) != 1 || keys[0].Fingerprint != sha256Hex(good.Raw) {
		t.Errorf("stored %v, %v; want only the good certificate", fingerprints(keys), err)
	}
	if crlHits.Load() != 1 {
		t.Errorf("CRL fetched %d times; want once (cached)", crlHits.Load())
	}
}

func TestImportX509ChainInBundle(t *testing.T) {
	root := newX509CA(t, "Root")
	_, leafKey := x509TestKeys(t)
	interTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(x509Serial.Add(1)), Subject: pkix.Name{CommonName: "Intermediate"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	inter := &x509CA{cert: root.issue(t, interTmpl, leafKey.Public()), key: leafKey}
	leaf := inter.issue(t, recipientTemplate("bob@example.org"), nil)
	roots := x509.NewCertPool()
	roots.AddCert(root.cert)
	v, err := smime.NewValidator(smime.Options{Roots: roots, Revocation: smime.Off})
	if err != nil {
		t.Fatal(err)
	}
	s := newImportStore(t)
	res, err := ImportWith(t.Context(), s, pemCerts(leaf, inter.cert, root.cert), time.Now(), ImportOptions{X509: v})
	if err != nil || len(res) != 3 || res[0].Err != nil {
		t.Fatalf("ImportWith = %+v, %v; want the leaf stored with the chain from the bundle", res, err)
	}
	if res[1].Err == nil || res[2].Err == nil {
		t.Errorf("CA certificates of the bundle were stored: %+v", res[1:])
	}
	// Without its intermediate the leaf does not chain.
	res, err = ImportWith(t.Context(), newImportStore(t), pemCerts(leaf), time.Now(), ImportOptions{X509: v})
	if err != nil || len(res) != 1 || !errors.Is(res[0].Err, smime.ErrUnusable) {
		t.Errorf("leaf alone = %+v, %v; want an untrusted-chain refusal", res, err)
	}
}

func TestImportX509RefusesPrivateKeys(t *testing.T) {
	ca := newX509CA(t, "Test CA")
	_, leafKey := x509TestKeys(t)
	leaf := ca.issue(t, recipientTemplate("bob@example.org"), nil)
	pkcs8, err := x509.MarshalPKCS8PrivateKey(leafKey)
	if err != nil {
		t.Fatal(err)
	}
	p12, err := pkcs12.Modern.Encode(leafKey, leaf, []*x509.Certificate{ca.cert}, "pw")
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})
	for name, data := range map[string][]byte{
		"cert.pem with key":  append(pemCerts(leaf), keyPEM...),
		"key.pem":            keyPEM,
		"rsa.key":            pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(leafKey)}),
		"key.der":            pkcs8,
		"bob.p12":            p12,
		"indefinite BER p12": {0x30, 0x80, 0x02, 0x01, 0x03, 0x30, 0x80, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01, 0, 0},
	} {
		t.Run(name, func(t *testing.T) {
			s := newImportStore(t)
			res, err := ImportFile(t.Context(), s, writeFile(t, "in", data), time.Now())
			if !errors.Is(err, smime.ErrPrivateKey) || res != nil || !strings.HasPrefix(err.Error(), "keydir: ") {
				t.Errorf("ImportFile = %+v, %v; want nothing and a keydir error wrapping smime.ErrPrivateKey", res, err)
			}
			if strings.Contains(name, "p12") && !strings.Contains(err.Error(), "PKCS#12 files hold private keys") {
				t.Errorf("error %q does not say why PKCS#12 is refused", err)
			}
			assertEmpty(t, s)
		})
	}
}

func TestImportWithStillTakesPGP(t *testing.T) {
	s := newImportStore(t)
	bob := newEntity(t, "Bob", "bob@example.org", genConfig())
	res, err := ImportWith(t.Context(), s, armored(t, openpgp.PublicKeyType, publicKey(t, bob)), time.Now(), ImportOptions{})
	if err != nil || len(res) != 1 || res[0].Err != nil || res[0].Fingerprint != fpr(bob) {
		t.Fatalf("ImportWith(PGP) = %+v, %v", res, err)
	}
}

func TestDetectFormatPrivateKeys(t *testing.T) {
	for name, c := range map[string]struct {
		data []byte
		want inputFormat
	}{
		"PEM private key":  {pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: []byte{1}}), formatX509},
		"OpenPGP secret":   {[]byte("-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nxx\n-----END PGP PRIVATE KEY BLOCK-----\n"), formatPGP},
		"indefinite BER":   {[]byte{0x30, 0x80, 0x02, 0x01, 0x03}, formatX509},
		"one byte 0x30":    {[]byte{0x30}, formatPGP},
		"armored public":   {[]byte("-----BEGIN PGP PUBLIC KEY BLOCK-----\n"), formatPGP},
		"PEM with comment": {[]byte("some words -----BEGIN ENCRYPTED PRIVATE KEY-----\n"), formatX509},
	} {
		if got := detectFormat(c.data); got != c.want {
			t.Errorf("detectFormat(%s) = %v; want %v", name, got, c.want)
		}
	}
}

// deadLoopbackURL is an http URL on loopback where nothing listens.
func deadLoopbackURL(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return "http://" + addr + "/crl"
}

func selfSignedKey(t *testing.T) crypto.PublicKey {
	t.Helper()
	c, err := x509.ParseCertificate(selfSignedDER(t))
	if err != nil {
		t.Fatal(err)
	}
	return c.PublicKey
}
