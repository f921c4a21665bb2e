// Package smime holds sealgate's X.509 and CMS logic: reading recipient
// certificates (refusing any input that holds a private key), validating
// them for encryption (chain, validity, key usage, address, revocation over
// CRL and OCSP), writing S/MIME EnvelopedData (RFC 8551, AES-256-CBC with RSA
// key transport) and, for the endpoint client, decrypting it.
//
// The gateway side never touches private keys; Decrypt and ReadKeyPair exist
// for the endpoint client (sealmail) only.
package smime

import (
	"encoding/asn1"
	"errors"
)

// Errors callers tell apart with errors.Is. Every error this package returns
// starts with "smime: " and names its reason; the ones below are wrapped
// with the detail (which certificate, which check) for the admin log.
var (
	// ErrPrivateKey: the input holds a private key (a PEM private key block
	// or a PKCS#12 file). Nothing from such an input is returned.
	ErrPrivateKey = errors.New("smime: input contains a private key; only certificates may be imported")
	// ErrNoCert: the input holds no certificate at all.
	ErrNoCert = errors.New("smime: no X.509 certificate found")
	// ErrUnsupportedKey: the certificate's key is not RSA. pkcs7 can only
	// do RSA key transport; EC needs RFC 5753 key agreement.
	ErrUnsupportedKey = errors.New("smime: unsupported key type")
	// ErrUnusable: the certificate fails a check for encryption (validity,
	// key usage, EKU, key size, chain, address). The wrapping error names
	// the check.
	ErrUnusable = errors.New("smime: certificate not usable for encryption")
	// ErrRevoked: a CRL or OCSP response says the certificate (or one in its
	// chain) is revoked. The gateway maps it to 550.
	ErrRevoked = errors.New("smime: certificate revoked")
	// ErrRevocationUnknown: revocation status could not be established
	// (responder unreachable, bad or stale response) under hard-fail. The
	// gateway maps it to 451: the sender retries later.
	ErrRevocationUnknown = errors.New("smime: revocation status unknown")
	// ErrNotSetUp: Encrypt was called before Setup, or pkcs7's algorithm
	// globals were changed behind our back.
	ErrNotSetUp = errors.New("smime: Setup was not called: refusing to encrypt with pkcs7's default algorithm (DES)")
	// ErrDecrypt is the one error Decrypt returns, whatever went wrong
	// (reliability reference C3: no padding or key oracle).
	ErrDecrypt = errors.New("smime: cannot decrypt")
)

// MinRSABits is the smallest RSA modulus accepted for a recipient.
const MinRSABits = 2048

// Object identifiers used here.
var (
	oidEmailAddress  = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}
	oidData          = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
	oidSignedData    = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 2}
	oidEnvelopedData = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 3}
	oidAuthEnveloped = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 1, 23}
	oidRSAEncryption = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}
	oidAES128CBC     = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 2}
	oidAES192CBC     = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 22}
	oidAES256CBC     = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 42}
	oidAES128GCM     = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 6}
	oidAES192GCM     = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 26}
	oidAES256GCM     = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 46}
)
