package pgp

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// ErrNoMatchingUserID is returned (wrapped) by ForAddress and
// WithUserIDs when no user ID of the certificate is kept.
var ErrNoMatchingUserID = errors.New("pgp: no user ID matches")

// ForAddress returns the binary certificate in the shape a Web Key
// Directory serves for address (draft-koch-openpgp-webkey-service,
// Security Considerations: the provider MUST publish only the user ID
// packets for the requested address and remove all others). The result
// holds the primary key with its revocations and direct-key signatures,
// every user ID whose e-mail address equals address with its
// self-signatures only (certifications and revocations made by the
// primary key; third-party certifications are dropped), and every subkey
// with its revocations and binding signature.
//
// The comparison lower-cases both sides (Unicode-aware). Callers with
// their own address normalisation use WithUserIDs.
func (c *Cert) ForAddress(address string) ([]byte, error) {
	want := strings.ToLower(address)
	b, err := c.WithUserIDs(func(email string) bool { return strings.ToLower(email) == want })
	if err != nil {
		return nil, fmt.Errorf("%w %q", err, address)
	}
	return b, nil
}

// WithUserIDs is ForAddress with the choice of user IDs made by keep,
// which gets each user ID's e-mail address as written (user IDs without
// an address are never kept). It fails with ErrNoMatchingUserID when keep
// accepts none.
func (c *Cert) WithUserIDs(keep func(email string) bool) ([]byte, error) {
	if c == nil || c.Entity == nil || c.Entity.PrimaryKey == nil {
		return nil, errors.New("pgp: empty certificate")
	}
	ids := keptIdentities(c.Entity, keep)
	if len(ids) == 0 {
		return nil, ErrNoMatchingUserID
	}
	var buf bytes.Buffer
	if err := serializeWithIdentities(&buf, c.Entity, ids); err != nil {
		return nil, fmt.Errorf("pgp: serialise certificate %s: %w", c.Fingerprint(), err)
	}
	return buf.Bytes(), nil
}

// keptIdentities returns the identities keep accepts, sorted by user ID so
// that the output is deterministic.
func keptIdentities(e *openpgp.Entity, keep func(string) bool) []*openpgp.Identity {
	var ids []*openpgp.Identity
	for _, id := range e.Identities {
		if id.UserId == nil || id.UserId.Email == "" || !keep(id.UserId.Email) {
			continue
		}
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b *openpgp.Identity) int { return strings.Compare(a.Name, b.Name) })
	return ids
}

// serializeWithIdentities writes the transferable public key (RFC 9580
// §10.1) with only the given identities.
func serializeWithIdentities(buf *bytes.Buffer, e *openpgp.Entity, ids []*openpgp.Identity) error {
	if err := e.PrimaryKey.Serialize(buf); err != nil {
		return err
	}
	if err := serializeSigs(buf, e.Revocations, e.Signatures); err != nil {
		return err
	}
	for _, id := range ids {
		if err := id.UserId.Serialize(buf); err != nil {
			return err
		}
		if err := serializeSigs(buf, selfSignatures(e.PrimaryKey, id.Signatures)); err != nil {
			return err
		}
	}
	for _, sub := range e.Subkeys {
		if err := sub.PublicKey.Serialize(buf); err != nil {
			return err
		}
		if err := serializeSigs(buf, sub.Revocations, []*packet.Signature{sub.Sig}); err != nil {
			return err
		}
	}
	return nil
}

// selfSignatures keeps the signatures issued by the primary key. go-crypto
// verified those when it read the certificate (keys.go addUserID); the
// others are third-party certifications, which a WKD answer must not carry
// (certificate flooding, CVE-2019-13050).
func selfSignatures(primary *packet.PublicKey, sigs []*packet.Signature) []*packet.Signature {
	var own []*packet.Signature
	for _, sig := range sigs {
		if sig != nil && sig.CheckKeyIdOrFingerprint(primary) {
			own = append(own, sig)
		}
	}
	return own
}
