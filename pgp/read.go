package pgp

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// Armor block types (RFC 9580 §6.2).
const (
	armorPublicKey  = "PGP PUBLIC KEY BLOCK"
	armorPrivateKey = "PGP PRIVATE KEY BLOCK"
	armorMessage    = "PGP MESSAGE"
)

// OpenPGP packet tags (RFC 9580 §5) that ReadCerts looks at before parsing.
const (
	tagSecretKey    = 5
	tagSecretSubkey = 7
	tagCompressed   = 8
)

var (
	armorBegin = []byte("-----BEGIN ")
	armorEnd   = []byte("-----END ")
)

// ErrNoCert is returned (wrapped) by ReadCerts when its input holds no
// OpenPGP certificate at all.
var ErrNoCert = errors.New("pgp: no OpenPGP certificate found")

// ReadCerts parses every certificate in r: ASCII-armored (one or several
// armor blocks, with any text around them) or binary, one or many
// certificates. It reads at most maxBytes (> 0) and fails if the input is
// larger.
//
// The input is refused as a whole, with an error wrapping ErrSecretKey, if
// any part of it holds a secret key or secret subkey packet or a "PGP
// PRIVATE KEY BLOCK". It is also refused as a whole if any certificate in it
// cannot be parsed: an import either takes everything or nothing.
// Third-party certifications are dropped from the returned certificates
// (the gateway never uses them; see certificate flooding, CVE-2019-13050).
func ReadCerts(r io.Reader, maxBytes int64) ([]*Cert, error) {
	if maxBytes <= 0 {
		return nil, errors.New("pgp: ReadCerts needs a positive size limit")
	}
	// Certificates are small and bounded by maxBytes; reading them whole lets
	// us scan for secret packets before any parsing (STYLE rule 1 concerns
	// message bodies).
	data, err := io.ReadAll(io.LimitReader(r, maxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("pgp: read certificates: %w", err)
	}
	if int64(len(data)) > maxBytes {
		return nil, fmt.Errorf("pgp: certificate input is larger than %d bytes", maxBytes)
	}
	// Windows editors may save an armored key with a UTF-8 byte order mark.
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	// Look for secret material everywhere first, so that it wins over any
	// other error and nothing is returned. A private key armor header
	// anywhere refuses the input, even where the armor parser would not
	// see a block (for example glued to the end of another block's line).
	if bytes.Contains(data, []byte("BEGIN "+armorPrivateKey)) {
		return nil, fmt.Errorf("%w (armor block %q)", ErrSecretKey, armorPrivateKey)
	}
	blobs, err := binaryBlobs(data)
	if errors.Is(err, ErrSecretKey) {
		return nil, err
	}
	for _, b := range blobs {
		scanErr := refuseSecretPackets(b)
		if errors.Is(scanErr, ErrSecretKey) {
			return nil, scanErr
		}
		if err == nil {
			err = scanErr
		}
	}
	if err != nil {
		return nil, err
	}
	var certs []*Cert
	for _, b := range blobs {
		cs, err := parseCerts(b, len(certs))
		if err != nil {
			return nil, err
		}
		certs = append(certs, cs...)
	}
	if len(certs) == 0 {
		return nil, ErrNoCert
	}
	return certs, nil
}

// binaryBlobs returns the binary OpenPGP data in data: the bodies of every
// armor block, or data itself when it is binary. A binary packet stream
// starts with a byte whose high bit is set (RFC 9580 §4.2). On a bad armor
// block it goes on with the next one, returning every body it could decode
// and the first error; a private key block stops it at once.
func binaryBlobs(data []byte) ([][]byte, error) {
	if len(data) > 0 && data[0]&0x80 != 0 {
		return [][]byte{data}, nil
	}
	var blobs [][]byte
	var firstErr error
	rest := data
	for {
		start := bytes.Index(rest, armorBegin)
		if start < 0 {
			break
		}
		rest = rest[start:]
		// Hand the decoder exactly one block, up to the end of its END line,
		// so that a malformed block cannot make it read the next one.
		end := bytes.Index(rest, armorEnd)
		if end < 0 {
			end = len(rest)
		} else if nl := bytes.IndexByte(rest[end:], '\n'); nl >= 0 {
			end += nl + 1
		} else {
			end = len(rest)
		}
		blob, err := decodeArmorBlock(rest[:end])
		switch {
		case errors.Is(err, ErrSecretKey):
			return nil, err
		case err != nil && firstErr == nil:
			firstErr = err
		case err == nil:
			blobs = append(blobs, blob)
		}
		rest = rest[end:]
	}
	if len(blobs) == 0 && firstErr == nil {
		firstErr = ErrNoCert
	}
	return blobs, firstErr
}

// decodeArmorBlock decodes the first armor block of data (RFC 9580 §6.2).
func decodeArmorBlock(data []byte) ([]byte, error) {
	block, err := armor.Decode(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("pgp: decode armor: %w", err)
	}
	switch block.Type {
	case armorPublicKey:
	case armorPrivateKey:
		return nil, fmt.Errorf("%w (armor block %q)", ErrSecretKey, block.Type)
	default:
		return nil, fmt.Errorf("pgp: armor block %q is not a public key block", block.Type)
	}
	body, err := io.ReadAll(block.Body)
	if err != nil {
		return nil, fmt.Errorf("pgp: decode armor: %w", err)
	}
	return body, nil
}

// refuseSecretPackets walks the packet headers of b without interpreting
// packet bodies, so that secret-key packets are found even inside
// certificates that go-crypto would skip as unsupported or malformed.
func refuseSecretPackets(b []byte) error {
	r := packet.NewOpaqueReader(bytes.NewReader(b))
	for {
		p, err := r.Next()
		if p != nil {
			switch p.Tag {
			case tagSecretKey, tagSecretSubkey:
				return ErrSecretKey
			case tagCompressed:
				// A compressed packet could hide anything; certificates
				// are never compressed (RFC 9580 §10.1).
				return errors.New("pgp: compressed data is not allowed in certificate input")
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("pgp: read packets: %w", err)
		}
	}
}

// parseCerts parses every transferable public key in b (RFC 9580 §10.1).
// Unlike openpgp.ReadKeyRing it does not skip certificates it cannot read.
// seen is the number of certificates before b, for error messages.
func parseCerts(b []byte, seen int) ([]*Cert, error) {
	packets := packet.NewReader(bytes.NewReader(b))
	var certs []*Cert
	for {
		e, err := openpgp.ReadEntity(packets)
		if err == io.EOF {
			return certs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("pgp: certificate %d: %w", seen+len(certs)+1, err)
		}
		if err := refuseSecretEntity(e); err != nil {
			return nil, err
		}
		dropThirdPartyCertifications(e)
		certs = append(certs, &Cert{Entity: e})
	}
}

// refuseSecretEntity is a second line of defence behind refuseSecretPackets.
func refuseSecretEntity(e *openpgp.Entity) error {
	if e.PrivateKey != nil {
		return ErrSecretKey
	}
	for _, sub := range e.Subkeys {
		if sub.PrivateKey != nil {
			return ErrSecretKey
		}
	}
	return nil
}

// dropThirdPartyCertifications keeps only the certificate's own
// signatures on each user ID. Third-party certifications are unused by the
// gateway and are the vector of certificate flooding (CVE-2019-13050).
func dropThirdPartyCertifications(e *openpgp.Entity) {
	for _, id := range e.Identities {
		own := id.Signatures[:0]
		for _, sig := range id.Signatures {
			if sig.CheckKeyIdOrFingerprint(e.PrimaryKey) {
				own = append(own, sig)
			}
		}
		clear(id.Signatures[len(own):])
		id.Signatures = own
	}
}
