package endpoint

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
)

// maxKeyBytes bounds one key file; certificates and secret keys are small
// (a PQ key with its signatures is under 20 KiB).
const maxKeyBytes = 4 << 20

var (
	armorBeginPGP = []byte("-----BEGIN PGP ")
	armorEndPGP   = []byte("-----END PGP ")
)

// ReadKeys parses every OpenPGP key in data: ASCII-armored (any number of
// "PGP PUBLIC KEY BLOCK" or "PGP PRIVATE KEY BLOCK" blocks) or binary,
// public or secret. Secret keys stay locked; see Unlock.
func ReadKeys(data []byte) (openpgp.EntityList, error) {
	if len(data) > maxKeyBytes {
		return nil, fmt.Errorf("endpoint: key input is larger than %d bytes", maxKeyBytes)
	}
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	var blobs [][]byte
	if len(data) > 0 && data[0]&0x80 != 0 { // binary packets (RFC 9580 §4.2)
		blobs = [][]byte{data}
	} else {
		var err error
		if blobs, err = armoredKeyBlocks(data); err != nil {
			return nil, err
		}
	}
	var keys openpgp.EntityList
	for _, b := range blobs {
		list, err := openpgp.ReadKeyRing(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("endpoint: read keys: %w", err)
		}
		keys = append(keys, list...)
	}
	return keys, nil
}

// armoredKeyBlocks decodes every armored key block in data.
func armoredKeyBlocks(data []byte) ([][]byte, error) {
	var blobs [][]byte
	for rest := data; ; {
		start := bytes.Index(rest, armorBeginPGP)
		if start < 0 {
			break
		}
		rest = rest[start:]
		end := bytes.Index(rest, armorEndPGP)
		if end < 0 {
			return nil, errors.New("endpoint: armored key block without END line")
		}
		if nl := bytes.IndexByte(rest[end:], '\n'); nl >= 0 {
			end += nl + 1
		} else {
			end = len(rest)
		}
		block, err := armor.Decode(bytes.NewReader(rest[:end]))
		if err != nil {
			return nil, fmt.Errorf("endpoint: decode armor: %w", err)
		}
		if block.Type != openpgp.PublicKeyType && block.Type != openpgp.PrivateKeyType {
			return nil, fmt.Errorf("endpoint: armor block %q is not a key", block.Type)
		}
		b, err := io.ReadAll(block.Body)
		if err != nil {
			return nil, fmt.Errorf("endpoint: decode armor: %w", err)
		}
		blobs = append(blobs, b)
		rest = rest[end:]
	}
	if len(blobs) == 0 {
		return nil, errors.New("endpoint: no OpenPGP key found")
	}
	return blobs, nil
}

// HasSecret reports whether e holds secret key material (primary or any
// subkey; GnuPG's stubs without the secret, "dummy" keys, do not count).
func HasSecret(e *openpgp.Entity) bool {
	if e.PrivateKey != nil && !e.PrivateKey.Dummy() {
		return true
	}
	for _, sub := range e.Subkeys {
		if sub.PrivateKey != nil && !sub.PrivateKey.Dummy() {
			return true
		}
	}
	return false
}

// Locked reports whether any secret key of e is still encrypted.
func Locked(e *openpgp.Entity) bool {
	if e.PrivateKey != nil && !e.PrivateKey.Dummy() && e.PrivateKey.Encrypted {
		return true
	}
	for _, sub := range e.Subkeys {
		if sub.PrivateKey != nil && !sub.PrivateKey.Dummy() && sub.PrivateKey.Encrypted {
			return true
		}
	}
	return false
}

// ErrPassphrase is returned (wrapped) by Unlock for a wrong passphrase.
var ErrPassphrase = errors.New("endpoint: wrong passphrase")

// Unlock decrypts every locked secret key of e with passphrase.
func Unlock(e *openpgp.Entity, passphrase []byte) error {
	if !Locked(e) {
		return nil
	}
	if err := e.DecryptPrivateKeys(passphrase); err != nil {
		return fmt.Errorf("%w for key %s", ErrPassphrase, Fingerprint(e))
	}
	return nil
}
