// Package endpoint is the OpenPGP half of sealgate that holds private keys:
// key generation, unlocking secret keys, and decryption with signature
// verification, for the endpoint client cmd/sealmail. The gateway never
// imports it: it holds no private decryption key (DESIGN.md, key custody;
// TestGatewayDoesNotLinkEndpoint pins that).
package endpoint

import (
	"bytes"
	"crypto"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/ProtonMail/go-crypto/openpgp/s2k"
)

// Profile names a kind of key that Generate makes.
type Profile string

const (
	// ProfileDefault is a v4 key: EdDSA Ed25519 primary key (certify, sign)
	// and ECDH Curve25519 encryption subkey, the shape GnuPG 2.2, Sequoia
	// and RNP (Thunderbird) read.
	ProfileDefault Profile = "default"
	// ProfileRFC9580 is a v6 key (RFC 9580 §5.5.2): Ed25519 primary key and
	// X25519 subkey, advertising SEIPDv2 (AEAD, OCB). GnuPG 2.2 and RNP 0.16
	// cannot use it.
	ProfileRFC9580 Profile = "rfc9580"
	// ProfilePQ is a v6 post-quantum key (draft-ietf-openpgp-pqc): composite
	// ML-DSA-65+Ed25519 primary key and ML-KEM-768+X25519 subkey,
	// advertising SEIPDv2. Few implementations read it yet.
	ProfilePQ Profile = "pq"
)

// GenerateOptions says what key Generate makes. Address and Passphrase are
// required; the zero value of the others is the default.
type GenerateOptions struct {
	Address    string // the user ID's e-mail address (addr-spec)
	Name       string // optional display name in the user ID
	Profile    Profile
	Passphrase []byte // protects the secret key; must not be empty
	// Now is the key's creation time source; nil means time.Now.
	Now func() time.Time
}

// GeneratedKey is a new key: its fingerprint, the armored public key
// (certificate) and the armored secret key, protected by the passphrase.
type GeneratedKey struct {
	Fingerprint string // upper-case hex
	Public      []byte // "PGP PUBLIC KEY BLOCK"
	Secret      []byte // "PGP PRIVATE KEY BLOCK", passphrase-protected
}

// v4Iterations is the iterated-and-salted S2K count for v4 secret keys,
// the largest RFC 9580 §3.7.1.3 can encode (GnuPG calibrates to a similar
// order of magnitude). Argon2 would be stronger, but GnuPG 2.2 and RNP 0.16
// cannot import keys protected with it.
const v4Iterations = 65011712

// Generate creates a key for opts.Address. Its secret part is encrypted
// with opts.Passphrase before it leaves this function.
func Generate(opts GenerateOptions) (*GeneratedKey, error) {
	if err := checkAddress(opts.Address); err != nil {
		return nil, err
	}
	if len(opts.Passphrase) == 0 {
		return nil, errors.New("endpoint: the passphrase must not be empty")
	}
	if strings.ContainsAny(opts.Name, "()<>\x00") {
		return nil, errors.New("endpoint: the name must not contain ( ) < > or NUL")
	}
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	created := now().Truncate(time.Second)
	gen, protect, err := profileConfigs(opts.Profile, created)
	if err != nil {
		return nil, err
	}
	e, err := openpgp.NewEntity(opts.Name, "", opts.Address, gen)
	if err != nil {
		return nil, fmt.Errorf("endpoint: generate %s key: %w", profileName(opts.Profile), err)
	}
	pub, err := armorEntity(e, openpgp.PublicKeyType, e.Serialize)
	if err != nil {
		return nil, err
	}
	if err := e.EncryptPrivateKeys(opts.Passphrase, protect); err != nil {
		return nil, fmt.Errorf("endpoint: protect secret key: %w", err)
	}
	sec, err := armorEntity(e, openpgp.PrivateKeyType, func(w io.Writer) error {
		// The self-signatures were made by NewEntity; write them as they are.
		return e.SerializePrivateWithoutSigning(w, nil)
	})
	if err != nil {
		return nil, err
	}
	return &GeneratedKey{Fingerprint: Fingerprint(e), Public: pub, Secret: sec}, nil
}

// checkAddress accepts a bare addr-spec (RFC 5322 §3.4.1).
func checkAddress(address string) error {
	a, err := mail.ParseAddress(address)
	if err != nil || a.Address != address || a.Name != "" {
		return fmt.Errorf("endpoint: %q is not a plain e-mail address (local@domain)", address)
	}
	return nil
}

func profileName(p Profile) Profile {
	if p == "" {
		return ProfileDefault
	}
	return p
}

// profileConfigs returns the generation config and the secret-key
// protection config of a profile.
func profileConfigs(p Profile, created time.Time) (gen, protect *packet.Config, err error) {
	gen = &packet.Config{
		DefaultCipher: packet.CipherAES256,
		DefaultHash:   crypto.SHA512,
		// Keys prefer no compression (go-crypto writes it first), against
		// compression side channels.
		DefaultCompressionAlgo: packet.CompressionNone,
		Time:                   func() time.Time { return created },
	}
	switch profileName(p) {
	case ProfileDefault:
		// Legacy EdDSA and ECDH on Curve25519 (RFC 9580 §9.2 "legacy"
		// algorithms 22 and 18): what today's v4 clients read. The key
		// advertises SEIPDv1 only: a sender that saw SEIPDv2 (AEAD) in the
		// features would write messages GnuPG 2.2 and RNP 0.16 cannot
		// read once this secret key is exported to them
		// (TestExportedSecretKeyDecryptsGatewayMail).
		gen.Algorithm, gen.Curve = packet.PubKeyAlgoEdDSA, packet.Curve25519
		protect = &packet.Config{
			DefaultCipher: packet.CipherAES256,
			// S2K usage 254 (CFB, SHA-1 check) with iterated+salted S2K:
			// the protection every v4 implementation imports.
			S2KConfig: &s2k.Config{S2KMode: s2k.IteratedSaltedS2K, Hash: crypto.SHA256, S2KCount: v4Iterations},
		}
		return gen, protect, nil
	case ProfileRFC9580:
		gen.Algorithm = packet.PubKeyAlgoEd25519
	case ProfilePQ:
		// The composite primary gets the matching ML-KEM-768+X25519
		// encryption subkey (go-crypto key_generation.go newDecrypter).
		gen.Algorithm = packet.PubKeyAlgoMldsa65Ed25519
	default:
		return nil, nil, fmt.Errorf("endpoint: unknown key profile %q (want default, rfc9580 or pq)", p)
	}
	gen.V6Keys = true
	gen.AEADConfig = &packet.AEADConfig{DefaultMode: packet.AEADModeOCB}
	// RFC 9580 §3.7.2.1: AEAD-protected secret keys (S2K usage 253) with
	// Argon2 (RFC 9580 §3.7.1.4; go-crypto's defaults are its second
	// recommended parameter set: t=3, p=4, 64 MiB).
	protect = &packet.Config{
		DefaultCipher: packet.CipherAES256,
		AEADConfig:    &packet.AEADConfig{DefaultMode: packet.AEADModeOCB},
		S2KConfig:     &s2k.Config{S2KMode: s2k.Argon2S2K},
	}
	return gen, protect, nil
}

// armorEntity armors what serialize writes as blockType. go-crypto's
// encoder writes the CRC-24 line GnuPG 2.2 needs (see pgp/armor.go).
func armorEntity(e *openpgp.Entity, blockType string, serialize func(io.Writer) error) ([]byte, error) {
	var bin bytes.Buffer
	if err := serialize(&bin); err != nil {
		return nil, fmt.Errorf("endpoint: serialise key %s: %w", Fingerprint(e), err)
	}
	var out bytes.Buffer
	w, err := armor.Encode(&out, blockType, nil)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(bin.Bytes()); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}

// Fingerprint is e's primary key fingerprint in upper-case hex.
func Fingerprint(e *openpgp.Entity) string {
	if e == nil || e.PrimaryKey == nil {
		return ""
	}
	return strings.ToUpper(hex.EncodeToString(e.PrimaryKey.Fingerprint))
}
