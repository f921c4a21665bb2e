package smime

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"

	"go.mozilla.org/pkcs7"
)

// pemPrivateKeyLabel is the suffix of every PEM label that holds a private
// key: "PRIVATE KEY" (PKCS#8), "ENCRYPTED PRIVATE KEY", "RSA PRIVATE KEY",
// "EC PRIVATE KEY", "DSA PRIVATE KEY", "OPENSSH PRIVATE KEY" (RFC 7468 §10,
// §11 and the legacy OpenSSL labels).
const pemPrivateKeyLabel = "PRIVATE KEY"

var pemBegin = []byte("-----BEGIN ")

// errPKCS12 is the whole-input refusal for PKCS#12 (PFX) files.
var errPKCS12 = fmt.Errorf("%w: PKCS#12 files hold private keys; export the certificate alone (PEM or DER)", ErrPrivateKey)

// ReadCerts parses every X.509 certificate in data: PEM (any number of
// CERTIFICATE blocks, with any text around them), DER (one certificate or
// several concatenated), or a PKCS#7/CMS certs-only bundle (.p7b/.p7c, PEM
// "PKCS7" or DER). Duplicates are returned once, in input order.
//
// An input that holds a private key anywhere (a PEM block whose label ends
// in "PRIVATE KEY", a DER private key, or a PKCS#12 file) is refused as a
// whole with an error wrapping ErrPrivateKey, and nothing is returned. So is
// an input with a certificate that does not parse: an import takes
// everything or nothing.
func ReadCerts(data []byte) ([]*x509.Certificate, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, ErrNoCert
	}
	var certs []*x509.Certificate
	var err error
	if bytes.Contains(data, pemBegin) {
		certs, err = readPEM(data)
	} else {
		certs, err = readDER(data)
	}
	if err != nil {
		return nil, err
	}
	if len(certs) == 0 {
		return nil, ErrNoCert
	}
	return dedupe(certs), nil
}

// readPEM scans every PEM label for private keys before parsing anything,
// including blocks pem.Decode would skip because their body is malformed.
func readPEM(data []byte) ([]*x509.Certificate, error) {
	for rest := data; ; {
		i := bytes.Index(rest, pemBegin)
		if i < 0 {
			break
		}
		rest = rest[i+len(pemBegin):]
		label, _, _ := bytes.Cut(rest, []byte("-----"))
		if bytes.Contains(bytes.ToUpper(label), []byte(pemPrivateKeyLabel)) {
			return nil, fmt.Errorf("%w (PEM block %q)", ErrPrivateKey, string(label))
		}
		if bytes.Contains(bytes.ToUpper(label), []byte("PKCS12")) {
			return nil, errPKCS12
		}
	}
	var certs []*x509.Certificate
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		got, err := readPEMBlock(block)
		if err != nil {
			return nil, err
		}
		certs = append(certs, got...)
	}
	return certs, nil
}

func readPEMBlock(block *pem.Block) ([]*x509.Certificate, error) {
	switch block.Type {
	case "CERTIFICATE", "X509 CERTIFICATE", "TRUSTED CERTIFICATE":
		// OpenSSL's TRUSTED CERTIFICATE is the certificate followed by its
		// trust settings: parse only the first element.
		var first asn1.RawValue
		if _, err := asn1.Unmarshal(block.Bytes, &first); err != nil {
			return nil, derError(block.Bytes, fmt.Errorf("smime: PEM %s block: %w", block.Type, err))
		}
		c, err := x509.ParseCertificate(first.FullBytes)
		if err != nil {
			return nil, derError(block.Bytes, fmt.Errorf("smime: PEM %s block: %w", block.Type, err))
		}
		return []*x509.Certificate{c}, nil
	case "PKCS7", "CMS":
		if isPKCS12(block.Bytes) {
			return nil, errPKCS12
		}
		return readPKCS7(block.Bytes)
	default:
		// CRLs, requests, parameters, public keys: nothing to import. Their
		// labels were checked for private keys already.
		return nil, nil
	}
}

// readDER reads binary input: a PKCS#12 file or private key is refused, then
// one or more concatenated certificates, then a PKCS#7 bundle.
func readDER(data []byte) ([]*x509.Certificate, error) {
	if isPKCS12(data) {
		return nil, errPKCS12
	}
	if certs, err := x509.ParseCertificates(data); err == nil {
		return certs, nil
	} else if certs, perr := readPKCS7(data); perr == nil {
		return certs, nil
	} else {
		return nil, derError(data, fmt.Errorf("smime: not an X.509 certificate or PKCS#7 bundle: %w", errors.Join(err, perr)))
	}
}

// derError returns ErrPrivateKey when der is a private key, otherwise err.
// It is called only for input that did not parse as certificates, so the
// private-key parsers never run on a valid certificate.
func derError(der []byte, err error) error {
	if isPKCS12(der) {
		return errPKCS12
	}
	if isDERPrivateKey(der) {
		return fmt.Errorf("%w (DER private key)", ErrPrivateKey)
	}
	return err
}

func isDERPrivateKey(der []byte) bool {
	if _, err := x509.ParsePKCS8PrivateKey(der); err == nil {
		return true
	}
	if _, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		return true
	}
	if _, err := x509.ParseECPrivateKey(der); err == nil {
		return true
	}
	// EncryptedPrivateKeyInfo (RFC 5958 §3): SEQUENCE { AlgorithmIdentifier,
	// OCTET STRING }. Certificates never look like this.
	var epki struct {
		Algorithm struct {
			Algorithm  asn1.ObjectIdentifier
			Parameters asn1.RawValue `asn1:"optional"`
		}
		EncryptedData []byte
	}
	rest, err := asn1.Unmarshal(der, &epki)
	return err == nil && len(rest) == 0
}

// readPKCS7 returns the certificates of a PKCS#7/CMS SignedData (a certs-only
// bundle or a signature that carries certificates). pkcs7 v0.10.0 fixed the
// known ber2der panics (reliability reference 1.3-6); recover stays as
// defence in depth.
func readPKCS7(der []byte) (certs []*x509.Certificate, err error) {
	defer func() {
		if r := recover(); r != nil {
			certs, err = nil, fmt.Errorf("smime: malformed PKCS#7 structure (parser panic: %v)", r)
		}
	}()
	p7, err := pkcs7.Parse(der)
	if err != nil {
		return nil, fmt.Errorf("smime: PKCS#7: %w", err)
	}
	return p7.Certificates, nil
}

// isPKCS12 reports whether data starts like a PFX (RFC 7292 §4):
// SEQUENCE { version INTEGER (3), authSafe ContentInfo { OID data or
// signedData, ... }, ... }. Only the headers are walked, so BER
// (indefinite-length) files are caught too.
func isPKCS12(data []byte) bool {
	body, ok := enterHeader(data, 0x30)
	if !ok || !bytes.HasPrefix(body, []byte{0x02, 0x01, 0x03}) {
		return false
	}
	ci, ok := enterHeader(body[3:], 0x30)
	if !ok || len(ci) < 2 || ci[0] != 0x06 {
		return false
	}
	var oid asn1.ObjectIdentifier
	if _, err := asn1.Unmarshal(ci, &oid); err != nil {
		return false
	}
	return oid.Equal(oidData) || oid.Equal(oidSignedData)
}

// enterHeader checks that b starts with tag and returns what follows the
// length octets (definite or indefinite), without checking the length.
func enterHeader(b []byte, tag byte) ([]byte, bool) {
	if len(b) < 2 || b[0] != tag {
		return nil, false
	}
	l := b[1]
	switch {
	case l < 0x80 || l == 0x80:
		return b[2:], true
	default:
		n := int(l & 0x7f)
		if n > 4 || len(b) < 2+n {
			return nil, false
		}
		return b[2+n:], true
	}
}

func dedupe(certs []*x509.Certificate) []*x509.Certificate {
	seen := make(map[string]bool, len(certs))
	out := make([]*x509.Certificate, 0, len(certs))
	for _, c := range certs {
		if !seen[string(c.Raw)] {
			seen[string(c.Raw)] = true
			out = append(out, c)
		}
	}
	return out
}

// Fingerprint is the upper-case hex SHA-256 of the certificate's DER: the
// key directory's fingerprint for X.509 certificates.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return strings.ToUpper(hex.EncodeToString(sum[:]))
}

// Addresses returns the certificate's e-mail addresses as written: its
// rfc822Name subjectAltNames, or, only when it has none, the legacy
// emailAddress attributes of its subject (RFC 8550 §3: SANs are the place;
// the DN attribute is for old certificates). Empty values are dropped,
// duplicates (ignoring case) listed once.
func Addresses(cert *x509.Certificate) []string {
	if cert == nil {
		return nil
	}
	var addrs []string
	add := func(a string) {
		a = strings.TrimSpace(a)
		if a != "" && !slices.ContainsFunc(addrs, func(o string) bool { return strings.EqualFold(o, a) }) {
			addrs = append(addrs, a)
		}
	}
	for _, a := range cert.EmailAddresses {
		add(a)
	}
	if len(cert.EmailAddresses) > 0 {
		return addrs
	}
	for _, atv := range cert.Subject.Names {
		if s, ok := atv.Value.(string); ok && atv.Type.Equal(oidEmailAddress) {
			add(s)
		}
	}
	return addrs
}
