package pgp

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"time"
)

// boundaryPrefix starts every boundary we generate. The base64 alphabet of
// the armored part contains no '-', so no body line can begin with
// "--" + boundary (RFC 2046 §5.1.1).
const boundaryPrefix = "sealgate-"

// NewBoundary returns a fresh random MIME boundary: "sealgate-" and 24 hex
// digits (96 random bits).
func NewBoundary() string {
	var b [12]byte
	// crypto/rand.Read never returns an error (Go 1.24+).
	_, _ = rand.Read(b[:])
	return boundaryPrefix + hex.EncodeToString(b[:])
}

// MIMEContentType is the Content-Type header value of an RFC 3156
// multipart/encrypted body that uses boundary.
func MIMEContentType(boundary string) string {
	// RFC 3156 §4: protocol="application/pgp-encrypted" is required.
	return `multipart/encrypted; protocol="application/pgp-encrypted"; boundary="` + boundary + `"`
}

// mimeHead is everything of the RFC 3156 §4 body before the armored
// ciphertext; the preamble is ignored by MIME readers (RFC 2046 §5.1.1).
func mimeHead(boundary string) string {
	return "This is an OpenPGP/MIME encrypted message (RFC 3156).\r\n" +
		"--" + boundary + "\r\n" +
		// RFC 3156 §4: the first part is application/pgp-encrypted and
		// holds "Version: 1".
		"Content-Type: application/pgp-encrypted\r\n" +
		"Content-Description: PGP/MIME version identification\r\n" +
		"\r\n" +
		"Version: 1\r\n" +
		"\r\n" +
		"--" + boundary + "\r\n" +
		// RFC 3156 §4: the second part is application/octet-stream and
		// holds the armored OpenPGP message.
		`Content-Type: application/octet-stream; name="encrypted.asc"` + "\r\n" +
		"Content-Description: OpenPGP encrypted message\r\n" +
		`Content-Disposition: inline; filename="encrypted.asc"` + "\r\n" +
		"\r\n"
}

// EncryptMIME writes an RFC 3156 multipart/encrypted body (the part after
// the header) to w. The returned writer takes the inner MIME entity; its
// Close finishes the ciphertext and writes the closing boundary. It does
// not close w. Every line of the output ends in CRLF.
func EncryptMIME(w io.Writer, boundary string, to []*Cert, opts EncryptOptions) (io.WriteCloser, error) {
	if !validBoundary(boundary) {
		return nil, errors.New("pgp: invalid MIME boundary")
	}
	now := opts.now().Truncate(time.Second)
	opts.Now = func() time.Time { return now }
	// Check the recipients before anything is written.
	if _, err := recipients(to, now); err != nil {
		return nil, err
	}
	out := bufio.NewWriterSize(w, outputBufferSize)
	if _, err := out.WriteString(mimeHead(boundary)); err != nil {
		return nil, err
	}
	// The MIME body is canonical CRLF, armor included (RFC 2046 §4.1.1).
	// RFC 2046 §5.1.1: the CRLF before the close delimiter belongs to it.
	enc, err := encryptArmored(out, to, opts, "\r\n", "\r\n--"+boundary+"--\r\n")
	if err != nil {
		return nil, err
	}
	return enc, nil
}

// validBoundary reports whether b is a legal boundary (RFC 2046 §5.1.1):
// 1 to 70 characters from bchars, not ending in a space. We also refuse
// characters that would need escaping inside the quoted parameter.
func validBoundary(b string) bool {
	if len(b) == 0 || len(b) > 70 || b[len(b)-1] == ' ' {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case bytes.IndexByte([]byte("'()+_,-./:=? "), c) >= 0:
		default:
			return false
		}
	}
	return true
}
