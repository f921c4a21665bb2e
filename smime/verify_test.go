package smime

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.mozilla.org/pkcs7"
)

// The signature verification matrix of reliability reference C7, with
// SignedData built by pkcs7 (which signs at the real clock, so these
// certificates are valid around time.Now, not testNow), and interop with
// what openssl cms and gpgsm sign.

const signerAddress = "signer@example.org"

// signerTemplate is a good S/MIME signing certificate, valid now.
func signerTemplate(address string) *x509.Certificate {
	now := time.Now()
	return &x509.Certificate{
		SerialNumber:   nextSerial(),
		Subject:        pkix.Name{CommonName: "Signer " + address},
		EmailAddresses: []string{address},
		NotBefore:      now.Add(-time.Hour),
		NotAfter:       now.Add(365 * 24 * time.Hour),
		KeyUsage:       x509.KeyUsageDigitalSignature,
		ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
	}
}

type signSpec struct {
	tmpl      *x509.Certificate // nil: signerTemplate
	selfSign  bool
	signers   int // 0 means 1; -1 means none
	digest    asn1.ObjectIdentifier
	detach    bool
	extraAttr []pkcs7.Attribute
}

// sign makes a SignedData over content as spec says, issued by ca.
func (spec signSpec) sign(t testing.TB, ca *testCA, content []byte) ([]byte, *x509.Certificate) {
	t.Helper()
	tmpl := spec.tmpl
	if tmpl == nil {
		tmpl = signerTemplate(signerAddress)
	}
	key := rsaKey(t, 2)
	var cert *x509.Certificate
	var parents []*x509.Certificate
	if spec.selfSign {
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
		if err != nil {
			t.Fatal(err)
		}
		if cert, err = x509.ParseCertificate(der); err != nil {
			t.Fatal(err)
		}
	} else {
		cert, parents = ca.issue(t, tmpl, key.Public()), []*x509.Certificate{ca.cert}
	}
	sd, err := pkcs7.NewSignedData(content)
	if err != nil {
		t.Fatal(err)
	}
	if spec.digest != nil {
		sd.SetDigestAlgorithm(spec.digest)
	} else {
		sd.SetDigestAlgorithm(pkcs7.OIDDigestAlgorithmSHA256)
	}
	n := spec.signers
	if n == 0 {
		n = 1
	}
	for range max(n, 0) {
		if err := sd.AddSignerChain(cert, crypto.PrivateKey(key), parents, pkcs7.SignerInfoConfig{ExtraSignedAttributes: spec.extraAttr}); err != nil {
			t.Fatal(err)
		}
	}
	if spec.detach {
		sd.Detach()
	}
	der, err := sd.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return der, cert
}

// withoutCertificates re-encodes a SignedData without its certificates.
func withoutCertificates(t testing.TB, der []byte) []byte {
	t.Helper()
	var ci struct {
		ContentType asn1.ObjectIdentifier
		Content     asn1.RawValue `asn1:"explicit,tag:0"`
	}
	var sd struct {
		Version          int
		DigestAlgorithms asn1.RawValue
		EncapContentInfo asn1.RawValue
		Certificates     asn1.RawValue `asn1:"optional,tag:0"`
		CRLs             asn1.RawValue `asn1:"optional,tag:1"`
		SignerInfos      asn1.RawValue
	}
	if err := unmarshalAll(der, &ci); err != nil {
		t.Fatal(err)
	}
	if err := unmarshalAll(ci.Content.Bytes, &sd); err != nil {
		t.Fatal(err)
	}
	sd.Certificates = asn1.RawValue{}
	inner := mustMarshal(t, sd)
	return mustMarshal(t, struct {
		ContentType asn1.ObjectIdentifier
		Content     asn1.RawValue
	}{oidSignedData, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: inner}})
}

func TestVerifySignedDataMatrix(t *testing.T) {
	t.Parallel()
	ca := newCA(t, "Signing CA", nil)
	other := newCA(t, "Other CA", nil)
	content := []byte("Content-Type: text/plain\r\n\r\nsigned text\r\n")
	in2Years := func() time.Time { return time.Now().Add(2 * 365 * 24 * time.Hour) }
	serverOnly := signerTemplate(signerAddress)
	serverOnly.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	encryptOnly := signerTemplate(signerAddress)
	encryptOnly.KeyUsage = x509.KeyUsageKeyEncipherment

	for _, tt := range []struct {
		name     string
		spec     signSpec
		detached []byte // passed to Verify
		tamper   bool
		noCerts  bool
		roots    *x509.CertPool
		now      func() time.Time
		want     error // nil, ErrBadSignature or ErrUntrustedSigner
	}{
		{name: "good opaque", want: nil},
		{name: "good detached", spec: signSpec{detach: true}, detached: content},
		{name: "opaque with the same detached content", detached: content},
		{name: "eContent differs from the detached content", detached: []byte("Content-Type: text/plain\r\n\r\nother\r\n"), want: ErrBadSignature},
		{name: "detached without content", spec: signSpec{detach: true}, want: ErrBadSignature},
		{name: "tampered content", tamper: true, want: ErrBadSignature},
		{name: "no trust anchor (system roots)", roots: x509.NewCertPool(), want: ErrUntrustedSigner},
		{name: "another CA", roots: other.pool(), want: ErrUntrustedSigner},
		{name: "no certificate for the signer", noCerts: true, want: ErrUntrustedSigner},
		{name: "self-signed signer embedded", spec: signSpec{selfSign: true}, want: ErrUntrustedSigner},
		// signingTime lies within validity, but now the certificate has
		// expired: pkcs7 would check the chain at signingTime.
		{name: "expired now, valid at signingTime", now: in2Years, want: ErrUntrustedSigner},
		{name: "no emailProtection EKU", spec: signSpec{tmpl: serverOnly}, want: ErrUntrustedSigner},
		{name: "key usage without digitalSignature", spec: signSpec{tmpl: encryptOnly}, want: ErrUntrustedSigner},
		{name: "zero signers", spec: signSpec{signers: -1}, want: ErrBadSignature},
		{name: "two signers", spec: signSpec{signers: 2}, want: ErrBadSignature},
		{name: "SHA-1 digest", spec: signSpec{digest: pkcs7.OIDDigestAlgorithmSHA1}, want: ErrBadSignature},
		{name: "two content-type attributes", spec: signSpec{extraAttr: []pkcs7.Attribute{
			{Type: oidAttributeContentType, Value: oidSignedData}}}, want: ErrBadSignature},
	} {
		t.Run(tt.name, func(t *testing.T) {
			der, cert := tt.spec.sign(t, ca, content)
			if tt.tamper {
				der = bytes.Replace(der, []byte("signed text"), []byte("signed TEXT"), 1)
			}
			if tt.noCerts {
				der = withoutCertificates(t, der)
			}
			roots := ca.pool()
			if tt.roots != nil {
				roots = tt.roots
			}
			sd, err := ParseSignedData(der)
			if err != nil {
				t.Fatalf("ParseSignedData: %v", err)
			}
			got, err := sd.Verify(tt.detached, VerifyOptions{Roots: roots, Now: tt.now})
			if (tt.want == nil) != (err == nil) || (tt.want != nil && !errors.Is(err, tt.want)) {
				t.Fatalf("Verify: %v, want %v", err, tt.want)
			}
			if err == nil && !got.Equal(cert) || tt.noCerts && got != nil {
				t.Error("Verify returned another certificate")
			}
			if tt.name == "expired now, valid at signingTime" {
				// The pitfall we guard against: pkcs7 alone accepts it.
				p7, perr := pkcs7.Parse(der)
				if perr != nil {
					t.Fatal(perr)
				}
				if perr := p7.VerifyWithChain(roots); perr != nil {
					t.Errorf("pkcs7 VerifyWithChain refuses it too (%v); the test no longer shows the pitfall", perr)
				}
			}
		})
	}
}

func TestVerifyContentTypeMustBeData(t *testing.T) {
	t.Parallel()
	ca := newCA(t, "Signing CA", nil)
	der, _ := signSpec{}.sign(t, ca, []byte("x"))
	// Swap eContentType id-data for id-signedData: the content-type
	// attribute (id-data) no longer matches either.
	data, _ := asn1.Marshal(oidData)
	signed, _ := asn1.Marshal(oidSignedData)
	i := bytes.Index(der, data)
	j := bytes.LastIndex(der, data)
	if i < 0 || i == j {
		t.Fatal("id-data not found twice")
	}
	swapped := append(append(append([]byte{}, der[:i]...), signed...), der[i+len(data):]...)
	sd, err := ParseSignedData(swapped)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sd.Verify(nil, VerifyOptions{Roots: ca.pool()}); !errors.Is(err, ErrBadSignature) {
		t.Errorf("eContentType not id-data: %v", err)
	}
}

func TestParseSignedDataRefuses(t *testing.T) {
	t.Parallel()
	ca := newCA(t, "Signing CA", nil)
	good, _ := signSpec{}.sign(t, ca, []byte("x"))
	for name, in := range map[string][]byte{
		"empty":                      nil,
		"garbage":                    []byte("not DER at all"),
		"truncated":                  good[:len(good)/2],
		"trailing data":              append(append([]byte{}, good...), 0),
		"pkcs7 ber2der panic inputs": {0x30, 0x81},
	} {
		if _, err := ParseSignedData(in); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

// TestVerifyPeers: what openssl cms -sign (opaque and detached) and gpgsm
// --sign write verifies against the CA, and is untrusted without it.
func TestVerifyPeers(t *testing.T) {
	t.Parallel()
	ca := newCA(t, "Test CA", nil)
	r := newOpenSSLRecipient(t, ca) // bob@example.org, digitalSignature + emailProtection
	content := []byte("Content-Type: text/plain\r\n\r\nsigned by a peer\r\n")
	in := writeFile(t, r.dir, "content.txt", content)
	opaque := run(t, r.dir, nil, nil, "openssl", "cms", "-sign", "-nodetach", "-binary", "-in", in,
		"-signer", r.certPath, "-inkey", r.keyPath, "-outform", "DER")
	detached := run(t, r.dir, nil, nil, "openssl", "cms", "-sign", "-binary", "-in", in,
		"-signer", r.certPath, "-inkey", r.keyPath, "-outform", "DER")
	env := gpgsmHome(t, r)
	out := filepath.Join(r.dir, "gpgsm.p7s")
	// The key carries the PKCS#12 passphrase in gpg-agent: give it on fd 0.
	run(t, r.dir, []byte("test\n"), env, "gpgsm", "--batch", "--disable-dirmngr", "--disable-crl-checks", "--pinentry-mode", "loopback",
		"--passphrase-fd", "0", "-u", opensslAddress, "--sign", "-o", out, in)
	gpgsmOpaque := readFile(t, out)

	for name, tt := range map[string]struct {
		der      []byte
		detached []byte
	}{
		"openssl opaque":   {opaque, nil},
		"openssl detached": {detached, content},
		"gpgsm opaque":     {gpgsmOpaque, nil},
	} {
		sd, err := ParseSignedData(tt.der)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if tt.detached == nil {
			if c, ok := sd.Content(); !ok || !bytes.Equal(c, content) {
				t.Errorf("%s: content %q", name, c)
			}
		}
		cert, err := sd.Verify(tt.detached, VerifyOptions{Roots: ca.pool()})
		if err != nil || !HasAddress(cert, "Bob@Example.org") {
			t.Errorf("%s: %v", name, err)
		}
		if _, err := sd.Verify(tt.detached, VerifyOptions{Roots: x509.NewCertPool()}); !errors.Is(err, ErrUntrustedSigner) || !strings.Contains(err.Error(), "unknown authority") {
			t.Errorf("%s without the CA: %v", name, err)
		}
	}
}

func FuzzVerifySignedData(f *testing.F) {
	ca := newCA(f, "Fuzz CA", nil)
	good, _ := signSpec{}.sign(f, ca, []byte("Content-Type: text/plain\r\n\r\nfuzz\r\n"))
	f.Add(good)
	f.Add([]byte{0x30, 0x80, 0x06, 0x09})
	roots := ca.pool()
	f.Fuzz(func(t *testing.T, der []byte) {
		sd, err := ParseSignedData(der)
		if err != nil {
			return
		}
		_, _ = sd.Verify(nil, VerifyOptions{Roots: roots})
		_, _ = sd.Verify([]byte("x"), VerifyOptions{Roots: roots})
	})
}
