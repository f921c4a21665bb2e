package endpoint

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"golang.org/x/net/idna"
)

// maxSignatureBytes bounds an application/pgp-signature part: a few
// signatures of a few hundred bytes each, or a PQ one of a few KiB.
const maxSignatureBytes = 1 << 20

// Verification is the outcome of VerifyDetached.
type Verification struct {
	// Status is SignatureGood, SignatureBad or SignatureUnknownKey.
	Status SignatureStatus
	// Signer is the signing key's entity: set for good signatures, and for
	// bad ones when the issuer is one of the keys.
	Signer *openpgp.Entity
	// Err says why a signature is bad, for the local user only.
	Err error
}

// VerifyDetached checks the detached signature of an RFC 3156 §5
// multipart/signed entity (the application/pgp-signature part, armored or
// binary, transfer-decoded) over signed, which the caller has already put
// in canonical form (the first body part as it appears between the
// boundaries, CRLF line ends). keys are every key the caller has, public
// and secret; now is the time key and signature validity are checked at
// (nil: time.Now).
//
// The signature must be a binary or text document signature (RFC 9580
// §5.2.1, types 0x00 and 0x01). An expired or revoked key, an expired
// signature, a malformed signature part and a failed check are all bad;
// a signature whose issuer is not among keys is unknown-key.
func VerifyDetached(signed, signature []byte, keys openpgp.EntityList, now func() time.Time) (v *Verification) {
	defer func() {
		// go-crypto parses sender-controlled packets here.
		if p := recover(); p != nil {
			v = &Verification{Status: SignatureBad, Err: fmt.Errorf("endpoint: malformed signature (parser panic: %v)", p)}
		}
	}()
	if now == nil {
		now = time.Now
	}
	raw, err := signaturePackets(signature)
	if err != nil {
		return &Verification{Status: SignatureBad, Err: err}
	}
	cfg := &packet.Config{Time: now}
	sig, signer, err := openpgp.VerifyDetachedSignature(keys, bytes.NewReader(signed), bytes.NewReader(raw), cfg)
	switch {
	case errors.Is(err, pgperrors.ErrUnknownIssuer):
		return &Verification{Status: SignatureUnknownKey}
	case err != nil:
		if signer == nil {
			signer = issuer(raw, keys)
		}
		return &Verification{Status: SignatureBad, Signer: signer, Err: fmt.Errorf("endpoint: %w", err)}
	case sig.SigType != packet.SigTypeBinary && sig.SigType != packet.SigTypeText:
		return &Verification{Status: SignatureBad, Signer: signer,
			Err: fmt.Errorf("endpoint: signature of type %#x is not a document signature", uint8(sig.SigType))}
	}
	return &Verification{Status: SignatureGood, Signer: signer}
}

// signaturePackets returns the binary packets of an application/pgp-signature
// body: one armored "PGP SIGNATURE" block (RFC 9580 §6.2), or binary.
func signaturePackets(data []byte) ([]byte, error) {
	if len(data) > maxSignatureBytes {
		return nil, fmt.Errorf("endpoint: signature part larger than %d bytes", maxSignatureBytes)
	}
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	if len(trimmed) > 0 && trimmed[0]&0x80 != 0 {
		return trimmed, nil
	}
	block, err := armor.Decode(bytes.NewReader(trimmed))
	if err != nil {
		return nil, fmt.Errorf("endpoint: signature armor: %w", err)
	}
	if block.Type != openpgp.SignatureType {
		return nil, fmt.Errorf("endpoint: armor block %q is not a signature", block.Type)
	}
	raw, err := io.ReadAll(io.LimitReader(block.Body, maxSignatureBytes))
	if err != nil {
		return nil, fmt.Errorf("endpoint: signature armor: %w", err)
	}
	return raw, nil
}

// issuer is the entity of the first signature in raw whose issuer has a
// signing key in keys: the one go-crypto checked.
func issuer(raw []byte, keys openpgp.EntityList) *openpgp.Entity {
	packets := packet.NewReader(bytes.NewReader(raw))
	for {
		p, err := packets.Next()
		if err != nil {
			return nil
		}
		sig, ok := p.(*packet.Signature)
		if !ok || sig.IssuerKeyId == nil {
			return nil
		}
		if ks := keys.KeysByIdUsage(*sig.IssuerKeyId, packet.KeyFlagSign); len(ks) > 0 {
			return ks[0].Entity
		}
	}
}

// HasAddress reports whether one of e's user IDs (self-signed, neither
// revoked nor expired at now) has address as its addr-spec. The match is
// exact on the parsed address, never a substring (reliability.md K2): the
// domain compares case-insensitively after IDNA conversion to A-labels,
// and the local part case-insensitively too, the policy of smime's
// HasAddress (RFC 5321 §2.4 lets a domain treat local parts as it likes;
// no mail system we know gives "Alice" and "alice" to two people).
func HasAddress(e *openpgp.Entity, address string, now time.Time) bool {
	want, ok := foldAddress(address)
	if !ok {
		return false
	}
	for _, a := range Addresses(e, now) {
		if got, ok := foldAddress(a); ok && got == want {
			return true
		}
	}
	return false
}

// Addresses returns the addr-specs of e's valid user IDs (see HasAddress),
// as written, sorted for stable messages. A user ID is "Name (comment)
// <addr>" or a bare addr-spec; anything else names no address.
func Addresses(e *openpgp.Entity, now time.Time) []string {
	if e == nil {
		return nil
	}
	var addrs []string
	for id, ident := range e.Identities {
		if ident.SelfSignature == nil || ident.Revoked(now) || ident.SelfSignature.SigExpired(now) {
			continue
		}
		if a, ok := uidAddress(id); ok {
			addrs = append(addrs, a)
		}
	}
	slices.Sort(addrs)
	return addrs
}

// uidAddress is the addr-spec of a user ID: the text in the final <...>,
// or the whole ID when it is a bare address.
func uidAddress(id string) (string, bool) {
	id = strings.TrimSpace(id)
	if strings.HasSuffix(id, ">") {
		i := strings.LastIndexByte(id, '<')
		if i < 0 {
			return "", false
		}
		id = id[i+1 : len(id)-1]
	}
	if id == "" || strings.ContainsAny(id, " \t<>\"(),;") || strings.Count(id, "@") != 1 {
		return "", false
	}
	return id, true
}

// foldAddress lower-cases an addr-spec and converts its domain to A-labels.
func foldAddress(a string) (string, bool) {
	a = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(a), "<"), ">")
	at := strings.LastIndexByte(a, '@')
	if at <= 0 || at == len(a)-1 {
		return "", false
	}
	domain, err := idna.Lookup.ToASCII(strings.TrimSuffix(a[at+1:], "."))
	if err != nil {
		return "", false
	}
	return strings.ToLower(a[:at]) + "@" + strings.ToLower(domain), true
}
