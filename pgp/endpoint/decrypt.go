package endpoint

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// ErrDecrypt is the one error every refusal of Decrypt wraps: no key, a
// wrong key, a message without integrity protection, a failed MDC or AEAD
// check, truncation, malformed packets or armor, a plaintext over the
// limit. Callers show only this text to anything outside the local user
// (STYLE rule 5): telling these causes apart makes an oracle. The wrapped
// cause is for local troubleshooting.
var ErrDecrypt = errors.New("message cannot be decrypted")

// SignatureStatus is what Decrypt found out about a signature inside the
// encrypted message.
type SignatureStatus string

const (
	SignatureNone       SignatureStatus = "none"        // not signed (or signed in a form we do not verify)
	SignatureGood       SignatureStatus = "good"        // verified with a known key
	SignatureBad        SignatureStatus = "bad"         // a known key, but the check failed
	SignatureUnknownKey SignatureStatus = "unknown-key" // signed by a key we do not have
	// SignatureMismatch: a valid signature by a key none of whose user IDs
	// is the From address (reliability.md P2). Decrypt never returns it:
	// it does not know the From; the caller decides with HasAddress.
	SignatureMismatch SignatureStatus = "mismatch"
)

// DecryptOptions bounds and tunes Decrypt.
type DecryptOptions struct {
	// MaxPlaintext is the largest plaintext Decrypt returns, in bytes,
	// decompressed; it must be positive. It also bounds decompression
	// (go-crypto's MaxDecompressedMessageSize, nil meaning unlimited).
	MaxPlaintext int64
	// Now is the time signatures are checked at; nil means time.Now.
	Now func() time.Time
}

// Result is a decrypted, integrity-checked message.
type Result struct {
	Plaintext []byte
	// Text is true when the literal data is marked text ('t' or 'u',
	// RFC 9580 §5.9) rather than binary.
	Text      bool
	Signature SignatureStatus
	// Signer is the signing key's entity when Signature is good or bad.
	Signer *openpgp.Entity
}

// Decrypt decrypts message, an OpenPGP message that is either exactly one
// armored "PGP MESSAGE" block or binary, with the unlocked secret keys in
// keys, and checks signatures inside it against every key in keys.
//
// Nothing is returned unless the whole message decrypted and its
// integrity protection (SEIPDv1 MDC or SEIPDv2 AEAD, RFC 9580 §5.13)
// verified: the plaintext is buffered and checked to the end before
// Decrypt returns it (the EFAIL lesson, reliability.md 1.2-2). A message
// without integrity protection (SED, tag 9) is refused. Every refusal
// wraps ErrDecrypt.
func Decrypt(message []byte, keys openpgp.EntityList, opts DecryptOptions) (res *Result, err error) {
	if opts.MaxPlaintext <= 0 {
		return nil, errors.New("endpoint: Decrypt needs a positive MaxPlaintext")
	}
	defer func() {
		// go-crypto parses hostile input; a panic there is one more
		// malformed message (reliability.md 1.2-4).
		if p := recover(); p != nil {
			res, err = nil, refuse(fmt.Errorf("panic while parsing: %v", p))
		}
	}()
	raw := message
	if IsArmoredMessage(message) {
		if raw, err = dearmorMessage(message); err != nil {
			return nil, refuse(err)
		}
	}
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	limit := opts.MaxPlaintext
	cfg := &packet.Config{
		MaxDecompressedMessageSize: &limit,
		Time:                       now,
		// Never set: it would accept SED (tag 9) messages (reliability.md
		// 1.2-3). Written out so that a reader sees the decision.
		InsecureAllowUnauthenticatedMessages: false,
	}
	inner, err := decryptLayer(raw, keys, cfg, limit)
	if err != nil {
		return nil, refuse(err)
	}
	res, err = readInner(inner, keys, cfg, limit)
	if err != nil {
		return nil, refuse(err)
	}
	return res, nil
}

func refuse(cause error) error {
	return fmt.Errorf("%w: %w", ErrDecrypt, cause)
}

// maxSessionKeys bounds the PKESK packets we try (a message to many
// recipients has one each; thousands are an attack on our CPU).
const maxSessionKeys = 1000

// decryptLayer opens the encrypted data packet of raw (RFC 9580 §10.3:
// session key packets, then one SEIPD) and returns the decrypted packet
// stream, read to its end and integrity-checked. Nothing may follow the
// encrypted data packet but padding.
func decryptLayer(raw []byte, keys openpgp.EntityList, cfg *packet.Config, limit int64) ([]byte, error) {
	packets := packet.NewReader(bytes.NewReader(raw))
	var sessionKeys []*packet.EncryptedKey
	var encrypted packet.EncryptedDataPacket
	for encrypted == nil {
		p, err := packets.Next()
		if err == io.EOF {
			return nil, errors.New("no encrypted data packet")
		}
		if err != nil {
			return nil, fmt.Errorf("read packets: %w", err)
		}
		switch p := p.(type) {
		case *packet.EncryptedKey:
			if len(sessionKeys) == maxSessionKeys {
				return nil, errors.New("too many session key packets")
			}
			sessionKeys = append(sessionKeys, p)
		case *packet.SymmetricKeyEncrypted, packet.Padding:
			// Passphrase-encrypted session keys are for someone else.
		case *packet.SymmetricallyEncrypted:
			if !p.IntegrityProtected {
				// RFC 9580 §5.7: SED must not be decrypted (EFAIL, P1a).
				return nil, errors.New("symmetrically encrypted data without integrity protection (SED, tag 9)")
			}
			encrypted = p
		case *packet.AEADEncrypted:
			encrypted = p
		default:
			return nil, fmt.Errorf("unexpected %T packet before the encrypted data", p)
		}
	}
	decrypted, err := openSession(sessionKeys, encrypted, keys, cfg)
	if err != nil {
		return nil, err
	}
	// Read every byte, then Close: Close checks the MDC (SEIPDv1); for
	// SEIPDv2 each chunk's tag is checked by Read and the final tag at
	// the end. Only after both does the data count as decrypted.
	unverifiedInner, readErr := readLimited(decrypted, limit+64<<10)
	closeErr := decrypted.Close()
	if readErr != nil {
		return nil, fmt.Errorf("read encrypted data: %w", readErr)
	}
	if closeErr != nil {
		return nil, fmt.Errorf("integrity check: %w", closeErr)
	}
	for {
		p, err := packets.Next()
		if err == io.EOF {
			return unverifiedInner, nil
		}
		if _, ok := p.(packet.Padding); err != nil || !ok {
			return nil, fmt.Errorf("data after the encrypted data packet (%T, %v)", p, err)
		}
	}
}

// openSession decrypts a session key with one of our keys and opens the
// encrypted data with it, as go-crypto's ReadMessage does.
func openSession(sessionKeys []*packet.EncryptedKey, encrypted packet.EncryptedDataPacket, keys openpgp.EntityList, cfg *packet.Config) (io.ReadCloser, error) {
	for _, ek := range sessionKeys {
		candidates := keys.KeysById(ek.KeyId)
		if ek.KeyId == 0 { // anonymous recipient (RFC 9580 §5.1): try every key
			candidates = keys.DecryptionKeys()
		}
		for _, k := range candidates {
			if k.PrivateKey == nil || k.PrivateKey.Dummy() || k.PrivateKey.Encrypted {
				continue
			}
			if err := ek.Decrypt(k.PrivateKey, cfg); err != nil {
				continue
			}
			rc, err := encrypted.Decrypt(ek.CipherFunc, ek.Key)
			if errors.Is(err, pgperrors.ErrKeyIncorrect) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("open encrypted data: %w", err)
			}
			return rc, nil
		}
	}
	return nil, errors.New("no session key could be decrypted with our keys")
}

// readLimited reads r to EOF, failing if it yields more than limit bytes.
func readLimited(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("more than %d bytes", limit)
	}
	return b, nil
}

// readInner checks the packet grammar of the decrypted stream and reads
// its literal data, verifying the signature when there is one.
func readInner(inner []byte, keys openpgp.EntityList, cfg *packet.Config, limit int64) (*Result, error) {
	if err := checkGrammar(inner, limit, 0); err != nil {
		return nil, err
	}
	// An unencrypted message now: ReadMessage decompresses and checks a
	// one-pass signature against keys.
	md, err := openpgp.ReadMessage(bytes.NewReader(inner), keys, nil, cfg)
	if err != nil {
		return nil, fmt.Errorf("read decrypted message: %w", err)
	}
	plaintext, err := readLimited(md.UnverifiedBody, limit)
	if err != nil {
		return nil, fmt.Errorf("read literal data: %w", err)
	}
	res := &Result{Plaintext: plaintext, Text: !md.LiteralData.IsBinary, Signature: SignatureNone}
	switch {
	case !md.IsSigned:
	case md.SignedBy == nil:
		res.Signature = SignatureUnknownKey
	case md.SignatureError == nil && md.Signature != nil:
		res.Signature, res.Signer = SignatureGood, md.SignedBy.Entity
	default:
		res.Signature, res.Signer = SignatureBad, md.SignedBy.Entity
	}
	return res, nil
}
