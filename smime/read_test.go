package smime

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.mozilla.org/pkcs7"
	"software.sslmate.com/src/go-pkcs12"
)

func rawOf(certs []*x509.Certificate) [][]byte {
	var out [][]byte
	for _, c := range certs {
		out = append(out, c.Raw)
	}
	return out
}

func TestReadCertsFormats(t *testing.T) {
	root := newCA(t, "Test Root", nil)
	a := root.issue(t, leafTemplate("a@example.org"), nil)
	b := root.issue(t, leafTemplate("b@example.org"), nil)
	r := newOpenSSLRecipient(t, root)
	run(t, r.dir, nil, nil, "openssl", "crl2pkcs7", "-nocrl", "-certfile", "bob.pem", "-certfile", "ca.pem", "-outform", "DER", "-out", "bundle.p7b")
	run(t, r.dir, nil, nil, "openssl", "crl2pkcs7", "-nocrl", "-certfile", "bob.pem", "-certfile", "ca.pem", "-out", "bundle.p7c.pem")
	run(t, r.dir, nil, nil, "openssl", "x509", "-in", "bob.pem", "-trustout", "-addtrust", "emailProtection", "-out", "trusted.pem")
	degenerate, err := pkcs7.DegenerateCertificate(append(slices.Clone(a.Raw), b.Raw...))
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		data []byte
		want [][]byte
	}{
		"PEM":                         {certPEM(a), [][]byte{a.Raw}},
		"PEM chain with text around":  {append(append([]byte("Bag Attributes\n  friendlyName: a\n"), certPEM(a, root.cert)...), "trailing words\n"...), [][]byte{a.Raw, root.cert.Raw}},
		"PEM duplicates":              {certPEM(a, b, a), [][]byte{a.Raw, b.Raw}},
		"DER":                         {a.Raw, [][]byte{a.Raw}},
		"DER concatenated":            {append(slices.Clone(a.Raw), b.Raw...), [][]byte{a.Raw, b.Raw}},
		"PKCS#7 DER from openssl":     {readFile(t, filepath.Join(r.dir, "bundle.p7b")), [][]byte{r.cert.Raw, root.cert.Raw}},
		"PKCS#7 PEM from openssl":     {readFile(t, filepath.Join(r.dir, "bundle.p7c.pem")), [][]byte{r.cert.Raw, root.cert.Raw}},
		"PKCS#7 from pkcs7":           {degenerate, [][]byte{a.Raw, b.Raw}},
		"TRUSTED CERTIFICATE":         {readFile(t, filepath.Join(r.dir, "trusted.pem")), [][]byte{r.cert.Raw}},
		"PEM beside a CRL block":      {append(pemBytes("X509 CRL", []byte{0x30, 0}), certPEM(b)...), [][]byte{b.Raw}},
		"openssl recipient with text": {readFile(t, r.certPath), [][]byte{r.cert.Raw}},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := ReadCerts(c.data)
			if err != nil {
				t.Fatalf("ReadCerts: %v", err)
			}
			if !slices.EqualFunc(rawOf(got), c.want, bytes.Equal) {
				t.Errorf("ReadCerts returned %d certificates, not the %d expected ones in order", len(got), len(c.want))
			}
		})
	}
}

func TestReadCertsRefusesPrivateKeys(t *testing.T) {
	root := newCA(t, "Test Root", nil)
	leaf := root.issue(t, leafTemplate("a@example.org"), nil)
	r := newOpenSSLRecipient(t, root)
	loadTestKeys(t)
	pkcs8, err := x509.MarshalPKCS8PrivateKey(rsaKey(t, 1))
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalECPrivateKey(testKeys.ec)
	if err != nil {
		t.Fatal(err)
	}
	run(t, r.dir, nil, nil, "openssl", "pkcs8", "-topk8", "-in", "bob.key", "-passout", "pass:x", "-outform", "DER", "-out", "enc.der")
	goP12, err := pkcs12.Modern.Encode(rsaKey(t, 1), leaf, nil, "pw")
	if err != nil {
		t.Fatal(err)
	}
	trustStore, err := pkcs12.EncodeTrustStore(rand.Reader, []*x509.Certificate{leaf}, "pw")
	if err != nil {
		t.Fatal(err)
	}
	opensslP12 := readFile(t, r.p12(t, "bob.p12"))
	cases := map[string][]byte{
		"PEM PRIVATE KEY":                  keyPEM(t, rsaKey(t, 1)),
		"PEM key after a certificate":      append(certPEM(leaf), keyPEM(t, rsaKey(t, 1))...),
		"PEM RSA PRIVATE KEY":              pemBytes("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey(t, 1))),
		"PEM EC PRIVATE KEY":               pemBytes("EC PRIVATE KEY", ecDER),
		"PEM ENCRYPTED PRIVATE KEY":        pemBytes("ENCRYPTED PRIVATE KEY", readFile(t, filepath.Join(r.dir, "enc.der"))),
		"PEM key block with broken base64": append(certPEM(leaf), "-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n"...),
		"openssl key file with its cert":   append(readFile(t, r.keyPath), readFile(t, r.certPath)...),
		"DER PKCS#8 key":                   pkcs8,
		"DER PKCS#1 key":                   x509.MarshalPKCS1PrivateKey(rsaKey(t, 1)),
		"DER EC key":                       ecDER,
		"DER encrypted PKCS#8 key":         readFile(t, filepath.Join(r.dir, "enc.der")),
		"PKCS#12 from openssl (AES)":       opensslP12,
		"PKCS#12 legacy 3DES":              readFile(t, r.p12(t, "legacy.p12", "-keypbe", "PBE-SHA1-3DES", "-certpbe", "PBE-SHA1-3DES", "-macalg", "sha1")),
		"PKCS#12 from go-pkcs12":           goP12,
		"PKCS#12 trust store (no key)":     trustStore,
		"PKCS#12 in a CERTIFICATE block":   pemBytes("CERTIFICATE", opensslP12),
		"PKCS#12 in a PKCS7 block":         pemBytes("PKCS7", opensslP12),
		"PKCS#12 as base64 PEM label":      pemBytes("PKCS12", opensslP12),
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			certs, err := ReadCerts(data)
			if !errors.Is(err, ErrPrivateKey) || certs != nil {
				t.Fatalf("ReadCerts = %d certs, %v; want nothing and ErrPrivateKey", len(certs), err)
			}
			if strings.HasPrefix(name, "PKCS#12") && !strings.Contains(err.Error(), "PKCS#12 files hold private keys") {
				t.Errorf("error %q does not say why PKCS#12 is refused", err)
			}
		})
	}
}

func TestReadCertsRefusesGarbage(t *testing.T) {
	for name, data := range map[string][]byte{
		"empty":               nil,
		"blank":               []byte("\n \r\n"),
		"text":                []byte("hello"),
		"only a CRL block":    pemBytes("X509 CRL", []byte{0x30, 0}),
		"bad certificate PEM": pemBytes("CERTIFICATE", []byte{0x30, 0x03, 0x02, 0x01, 0x01}),
		"truncated DER":       []byte{0x30, 0x82, 0x05},
		// Reliability reference C4: inputs that crashed pkcs7's ber2der.
		"ber 1F 80":    {0x1f, 0x80},
		"ber 1F 05":    {0x1f, 0x05},
		"ber 30 81":    {0x30, 0x81},
		"ber 30 84 01": {0x30, 0x84, 0x01},
		"ber 5F 4D":    {0x5f, 0x4d},
		"ber 30 82 06": {0x30, 0x82, 0x06},
		"deep BER":     append(bytes.Repeat([]byte{0x30, 0x80}, 10000), bytes.Repeat([]byte{0, 0}, 10000)...),
	} {
		certs, err := ReadCerts(data)
		if err == nil || certs != nil || errors.Is(err, ErrPrivateKey) || !strings.HasPrefix(err.Error(), "smime: ") {
			t.Errorf("ReadCerts(%s) = %d certs, %v; want an smime error", name, len(certs), err)
		}
	}
	if _, err := ReadCerts(nil); !errors.Is(err, ErrNoCert) {
		t.Errorf("ReadCerts(nil) = %v; want ErrNoCert", err)
	}
}

func TestAddresses(t *testing.T) {
	root := newCA(t, "Test Root", nil)
	subject := func(addrs ...string) pkix.Name {
		n := pkix.Name{CommonName: "x"}
		for _, a := range addrs {
			n.ExtraNames = append(n.ExtraNames, pkix.AttributeTypeAndValue{Type: oidEmailAddress, Value: a})
		}
		return n
	}
	for name, c := range map[string]struct {
		san     []string
		subject pkix.Name
		want    []string
	}{
		"SAN only":                 {san: []string{"a@example.org", "b@example.org"}, want: []string{"a@example.org", "b@example.org"}},
		"SAN wins over subject":    {san: []string{"a@example.org"}, subject: subject("s@example.org"), want: []string{"a@example.org"}},
		"subject only":             {subject: subject("s@example.org"), want: []string{"s@example.org"}},
		"duplicates ignoring case": {san: []string{"a@example.org", "A@Example.ORG"}, want: []string{"a@example.org"}},
		"none":                     {subject: pkix.Name{CommonName: "x"}},
	} {
		tmpl := leafTemplate("x@example.org")
		tmpl.EmailAddresses, tmpl.Subject = c.san, c.subject
		got := Addresses(root.issue(t, tmpl, nil))
		if !slices.Equal(got, c.want) {
			t.Errorf("Addresses(%s) = %q; want %q", name, got, c.want)
		}
	}
	if Addresses(nil) != nil {
		t.Error("Addresses(nil) is not nil")
	}
}

func TestIsPKCS12DetectsBER(t *testing.T) {
	// SEQUENCE (indefinite) { INTEGER 3, SEQUENCE (indefinite) { OID data ... } }
	ber := []byte{0x30, 0x80, 0x02, 0x01, 0x03, 0x30, 0x80, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01}
	if !isPKCS12(ber) {
		t.Error("BER PFX header not detected")
	}
	if _, err := ReadCerts([]byte(base64.StdEncoding.EncodeToString(ber))); errors.Is(err, ErrPrivateKey) {
		t.Error("base64 text without PEM armour taken for PKCS#12")
	}
}
