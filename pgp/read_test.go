package pgp

import (
	"bytes"
	"crypto"
	"errors"
	"math/rand/v2"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

func TestReadCertsFormats(t *testing.T) {
	a, b := testKey(t, kindCv25519), testKey(t, kindRSA3072)
	pubA, pubB := publicBytes(t, a), publicBytes(t, b)
	both := append(slices.Clone(pubA), pubB...)
	tests := []struct {
		name  string
		input []byte
		want  []*openpgp.Entity
	}{
		{"binary", pubA, []*openpgp.Entity{a}},
		{"armored", armorBytes(t, armorPublicKey, pubA), []*openpgp.Entity{a}},
		{"armored with UTF-8 BOM", concat([]byte("\xef\xbb\xbf"), armorBytes(t, armorPublicKey, pubA)), []*openpgp.Entity{a}},
		{"binary two keys", both, []*openpgp.Entity{a, b}},
		{"armored two keys in one block", armorBytes(t, armorPublicKey, both), []*openpgp.Entity{a, b}},
		{"two armor blocks with text around", concat(
			[]byte("Here are our keys.\r\n\r\n"),
			armorBytes(t, armorPublicKey, pubA),
			[]byte("\nand the second one:\n"),
			bytes.ReplaceAll(armorBytes(t, armorPublicKey, pubB), []byte("\n"), []byte("\r\n")),
			[]byte("-- \nsignature line\n"),
		), []*openpgp.Entity{a, b}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			certs, err := ReadCerts(bytes.NewReader(tt.input), 1<<20)
			if err != nil {
				t.Fatalf("ReadCerts: %v", err)
			}
			if len(certs) != len(tt.want) {
				t.Fatalf("got %d certs, want %d", len(certs), len(tt.want))
			}
			for i, c := range certs {
				if !bytes.Equal(c.Entity.PrimaryKey.Fingerprint, tt.want[i].PrimaryKey.Fingerprint) {
					t.Errorf("cert %d: fingerprint %s, want %X", i, c.Fingerprint(), tt.want[i].PrimaryKey.Fingerprint)
				}
			}
		})
	}
}

func TestReadCertsRefusesSecretKeys(t *testing.T) {
	a, b := testKey(t, kindCv25519), testKey(t, kindRSA3072)
	secA, pubB := secretBytes(t, a), publicBytes(t, b)
	// A secret subkey alone, after a public primary key: tag 7 only.
	secretSubkeyOnly := bytes.Clone(publicBytes(t, a))
	var sub bytes.Buffer
	if err := a.Subkeys[0].PrivateKey.Serialize(&sub); err != nil {
		t.Fatal(err)
	}
	secretSubkeyOnly = append(secretSubkeyOnly, sub.Bytes()...)
	// A public key packet body inside a "PGP PRIVATE KEY BLOCK" armor.
	publicInPrivateArmor := armorBytes(t, armorPrivateKey, pubB)

	tests := map[string][]byte{
		"binary secret key":          secA,
		"armored secret key":         armorBytes(t, armorPrivateKey, secA),
		"secret key in public armor": armorBytes(t, armorPublicKey, secA),
		"public then secret binary":  concat(pubB, secA),
		"secret then public binary":  concat(secA, pubB),
		"public block then secret block": concat(
			armorBytes(t, armorPublicKey, pubB), armorBytes(t, armorPrivateKey, secA)),
		"secret block then garbage block": concat(
			armorBytes(t, armorPrivateKey, secA), armorBytes(t, armorPublicKey, []byte("garbage"))),
		"secret subkey packet only":  secretSubkeyOnly,
		"private key armor type":     publicInPrivateArmor,
		"truncated secret key":       secA[:40],
		"secret key, text before it": concat([]byte("my key:\n"), armorBytes(t, armorPrivateKey, secA)),
		// The private block's BEGIN line glued to the public block's END
		// line: the armor parser never sees the second block.
		"secret block glued to public block": bytes.Replace(
			concat(armorBytes(t, armorPublicKey, pubB), armorBytes(t, armorPrivateKey, secA)),
			[]byte("-----\n-----BEGIN "+armorPrivateKey), []byte("----------BEGIN "+armorPrivateKey), 1),
	}
	for name, input := range tests {
		t.Run(name, func(t *testing.T) {
			certs, err := ReadCerts(bytes.NewReader(input), 1<<20)
			if !errors.Is(err, ErrSecretKey) {
				t.Fatalf("got err %v, want ErrSecretKey", err)
			}
			if certs != nil {
				t.Fatalf("got %d certs with a secret key error, want none", len(certs))
			}
		})
	}
}

func TestReadCertsRefusesGarbage(t *testing.T) {
	// Fixed-seed bytes: random input may well start with a secret-key
	// packet header, and ReadCerts rightly calls that a secret key.
	random := make([]byte, 2048)
	rand.NewChaCha8([32]byte{1}).Read(random)
	random[0] = 0x99 // old-format public key packet header (RFC 9580 §4.2.2)
	pub := publicBytes(t, testKey(t, kindCv25519))
	tests := map[string][]byte{
		"empty":             nil,
		"text":              []byte("hello, this is not a key\n"),
		"random binary":     random,
		"truncated key":     pub[:len(pub)/2],
		"armored garbage":   armorBytes(t, armorPublicKey, []byte("not packets at all")),
		"armored message":   armorBytes(t, armorMessage, pub),
		"armor without end": []byte("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQENBF\n"),
		"bad base64":        []byte("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n!!!!\n-----END PGP PUBLIC KEY BLOCK-----\n"),
	}
	for name, input := range tests {
		t.Run(name, func(t *testing.T) {
			certs, err := ReadCerts(bytes.NewReader(input), 1<<20)
			if err == nil {
				t.Fatalf("ReadCerts accepted %s: %d certs", name, len(certs))
			}
			if errors.Is(err, ErrSecretKey) {
				t.Fatalf("got ErrSecretKey for %s", name)
			}
			if !strings.HasPrefix(err.Error(), "pgp: ") {
				t.Errorf("error %q lacks the pgp: prefix", err)
			}
		})
	}
	if _, err := ReadCerts(strings.NewReader("no key here"), 1<<20); !errors.Is(err, ErrNoCert) {
		t.Errorf("text input: got %v, want ErrNoCert", err)
	}
}

func TestReadCertsSizeLimit(t *testing.T) {
	pub := publicBytes(t, testKey(t, kindCv25519))
	if _, err := ReadCerts(bytes.NewReader(pub), int64(len(pub))); err != nil {
		t.Fatalf("input of exactly maxBytes: %v", err)
	}
	_, err := ReadCerts(bytes.NewReader(pub), int64(len(pub)-1))
	if err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("input over maxBytes: got %v, want a size error", err)
	}
	for _, limit := range []int64{0, -1} {
		if _, err := ReadCerts(bytes.NewReader(pub), limit); err == nil {
			t.Errorf("maxBytes %d accepted; zero must not mean unlimited", limit)
		}
	}
}

func TestFingerprintAndBytes(t *testing.T) {
	for _, kind := range []keyKind{kindCv25519, kindRSA3072, kindV6} {
		t.Run(string(kind), func(t *testing.T) {
			e := testKey(t, kind)
			c := certOf(t, e)
			fpr := c.Fingerprint()
			wantLen := 40
			if kind == kindV6 {
				wantLen = 64
			}
			if !regexp.MustCompile(`^[0-9A-F]+$`).MatchString(fpr) || len(fpr) != wantLen {
				t.Errorf("fingerprint %q: want %d upper-case hex digits", fpr, wantLen)
			}
			b := c.Bytes()
			if !bytes.Equal(b, c.Bytes()) {
				t.Error("Bytes is not deterministic")
			}
			again, err := ReadCerts(bytes.NewReader(b), 1<<20)
			if err != nil || len(again) != 1 || again[0].Fingerprint() != fpr {
				t.Fatalf("Bytes does not read back: %v", err)
			}
			if again[0].CheckEncryption(time.Now()) != nil {
				t.Errorf("re-read cert is not usable: %v", again[0].CheckEncryption(time.Now()))
			}
		})
	}
}

func TestBytesNeverContainsSecretMaterial(t *testing.T) {
	e := newKey(t, kindCv25519, time.Now())
	// A Cert built directly from a secret entity must still serialise public.
	b := (&Cert{Entity: e}).Bytes()
	if err := refuseSecretPackets(b); err != nil {
		t.Fatalf("Bytes of a secret entity: %v", err)
	}
	if _, err := ReadCerts(bytes.NewReader(b), 1<<20); err != nil {
		t.Fatalf("Bytes of a secret entity does not read as public: %v", err)
	}
}

func TestAddresses(t *testing.T) {
	now := time.Now()
	e := newKey(t, kindCv25519, now)
	cfg := keyConfig(kindCv25519, now)
	for _, uid := range []struct{ name, email string }{
		{"Alice Work", "Alice@Example.ORG"},
		{"Alice Old", "old@example.org"},
		{"No Mail", ""},
	} {
		if err := e.AddUserId(uid.name, "", uid.email, cfg); err != nil {
			t.Fatal(err)
		}
	}
	revokeUserID(t, e, "Alice Old <old@example.org>", now)

	got := certOf(t, e).Addresses()
	want := []string{"Alice@Example.ORG", "cv25519@example.org"}
	if !slices.Equal(got, want) {
		t.Fatalf("Addresses() = %q, want %q (revoked and empty ones left out)", got, want)
	}
}

// revokeUserID adds a certification revocation (0x30) for the user ID.
func revokeUserID(t *testing.T, e *openpgp.Entity, uid string, now time.Time) {
	t.Helper()
	id := e.Identities[uid]
	if id == nil {
		t.Fatalf("no user ID %q", uid)
	}
	sig := &packet.Signature{
		Version:           e.PrimaryKey.Version,
		SigType:           packet.SigTypeCertificationRevocation,
		PubKeyAlgo:        e.PrimaryKey.PubKeyAlgo,
		Hash:              crypto.SHA256,
		CreationTime:      now,
		IssuerKeyId:       &e.PrimaryKey.KeyId,
		IssuerFingerprint: e.PrimaryKey.Fingerprint,
	}
	if err := sig.SignUserId(uid, e.PrimaryKey, e.PrivateKey, nil); err != nil {
		t.Fatal(err)
	}
	id.Revocations = append(id.Revocations, sig)
	id.Signatures = append(id.Signatures, sig)
}

func TestReadCertsDropsThirdPartyCertifications(t *testing.T) {
	e := newKey(t, kindCv25519, time.Now())
	signer := testKey(t, kindX25519)
	uid := "cv25519 <cv25519@example.org>"
	if err := e.SignIdentity(uid, signer, nil); err != nil {
		t.Fatal(err)
	}
	if n := len(e.Identities[uid].Signatures); n != 2 {
		t.Fatalf("setup: %d signatures on the user ID, want 2", n)
	}
	c := certOf(t, e)
	sigs := c.Entity.Identities[uid].Signatures
	if len(sigs) != 1 || !sigs[0].CheckKeyIdOrFingerprint(e.PrimaryKey) {
		t.Fatalf("got %d signatures on the user ID, want only the self-signature", len(sigs))
	}
	if bytes.Contains(c.Bytes(), signer.PrimaryKey.Fingerprint) {
		t.Error("Bytes still holds the third-party certifier's fingerprint")
	}
}

func concat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
