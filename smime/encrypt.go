package smime

import (
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"go.mozilla.org/pkcs7"
)

// MIME header fields of the S/MIME part (RFC 8551 §3.2 and §3.3). The part
// is written as these three header fields, a blank line, and WriteMIMEBody.
const (
	ContentType             = "application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m"
	ContentTransferEncoding = "base64"
	ContentDisposition      = "attachment; filename=smime.p7m"
)

// MIMEHeader returns the header fields of the S/MIME part, in the order
// they are conventionally written.
func MIMEHeader() [][2]string {
	return [][2]string{
		{"Content-Type", ContentType},
		{"Content-Transfer-Encoding", ContentTransferEncoding},
		{"Content-Disposition", ContentDisposition},
	}
}

// pkcs7's algorithm choice is a package-global variable defaulting to
// DES-CBC (reliability reference 1.3-1). Setup writes it once; Encrypt only
// reads it, after setupDone says the write happened.
var (
	setupOnce sync.Once
	setupDone atomic.Bool
)

// Setup selects AES-256-CBC content encryption in pkcs7, once per process.
// Call it at start-up, before any Encrypt. Key transport is RSA PKCS#1
// v1.5, the only one pkcs7 v0.10 writes, which every S/MIME client reads.
// AES-GCM is deliberately not used: pkcs7 puts it in EnvelopedData instead
// of AuthEnvelopedData (RFC 5083), which OpenSSL and others refuse
// (reliability reference 1.3-2).
func Setup() {
	setupOnce.Do(func() {
		pkcs7.ContentEncryptionAlgorithm = pkcs7.EncryptionAlgorithmAES256CBC
		setupDone.Store(true)
	})
}

// Encrypt returns content as DER CMS EnvelopedData (RFC 5652 §6) for the
// recipients in to: AES-256-CBC, one RSA key-transport RecipientInfo per
// certificate. It fails with ErrNotSetUp unless Setup was called, with
// ErrUnsupportedKey for a non-RSA certificate, and if the output does not
// use AES-256-CBC: it never writes DES or 3DES.
//
// pkcs7 takes and returns []byte, the one declared exception to streaming
// (STYLE rule 1): the whole message and its encryption are in memory. The
// caller bounds content by [smime] max_message_bytes before calling; the
// output is about 4/3 of it once base64-encoded.
func Encrypt(content []byte, to []*x509.Certificate) ([]byte, error) {
	if !setupDone.Load() || pkcs7.ContentEncryptionAlgorithm != pkcs7.EncryptionAlgorithmAES256CBC {
		return nil, ErrNotSetUp
	}
	if len(to) == 0 {
		return nil, errors.New("smime: encrypt: no recipients")
	}
	for _, c := range to {
		if c == nil {
			return nil, errors.New("smime: encrypt: nil recipient certificate")
		}
		// pkcs7 asserts *rsa.PublicKey without checking and would panic.
		if err := checkKey(c); err != nil {
			return nil, fmt.Errorf("smime: encrypt: %w", err)
		}
	}
	// The full slice expression makes pkcs7's padding append copy instead of
	// writing into spare capacity of the caller's array.
	der, err := pkcs7.Encrypt(content[:len(content):len(content)], to)
	if err != nil {
		return nil, fmt.Errorf("smime: encrypt: %w", err)
	}
	der, alg, err := primitiveContent(der)
	if err != nil {
		return nil, fmt.Errorf("smime: encrypt: reading back pkcs7's output: %w", err)
	}
	if !alg.Equal(oidAES256CBC) {
		return nil, fmt.Errorf("smime: encrypt: pkcs7 wrote content algorithm %v, not AES-256-CBC", alg)
	}
	return der, nil
}

// primitiveContent re-encodes pkcs7's EnvelopedData with encryptedContent
// as a primitive [0] IMPLICIT OCTET STRING. pkcs7 writes it constructed
// (one OCTET STRING inside [0]), which is BER, not DER (X.690 §10.2), and
// GnuPG's gpgsm 2.2 (libksba) then decrypts the inner header as ciphertext
// and fails with "invalid padding"; OpenSSL writes it primitive. It also
// returns the content-encryption algorithm, for Encrypt to check.
func primitiveContent(der []byte) ([]byte, asn1.ObjectIdentifier, error) {
	var ci contentInfo
	if err := unmarshalAll(der, &ci); err != nil {
		return nil, nil, err
	}
	var ed envelopedData
	if err := unmarshalAll(ci.Content.Bytes, &ed); err != nil {
		return nil, nil, err
	}
	ct, err := (&envelope{content: ed.EncryptedContent}).ciphertext()
	if err != nil {
		return nil, nil, err
	}
	ed.EncryptedContent.EncryptedContent = asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, Bytes: ct}
	inner, err := asn1.Marshal(ed)
	if err != nil {
		return nil, nil, err
	}
	// The [0] EXPLICIT wrapper is spelled out: encoding/asn1 writes a
	// RawValue's FullBytes without it.
	out, err := asn1.Marshal(struct {
		ContentType asn1.ObjectIdentifier
		Content     asn1.RawValue
	}{oidEnvelopedData, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: inner}})
	return out, ed.EncryptedContent.ContentEncryptionAlgorithm.Algorithm, err
}

// ContentAlgorithm returns the content-encryption algorithm OID of a CMS
// EnvelopedData or AuthEnvelopedData (BER or DER).
func ContentAlgorithm(der []byte) (asn1.ObjectIdentifier, error) {
	env, err := parseEnvelope(der)
	if err != nil {
		return nil, err
	}
	return env.content.ContentEncryptionAlgorithm.Algorithm, nil
}

// WriteMIMEBody writes der base64-encoded (RFC 2045 §6.8) in lines of 76
// characters, each ended by CRLF, in writes of at most 64 lines.
func WriteMIMEBody(w io.Writer, der []byte) error {
	const (
		lineLen   = 76
		perLine   = lineLen / 4 * 3 // input bytes per full line
		batch     = 64              // lines per Write
		batchSize = batch * (lineLen + 2)
	)
	buf := make([]byte, 0, batchSize)
	for len(der) > 0 {
		n := min(perLine, len(der))
		buf = base64.StdEncoding.AppendEncode(buf, der[:n])
		buf = append(buf, '\r', '\n')
		der = der[n:]
		if len(buf)+lineLen+2 > batchSize || len(der) == 0 {
			if _, err := w.Write(buf); err != nil {
				return fmt.Errorf("smime: write MIME body: %w", err)
			}
			buf = buf[:0]
		}
	}
	return nil
}
