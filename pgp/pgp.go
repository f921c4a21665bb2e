// Package pgp holds sealgate's OpenPGP logic: reading and validating public
// certificates, choosing encryption keys, and writing PGP/MIME (RFC 3156) on
// streams. It never reads, stores or uses secret key material.
package pgp

import (
	"bytes"
	"encoding/hex"
	"errors"
	"slices"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// ErrSecretKey is returned (wrapped) by ReadCerts when its input holds any
// secret key material. Nothing from such an input is returned.
var ErrSecretKey = errors.New("pgp: input contains secret key material; only public keys may be imported")

// Cert is one public OpenPGP certificate (transferable public key).
type Cert struct {
	Entity *openpgp.Entity
}

// Fingerprint is the primary key's fingerprint in upper-case hex.
func (c *Cert) Fingerprint() string {
	if c == nil || c.Entity == nil || c.Entity.PrimaryKey == nil {
		return ""
	}
	return strings.ToUpper(hex.EncodeToString(c.Entity.PrimaryKey.Fingerprint))
}

// Addresses lists the e-mail addresses of the certificate's user IDs
// that are not revoked, as written in the user IDs (not normalised).
// The list is sorted and holds each address once.
func (c *Cert) Addresses() []string {
	if c == nil || c.Entity == nil {
		return nil
	}
	var addrs []string
	for _, id := range c.Entity.Identities {
		// A user ID with only a revocation has no self-signature (go-crypto
		// #313); one with any verified self-revocation is not listed at all,
		// whatever its date: a directory must not advertise it.
		if id.UserId == nil || id.SelfSignature == nil || len(id.Revocations) > 0 {
			continue
		}
		if id.UserId.Email != "" {
			addrs = append(addrs, id.UserId.Email)
		}
	}
	slices.Sort(addrs)
	return slices.Compact(addrs)
}

// Bytes is the binary serialisation of the public certificate. It never
// contains secret key material, and it is deterministic: user IDs are
// written in sorted order (go-crypto's Entity.Serialize follows map order).
// It returns nil if the certificate cannot be serialised.
func (c *Cert) Bytes() []byte {
	if c == nil || c.Entity == nil || c.Entity.PrimaryKey == nil {
		return nil
	}
	var buf bytes.Buffer
	if err := serializePublic(&buf, c.Entity); err != nil {
		return nil
	}
	return buf.Bytes()
}

// serializePublic writes the transferable public key (RFC 9580 §10.1):
// primary key, its revocations and direct-key signatures, user IDs with
// their signatures, subkeys with revocations and binding signature. Only
// public-key packets are written, never secret-key ones.
func serializePublic(buf *bytes.Buffer, e *openpgp.Entity) error {
	if err := e.PrimaryKey.Serialize(buf); err != nil {
		return err
	}
	if err := serializeSigs(buf, e.Revocations, e.Signatures); err != nil {
		return err
	}
	names := make([]string, 0, len(e.Identities))
	for name := range e.Identities {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		id := e.Identities[name]
		if err := id.UserId.Serialize(buf); err != nil {
			return err
		}
		if err := serializeSigs(buf, id.Signatures); err != nil {
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

func serializeSigs(buf *bytes.Buffer, lists ...[]*packet.Signature) error {
	for _, list := range lists {
		for _, sig := range list {
			if sig == nil {
				continue
			}
			if err := sig.Serialize(buf); err != nil {
				return err
			}
		}
	}
	return nil
}
