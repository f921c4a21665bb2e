package endpoint

import (
	"bytes"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// detachSign makes an armored detached signature over data (RFC 3156 §5).
func detachSign(t testing.TB, signer *openpgp.Entity, data []byte, cfg *packet.Config) []byte {
	t.Helper()
	var out bytes.Buffer
	if err := openpgp.ArmoredDetachSign(&out, signer, bytes.NewReader(data), cfg); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func dearmorSignature(t testing.TB, armored []byte) []byte {
	t.Helper()
	raw, err := signaturePackets(armored)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestVerifyDetached(t *testing.T) {
	t.Parallel()
	sender := keyFor(t, ProfileDefault)
	other := keyFor(t, ProfileRFC9580)
	keys := openpgp.EntityList{publicCert(t, sender), publicCert(t, other)}
	part := []byte("Content-Type: text/plain\r\n\r\nsigned part\r\n")
	sig := detachSign(t, sender.entity, part, nil)
	shortLived := detachSign(t, sender.entity, part, &packet.Config{SigLifetimeSecs: 3600})
	inTwoHours := func() time.Time { return time.Now().Add(2 * time.Hour) }

	for _, tt := range []struct {
		name      string
		signed    []byte
		signature []byte
		keys      openpgp.EntityList
		now       func() time.Time
		want      SignatureStatus
		signer    bool
	}{
		{"good", part, sig, keys, nil, SignatureGood, true},
		{"good, binary signature", part, dearmorSignature(t, sig), keys, nil, SignatureGood, true},
		{"tampered part", bytes.Replace(part, []byte("signed"), []byte("forged"), 1), sig, keys, nil, SignatureBad, true},
		{"line ends not canonical", bytes.ReplaceAll(part, []byte("\r\n"), []byte("\n")), sig, keys, nil, SignatureBad, true},
		{"unknown key", part, sig, openpgp.EntityList{publicCert(t, other)}, nil, SignatureUnknownKey, false},
		{"expired signature", part, shortLived, keys, inTwoHours, SignatureBad, true},
		{"not a signature", part, []byte("-----BEGIN PGP MESSAGE-----\n\nAAAA\n-----END PGP MESSAGE-----\n"), keys, nil, SignatureBad, false},
		{"garbage", part, []byte("\x89\x01\x02"), keys, nil, SignatureBad, false},
		{"empty", part, nil, keys, nil, SignatureBad, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			v := VerifyDetached(tt.signed, tt.signature, tt.keys, tt.now)
			if v.Status != tt.want {
				t.Fatalf("status %s (%v), want %s", v.Status, v.Err, tt.want)
			}
			if got := Fingerprint(v.Signer); tt.signer && got != sender.gen.Fingerprint || !tt.signer && v.Signer != nil {
				t.Errorf("signer %q", got)
			}
			if (v.Status == SignatureBad) != (v.Err != nil) {
				t.Errorf("Err %v with status %s", v.Err, v.Status)
			}
		})
	}
}

// TestHasAddressK2: the signer-vs-From rule matches the parsed addr-spec
// of a user ID exactly (reliability.md K2), never a substring or a name.
func TestHasAddressK2(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		uid, from string
		want      bool
	}{
		{"Alice <alice@corp.example>", "alice@corp.example", true},
		{"Alice <ALICE@Corp.Example>", "alice@corp.example", true},
		{"alice@corp.example", "Alice@CORP.example", true},
		{"<alice@corp.example>", "alice@corp.example", true},
		{"Alice (work) <alice@corp.example>", "alice@corp.example", true},
		{"Bob <bob@xn--bcher-kva.example>", "bob@bücher.example", true},
		{"Bob <bob@bücher.example>", "bob@xn--bcher-kva.example", true},
		{"alice@corp.example.evil.org", "alice@corp.example", false},
		{"Mallory <evil@x.example> alice@corp.example", "alice@corp.example", false},
		{`"alice@corp.example" <evil@x.example>`, "alice@corp.example", false},
		{"Alice <alice@corp.example>", "lice@corp.example", false},
		{"Alice", "alice@corp.example", false},
		{"Alice <alice@corp.example>", "", false},
		{"Alice <alice@corp.example>", "not an address", false},
	} {
		a, ok := uidAddress(tt.uid)
		got := false
		if ok {
			x, okA := foldAddress(a)
			y, okB := foldAddress(tt.from)
			got = okA && okB && x == y
		}
		if got != tt.want {
			t.Errorf("uid %q vs From %q: %v, want %v", tt.uid, tt.from, got, tt.want)
		}
	}
}

func TestHasAddressUsesValidUserIDs(t *testing.T) {
	t.Parallel()
	k := keyFor(t, ProfileDefault) // "default@example.org"
	e := publicCert(t, k)
	now := time.Now()
	if !HasAddress(e, "Default@Example.org", now) || HasAddress(e, "other@example.org", now) || HasAddress(nil, "default@example.org", now) {
		t.Errorf("HasAddress: addresses %v", Addresses(e, now))
	}
	for _, ident := range e.Identities {
		ident.Revocations = append(ident.Revocations, &packet.Signature{SigType: packet.SigTypeCertificationRevocation, CreationTime: now.Add(-time.Minute)})
	}
	if HasAddress(e, "default@example.org", now) {
		t.Error("a revoked user ID still matches")
	}
}
