package pgp

import (
	"crypto"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// MinRSABits is the smallest RSA modulus the gateway encrypts to, for the
// primary key and for the encryption key alike.
const MinRSABits = 2048

// sha1Cutoff: SHA-1 self-signatures made on or after this date are refused.
// Older ones are still accepted, as Sequoia's StandardPolicy does (SHA-1 is
// broken for collisions; a self-signature only needs second-preimage
// resistance). MD5 and RIPEMD-160 are always refused (RFC 9580 §9.5).
var sha1Cutoff = time.Date(2023, time.February, 1, 0, 0, 0, 0, time.UTC)

// UnusableKeyError explains why a certificate cannot be encrypted to. It is
// meant for an admin or a log, not for an SMTP peer.
type UnusableKeyError struct {
	Fingerprint string
	Reason      string // e.g. "expired on 2024-01-02"
}

func (e *UnusableKeyError) Error() string {
	return "pgp: key " + e.Fingerprint + " cannot be used for encryption: " + e.Reason
}

// CheckEncryption reports whether the certificate can be encrypted to at
// time now. The error (an *UnusableKeyError) explains why not, for an admin
// to read. It accepts exactly the key that Encrypt would use: go-crypto's
// Entity.EncryptionKey(now), plus sealgate's own algorithm policy.
func (c *Cert) CheckEncryption(now time.Time) error {
	if c == nil || c.Entity == nil || c.Entity.PrimaryKey == nil {
		return errors.New("pgp: empty certificate")
	}
	if reason := encryptionProblem(c.Entity, now); reason != "" {
		return &UnusableKeyError{Fingerprint: c.Fingerprint(), Reason: reason}
	}
	return nil
}

// encryptionProblem returns why e cannot be encrypted to at now, or "".
func encryptionProblem(e *openpgp.Entity, now time.Time) string {
	if reason := primaryProblem(e, now); reason != "" {
		return reason
	}
	key, ok := e.EncryptionKey(now)
	if !ok {
		return noEncryptionKeyReason(e, now)
	}
	if reason := algorithmProblem(key.PublicKey); reason != "" {
		return reason
	}
	return hashProblem(key.SelfSignature, "encryption key binding signature")
}

// primaryProblem checks the primary key: validity in time, revocation
// (RFC 9580 §5.2.3.13, §5.2.3.31) and algorithm policy.
func primaryProblem(e *openpgp.Entity, now time.Time) string {
	pk := e.PrimaryKey
	if reason := algorithmProblem(pk); reason != "" {
		return reason
	}
	selfSig, primaryID := e.PrimarySelfSignature()
	if selfSig == nil {
		return "no valid self-signature"
	}
	switch {
	case e.Revoked(now):
		return "revoked" + revocationReason(e.Revocations)
	case pk.CreationTime.After(now):
		return "created in the future (" + day(pk.CreationTime) + ")"
	case pk.KeyExpired(selfSig, now):
		return "expired on " + day(expiry(pk, selfSig.KeyLifetimeSecs))
	case selfSig.SigExpired(now):
		return "self-signature " + sigExpiredReason(selfSig, now)
	case primaryID != nil && primaryID.Revoked(now):
		return "primary user ID revoked"
	}
	return hashProblem(selfSig, "self-signature")
}

// algorithmProblem applies the algorithm policy to one public key.
func algorithmProblem(pk *packet.PublicKey) string {
	switch pk.PubKeyAlgo {
	case packet.PubKeyAlgoDSA, packet.PubKeyAlgoElGamal:
		// Deprecated: RFC 9580 §9.1 (MUST NOT generate).
		return "DSA/ElGamal keys are not accepted"
	case packet.PubKeyAlgoRSA, packet.PubKeyAlgoRSAEncryptOnly, packet.PubKeyAlgoRSASignOnly:
		bits, err := pk.BitLength()
		if err != nil {
			return "unreadable RSA key: " + err.Error()
		}
		if bits < MinRSABits {
			return fmt.Sprintf("RSA key of %d bits; at least %d required", bits, MinRSABits)
		}
	}
	return ""
}

// hashProblem refuses binding signatures made with broken hashes.
func hashProblem(sig *packet.Signature, what string) string {
	if sig == nil {
		return ""
	}
	switch sig.Hash {
	case crypto.MD5, crypto.RIPEMD160:
		return what + " uses the weak hash " + sig.Hash.String()
	case crypto.SHA1:
		if !sig.CreationTime.Before(sha1Cutoff) {
			return what + " uses the weak hash SHA-1 (made after " + day(sha1Cutoff) + ")"
		}
	}
	return ""
}

// noEncryptionKeyReason explains why Entity.EncryptionKey found nothing,
// listing each encryption-capable subkey and what is wrong with it.
func noEncryptionKeyReason(e *openpgp.Entity, now time.Time) string {
	var problems []string
	for _, sub := range e.Subkeys {
		if !sub.PublicKey.PubKeyAlgo.CanEncrypt() {
			continue
		}
		id := fmt.Sprintf("subkey %X", sub.PublicKey.KeyId)
		switch {
		case sub.Sig == nil || !sub.Sig.FlagsValid:
			problems = append(problems, id+" has no key flags")
		case !sub.Sig.FlagEncryptCommunications:
			problems = append(problems, id+" is not flagged for communications encryption")
		case sub.Revoked(now):
			problems = append(problems, id+" is revoked")
		case sub.PublicKey.CreationTime.After(now):
			problems = append(problems, id+" is created in the future")
		case sub.PublicKey.KeyExpired(sub.Sig, now):
			problems = append(problems, id+" expired on "+day(expiry(sub.PublicKey, sub.Sig.KeyLifetimeSecs)))
		case sub.Sig.SigExpired(now):
			problems = append(problems, id+" binding signature "+sigExpiredReason(sub.Sig, now))
		default:
			problems = append(problems, id+" is not usable")
		}
	}
	if len(problems) == 0 {
		return "no encryption subkey (sign-only key)"
	}
	return "no usable encryption subkey: " + strings.Join(problems, "; ")
}

func revocationReason(sigs []*packet.Signature) string {
	for _, s := range sigs {
		if s.RevocationReason == nil {
			continue
		}
		switch *s.RevocationReason {
		case packet.KeySuperseded:
			return " (key superseded)"
		case packet.KeyCompromised:
			return " (key compromised)"
		case packet.KeyRetired:
			return " (key retired)"
		}
	}
	return ""
}

// expiry is creation time plus a lifetime subpacket (RFC 9580 §5.2.3.13).
func expiry(pk *packet.PublicKey, lifetime *uint32) time.Time {
	if lifetime == nil {
		return time.Time{}
	}
	return pk.CreationTime.Add(time.Duration(*lifetime) * time.Second)
}

// sigExpiredReason says why go-crypto's SigExpired is true: the signature
// is dated after now, or its lifetime (RFC 9580 §5.2.3.18) has run out.
func sigExpiredReason(sig *packet.Signature, now time.Time) string {
	if sig.CreationTime.After(now) || sig.SigLifetimeSecs == nil {
		return "dated in the future (" + day(sig.CreationTime) + ")"
	}
	return "expired on " + day(sig.CreationTime.Add(time.Duration(*sig.SigLifetimeSecs)*time.Second))
}

func day(t time.Time) string { return t.UTC().Format(time.DateOnly) }
