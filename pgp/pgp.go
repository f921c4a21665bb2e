// Package pgp holds sealgate's OpenPGP logic: reading and validating public
// certificates, choosing encryption keys, and writing PGP/MIME (RFC 3156) on
// streams. It never reads, stores or uses secret key material.
package pgp

import (
	"errors"
	"io"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
)

// ErrSecretKey is returned (wrapped) by ReadCerts when its input holds any
// secret key material. Nothing from such an input is returned.
var ErrSecretKey = errors.New("pgp: input contains secret key material; only public keys may be imported")

// Cert is one public OpenPGP certificate (transferable public key).
type Cert struct {
	Entity *openpgp.Entity
}

// ReadCerts parses every certificate in r: ASCII-armored (one or several
// armor blocks) or binary, one or many certificates. It reads at most
// maxBytes (> 0) and fails if the input is larger.
func ReadCerts(r io.Reader, maxBytes int64) ([]*Cert, error) {
	return nil, errors.New("pgp: ReadCerts not implemented")
}

// Fingerprint is the primary key's fingerprint in upper-case hex.
func (c *Cert) Fingerprint() string { return "" }

// Addresses lists the e-mail addresses of the certificate's user IDs
// that are not revoked, as written in the user IDs (not normalised).
func (c *Cert) Addresses() []string { return nil }

// Bytes is the binary serialisation of the public certificate.
func (c *Cert) Bytes() []byte { return nil }

// CheckEncryption reports whether the certificate can be encrypted to at
// time now. The error explains why not, for an admin to read.
func (c *Cert) CheckEncryption(now time.Time) error { return errors.New("not implemented") }

// EncryptOptions tunes Encrypt and EncryptMIME. The zero value is safe.
type EncryptOptions struct {
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// Encrypt returns a writer; what is written to it is encrypted to every
// recipient and written ASCII-armored to w. Close finishes the message
// (it does not close w).
func Encrypt(w io.Writer, to []*Cert, opts EncryptOptions) (io.WriteCloser, error) {
	return nil, errors.New("pgp: Encrypt not implemented")
}

// NewBoundary returns a fresh random MIME boundary.
func NewBoundary() string { return "" }

// MIMEContentType is the Content-Type header value of an RFC 3156
// multipart/encrypted body that uses boundary.
func MIMEContentType(boundary string) string { return "" }

// EncryptMIME writes an RFC 3156 multipart/encrypted body (the part after
// the header) to w. The returned writer takes the inner MIME entity; its
// Close finishes the ciphertext and writes the closing boundary.
func EncryptMIME(w io.Writer, boundary string, to []*Cert, opts EncryptOptions) (io.WriteCloser, error) {
	return nil, errors.New("pgp: EncryptMIME not implemented")
}
