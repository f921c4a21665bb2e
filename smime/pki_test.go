package smime

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A fixed clock for the validation tests: certificates are valid around it.
var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// RSA key generation is slow under -race: the tests share a few keys, each
// made on first use.
var testKeys struct {
	rsaOnce [4]sync.Once
	rsa     [4]*rsa.PrivateKey
	once    sync.Once
	rsa1024 *rsa.PrivateKey
	ec      *ecdsa.PrivateKey
}

// loadTestKeys makes the RSA-1024 and the EC key.
func loadTestKeys(t testing.TB) {
	t.Helper()
	testKeys.once.Do(func() {
		testKeys.rsa1024 = mustRSA(1024)
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		testKeys.ec = k
	})
}

func mustRSA(bits int) *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		panic(err)
	}
	return k
}

// rsaKey returns shared RSA-2048 test key i (0: roots, 1 and 2:
// recipients, 3: intermediates).
func rsaKey(t testing.TB, i int) *rsa.PrivateKey {
	t.Helper()
	testKeys.rsaOnce[i].Do(func() { testKeys.rsa[i] = mustRSA(2048) })
	return testKeys.rsa[i]
}

var serials atomic.Int64

func nextSerial() *big.Int { return big.NewInt(1000 + serials.Add(1)) }

type testCA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

// newCA makes a root (parent nil) or an intermediate CA.
func newCA(t testing.TB, name string, parent *testCA) *testCA {
	t.Helper()
	key := rsaKey(t, 0)
	tmpl := &x509.Certificate{
		SerialNumber:          nextSerial(),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"sealgate test"}},
		NotBefore:             testNow.Add(-24 * time.Hour),
		NotAfter:              testNow.Add(10 * 365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	// Intermediates get their own key so a chain is really a chain.
	if parent != nil {
		key = rsaKey(t, 3)
	}
	issuer, signer := tmpl, crypto.Signer(key)
	if parent != nil {
		issuer, signer = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, key.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: c, key: key}
}

func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// leafTemplate is a good recipient certificate for address.
func leafTemplate(address string) *x509.Certificate {
	return &x509.Certificate{
		SerialNumber:   nextSerial(),
		Subject:        pkix.Name{CommonName: "Recipient " + address},
		EmailAddresses: []string{address},
		NotBefore:      testNow.Add(-time.Hour),
		NotAfter:       testNow.Add(365 * 24 * time.Hour),
		KeyUsage:       x509.KeyUsageKeyEncipherment | x509.KeyUsageDigitalSignature,
		ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
	}
}

// issue signs tmpl for pub (nil: recipient key 1) with ca.
func (ca *testCA) issue(t testing.TB, tmpl *x509.Certificate, pub crypto.PublicKey) *x509.Certificate {
	t.Helper()
	if pub == nil {
		pub = rsaKey(t, 1).Public()
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func certPEM(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

func keyPEM(t testing.TB, key crypto.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

func writeFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
