package smime

import (
	"bytes"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"time"

	"go.mozilla.org/pkcs7"
)

// Signature verification for the endpoint client (RFC 8551 §3.5): CMS
// SignedData, opaque (application/pkcs7-mime; smime-type=signed-data) or
// detached (multipart/signed with application/pkcs7-signature).
//
// pkcs7 checks the signature arithmetic and the message-digest attribute;
// everything else its Verify gets wrong or leaves out (reliability
// reference 1.3-5 and C7) is done here: exactly one SignerInfo; no
// eContent beside detached content unless it is the same; the
// content-type attribute; no SHA-1 digest; the signer's chain to our
// roots with the emailProtection EKU at the current time, never at the
// signer-supplied signingTime. Revocation of signer certificates is not
// checked (it needs the network; the Validator does it for recipients).

// Errors of (*SignedData).Verify, told apart with errors.Is; the wrapping
// error names the reason.
var (
	// ErrBadSignature: the signature does not verify, or the SignedData is
	// malformed or of a form we refuse. The sealmail verdict "bad".
	ErrBadSignature = errors.New("smime: bad signature")
	// ErrUntrustedSigner: the signature verifies, but its certificate is
	// missing from the message or does not chain to a trust anchor for
	// e-mail protection now. The sealmail verdict "unknown-key".
	ErrUntrustedSigner = errors.New("smime: signer not trusted")
)

// VerifyOptions configure (*SignedData).Verify.
type VerifyOptions struct {
	// Roots are the trust anchors for signer certificates; nil means the
	// system roots.
	Roots *x509.CertPool
	// Now is the time the chain is checked at; nil means time.Now.
	Now func() time.Time
}

// RFC 5652 §5.1 and §5.2, read before pkcs7 sees the input: pkcs7's parser
// ignores its own unmarshalling error (reliability reference 1.3-5).
type signedData struct {
	Version          int
	DigestAlgorithms asn1.RawValue
	EncapContentInfo encapContentInfo
	Certificates     asn1.RawValue   `asn1:"optional,tag:0"`
	CRLs             asn1.RawValue   `asn1:"optional,tag:1"`
	SignerInfos      []asn1.RawValue `asn1:"set"`
}

type encapContentInfo struct {
	EContentType asn1.ObjectIdentifier
	EContent     asn1.RawValue `asn1:"optional,explicit,tag:0"`
}

// signedAttribute is an Attribute of RFC 5652 §5.3: values is the SET.
type signedAttribute struct {
	typ    asn1.ObjectIdentifier
	values asn1.RawValue
}

// SignedData is a parsed, not yet verified, CMS SignedData.
type SignedData struct {
	der          []byte
	eContentType asn1.ObjectIdentifier
	content      []byte
	hasContent   bool
	signerInfos  int
}

var (
	oidAttributeContentType = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 3}
	oidSHA1                 = asn1.ObjectIdentifier{1, 3, 14, 3, 2, 26}
)

// ParseSignedData reads a ContentInfo holding SignedData, BER or DER. The
// input is held in memory: pkcs7's API takes []byte, the declared
// exception of STYLE rule 1; the caller bounds it (sealmail: its message
// size cap).
func ParseSignedData(ber []byte) (s *SignedData, err error) {
	defer func() {
		if r := recover(); r != nil {
			s, err = nil, fmt.Errorf("smime: malformed SignedData (parser panic: %v)", r)
		}
	}()
	der, err := berToDER(ber)
	if err != nil {
		return nil, err
	}
	var ci contentInfo
	if err := unmarshalAll(der, &ci); err != nil {
		return nil, fmt.Errorf("smime: CMS ContentInfo: %w", err)
	}
	if !ci.ContentType.Equal(oidSignedData) {
		return nil, fmt.Errorf("smime: CMS content type %v is not signed data", ci.ContentType)
	}
	var sd signedData
	if err := unmarshalAll(ci.Content.Bytes, &sd); err != nil {
		return nil, fmt.Errorf("smime: CMS SignedData: %w", err)
	}
	s = &SignedData{der: der, eContentType: sd.EncapContentInfo.EContentType, signerInfos: len(sd.SignerInfos)}
	if ec := sd.EncapContentInfo.EContent; len(ec.FullBytes) > 0 {
		if err := unmarshalAll(ec.Bytes, &s.content); err != nil {
			return nil, fmt.Errorf("smime: CMS eContent: %w", err)
		}
		s.hasContent = true
	}
	return s, nil
}

// Content returns the encapsulated content of an opaque SignedData,
// unverified; ok is false for a detached signature.
func (s *SignedData) Content() (content []byte, ok bool) {
	return s.content, s.hasContent
}

// Verify checks the signature over the encapsulated content (detached nil)
// or over detached, the canonical bytes of the first part of a
// multipart/signed (RFC 8551 §3.5.3). It returns the signer's certificate
// whenever the message names one it carries, also with an error. A nil
// error means: one signer, the signature verifies, and the certificate
// chains to opts.Roots now with emailProtection. It does not compare the
// certificate's addresses with the From address; see HasAddress.
func (s *SignedData) Verify(detached []byte, opts VerifyOptions) (signer *x509.Certificate, err error) {
	defer func() {
		if r := recover(); r != nil {
			signer, err = nil, fmt.Errorf("%w: malformed SignedData (parser panic: %v)", ErrBadSignature, r)
		}
	}()
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	content := s.content
	switch {
	case detached != nil && s.hasContent && !bytes.Equal(s.content, detached):
		// Johnny CMS class: what is shown differs from what is signed.
		return nil, fmt.Errorf("%w: the signature carries content that differs from the signed part", ErrBadSignature)
	case detached != nil:
		content = detached
	case !s.hasContent:
		return nil, fmt.Errorf("%w: a detached signature without its content", ErrBadSignature)
	}
	if !s.eContentType.Equal(oidData) {
		return nil, fmt.Errorf("%w: content type %v is not id-data", ErrBadSignature, s.eContentType)
	}
	if s.signerInfos != 1 {
		return nil, fmt.Errorf("%w: %d signers, want exactly one", ErrBadSignature, s.signerInfos)
	}
	p7, err := pkcs7.Parse(s.der)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadSignature, err)
	}
	if len(p7.Signers) != 1 {
		return nil, fmt.Errorf("%w: unsupported SignerInfo (only issuerAndSerialNumber identifies a signer)", ErrBadSignature)
	}
	si := p7.Signers[0]
	signer = p7.GetOnlySigner()
	if signer == nil {
		return nil, fmt.Errorf("%w: the message does not carry the signer's certificate", ErrUntrustedSigner)
	}
	if si.DigestAlgorithm.Algorithm.Equal(oidSHA1) {
		return signer, fmt.Errorf("%w: SHA-1 digest refused", ErrBadSignature)
	}
	if len(si.AuthenticatedAttributes) > 0 {
		attrs := make([]signedAttribute, len(si.AuthenticatedAttributes))
		for i, a := range si.AuthenticatedAttributes {
			attrs[i] = signedAttribute{typ: a.Type, values: a.Value}
		}
		if err := checkContentTypeAttribute(attrs, s.eContentType); err != nil {
			return signer, err
		}
	}
	p7.Content = content
	// A nil trust store makes pkcs7 check the signature alone; the chain
	// is ours, below.
	if err := p7.VerifyWithChainAtTime(nil, now()); err != nil {
		var digest *pkcs7.MessageDigestMismatchError
		if errors.As(err, &digest) { // its text spans lines of hex
			return signer, fmt.Errorf("%w: the content does not match the signed digest", ErrBadSignature)
		}
		return signer, fmt.Errorf("%w: %w", ErrBadSignature, err)
	}
	if err := checkSigner(signer, p7.Certificates, opts.Roots, now()); err != nil {
		return signer, err
	}
	return signer, nil
}

// checkContentTypeAttribute: with signed attributes, RFC 5652 §5.3 and
// §11.1 require exactly one content-type attribute, with one value equal
// to eContentType. pkcs7 leaves this as a TODO.
func checkContentTypeAttribute(attrs []signedAttribute, eContentType asn1.ObjectIdentifier) error {
	found := 0
	for _, a := range attrs {
		if !a.typ.Equal(oidAttributeContentType) {
			continue
		}
		found++
		var ct asn1.ObjectIdentifier
		if err := unmarshalAll(a.values.Bytes, &ct); err != nil || !ct.Equal(eContentType) {
			return fmt.Errorf("%w: the content-type attribute does not match the content", ErrBadSignature)
		}
	}
	if found != 1 {
		return fmt.Errorf("%w: %d content-type attributes, want one", ErrBadSignature, found)
	}
	return nil
}

// checkSigner decides whether the signer's certificate is trusted for
// e-mail signatures now: key usage allows signing (RFC 8550 §4.4.2), an
// RSA key is at least MinRSABits, and a chain reaches roots with the
// emailProtection EKU (RFC 8550 §4.4.4) at now, with the message's
// certificates as intermediates. x509.Verify also refuses expired
// certificates, SHA-1 certificate signatures and unknown critical
// extensions.
func checkSigner(signer *x509.Certificate, certs []*x509.Certificate, roots *x509.CertPool, now time.Time) error {
	if signer.KeyUsage != 0 && signer.KeyUsage&(x509.KeyUsageDigitalSignature|x509.KeyUsageContentCommitment) == 0 {
		return fmt.Errorf("%w: %s: key usage allows no signatures", ErrUntrustedSigner, describe(signer))
	}
	if k, ok := signer.PublicKey.(*rsa.PublicKey); ok && k.N.BitLen() < MinRSABits {
		return fmt.Errorf("%w: %s: RSA key of %d bits", ErrUntrustedSigner, describe(signer), k.N.BitLen())
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	_, err := signer.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: pool,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
	})
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrUntrustedSigner, describe(signer), err)
	}
	return nil
}
