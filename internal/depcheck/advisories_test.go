package depcheck

import (
	"bytes"
	"encoding/binary"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"go.mozilla.org/pkcs7"
)

// Regression tests for published parser fixes in our dependencies
// (reliability.md 1.2-4 and 1.3-6). Each input is built here from the
// advisory's description; each must give an error, never a panic.

// mustNotPanic runs f and turns a panic into a test failure.
func mustNotPanic(t *testing.T, what string, f func()) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("%s panicked: %v", what, r)
		}
	}()
	f()
}

// pkt frames body as a new-format OpenPGP packet (RFC 9580 §4.2).
func pkt(tag byte, body []byte) []byte {
	out := []byte{0xc0 | tag}
	switch n := len(body); {
	case n < 192:
		out = append(out, byte(n))
	case n < 8384:
		out = append(out, byte((n-192)>>8)+192, byte(n-192))
	default:
		out = append(out, 0xff, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(out, body...)
}

// sigBody is a v4 signature packet body (RFC 9580 §5.2.3) with the given
// type and hashed subpackets, an RSA/SHA-256 algorithm pair and a dummy MPI.
func sigBody(sigType byte, hashed []byte) []byte {
	b := []byte{4, sigType, byte(packet.PubKeyAlgoRSA), 8}
	b = binary.BigEndian.AppendUint16(b, uint16(len(hashed)))
	b = append(b, hashed...)
	b = append(b, 0, 0)          // no unhashed subpackets
	b = append(b, 0, 0)          // left 16 bits of the hash
	return append(b, 0, 8, 0x80) // MPI: 8 bits
}

// subpacket is one signature subpacket (RFC 9580 §5.2.3.7), len < 191.
func subpacket(typ byte, data []byte) []byte {
	return append([]byte{byte(len(data) + 1), typ}, data...)
}

var creationTime = subpacket(2, []byte{0x60, 0, 0, 0})

// TestGoCryptoPR325EmbeddedSignatureInPrimaryKeyBinding: a primary key
// binding signature (0x19) that embeds another one could recurse without
// bound; go-crypto ≥ v1.5.2 refuses the structure.
func TestGoCryptoPR325EmbeddedSignatureInPrimaryKeyBinding(t *testing.T) {
	inner := sigBody(0x19, creationTime)
	for range 3 {
		inner = sigBody(0x19, append(append([]byte{}, creationTime...), subpacket(32, inner)...))
	}
	mustNotPanic(t, "packet.Read", func() {
		_, err := packet.Read(bytes.NewReader(pkt(2, inner)))
		if err == nil || !strings.Contains(err.Error(), "embedded signature") {
			t.Fatalf("nested primary key binding signatures: err = %v, want the #325 refusal", err)
		}
	})
}

// TestGoCryptoPR322UnknownAEADModeInSKESK: a v6 SKESK naming an AEAD mode
// the library does not know made Decrypt dereference a nil cipher.AEAD.
func TestGoCryptoPR322UnknownAEADModeInSKESK(t *testing.T) {
	s2k := append([]byte{3, 8}, append(bytes.Repeat([]byte{0x5a}, 8), 0x60)...) // iterated+salted, SHA-256
	body := []byte{6, byte(2 + 1 + len(s2k)), byte(packet.CipherAES256), 99, byte(len(s2k))}
	body = append(body, s2k...)
	body = append(body, bytes.Repeat([]byte{0xee}, 48)...) // "encrypted key" and tag
	mustNotPanic(t, "SKESK with AEAD mode 99", func() {
		p, err := packet.Read(bytes.NewReader(pkt(3, body)))
		if err != nil {
			return // refused while parsing: fine too
		}
		ske, ok := p.(*packet.SymmetricKeyEncrypted)
		if !ok {
			t.Fatalf("parsed as %T", p)
		}
		if _, _, err := ske.Decrypt([]byte("passphrase")); err == nil {
			t.Fatal("an unknown AEAD mode decrypted")
		}
	})
}

// TestGoCryptoPR319And320SignatureWithoutIssuer: a signed message whose
// one-pass signature names a key the reader holds, but whose signature
// names no issuer (no key ID, no fingerprint), dereferenced nil in the
// trailing-signature check.
func TestGoCryptoPR319And320SignatureWithoutIssuer(t *testing.T) {
	e, err := openpgp.NewEntity("Signer", "", "signer@example.org", &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA})
	if err != nil {
		t.Fatal(err)
	}
	signer, ok := e.SigningKey(time.Now())
	if !ok {
		t.Fatal("no signing key")
	}
	ops := []byte{3, 0x00, 8, byte(signer.PublicKey.PubKeyAlgo)}
	ops = binary.BigEndian.AppendUint64(ops, signer.PublicKey.KeyId)
	ops = append(ops, 1)
	lit := append([]byte{'b', 0, 0, 0, 0, 0}, "signed text"...)
	var msg []byte
	msg = append(msg, pkt(4, ops)...)
	msg = append(msg, pkt(11, lit)...)
	msg = append(msg, pkt(2, sigBody(0x00, creationTime))...)
	mustNotPanic(t, "reading a message signed without issuer", func() {
		md, err := openpgp.ReadMessage(bytes.NewReader(msg), openpgp.EntityList{e}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if md.SignedBy == nil {
			t.Fatal("the one-pass signature did not select the signer: the checked path is not reached")
		}
		if _, err := io.ReadAll(md.UnverifiedBody); err != nil {
			t.Fatal(err)
		}
		if md.SignatureError == nil {
			t.Fatal("a signature without issuer verified")
		}
	})
}

// TestPKCS7Issue67Ber2derPanics: the inputs of go.mozilla.org/pkcs7 issue
// #67 (fixed by PR #94, v0.10.0) made ber2der index past its input.
func TestPKCS7Issue67Ber2derPanics(t *testing.T) {
	for _, in := range [][]byte{{0x1f, 0x80}, {0x1f, 0x05}, {0x30, 0x81}, {0x30, 0x84, 0x01}, {0x5f, 0x4d}, {48, 130, 6}} {
		mustNotPanic(t, "pkcs7.Parse", func() {
			if _, err := pkcs7.Parse(in); err == nil {
				t.Errorf("pkcs7.Parse(% x) accepted garbage", in)
			}
		})
	}
}
