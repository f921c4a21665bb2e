package pgp

import (
	"crypto"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

func TestCheckEncryptionAccepts(t *testing.T) {
	for _, kind := range []keyKind{kindCv25519, kindX25519, kindRSA3072, kindAEAD, kindV6} {
		t.Run(string(kind), func(t *testing.T) {
			if err := certOf(t, testKey(t, kind)).CheckEncryption(time.Now()); err != nil {
				t.Fatalf("CheckEncryption: %v", err)
			}
		})
	}
}

// certAfter builds a key at created, lets change modify it (with the
// generation config), and returns it as a Cert read from its public export.
func certAfter(t *testing.T, kind keyKind, created time.Time, change func(*openpgp.Entity, *packet.Config)) *Cert {
	t.Helper()
	cfg := keyConfig(kind, created)
	e, err := openpgp.NewEntity("Test", "", "test@example.org", cfg)
	if err != nil {
		t.Fatal(err)
	}
	if change != nil {
		change(e, cfg)
	}
	return certOf(t, e)
}

func TestCheckEncryptionRefuses(t *testing.T) {
	created := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	later := created.Add(30 * 24 * time.Hour)
	oneDay := uint32(24 * 60 * 60)
	tests := []struct {
		name   string
		cert   func(t *testing.T) *Cert
		now    time.Time
		reason string
	}{
		{"primary expired", func(t *testing.T) *Cert {
			cfg := keyConfig(kindCv25519, created)
			cfg.KeyLifetimeSecs = oneDay
			e, err := openpgp.NewEntity("Test", "", "test@example.org", cfg)
			if err != nil {
				t.Fatal(err)
			}
			return certOf(t, e)
		}, later, "expired on 2024-01-02"},
		{"not yet valid", func(t *testing.T) *Cert {
			return certAfter(t, kindCv25519, later, nil)
		}, created, "created in the future"},
		{"primary revoked", func(t *testing.T) *Cert {
			return certAfter(t, kindCv25519, created, func(e *openpgp.Entity, cfg *packet.Config) {
				if err := e.RevokeKey(packet.KeyCompromised, "lost laptop", cfg); err != nil {
					t.Fatal(err)
				}
			})
		}, later, "revoked (key compromised)"},
		{"sign-only", func(t *testing.T) *Cert {
			return certAfter(t, kindCv25519, created, func(e *openpgp.Entity, _ *packet.Config) {
				e.Subkeys = nil
			})
		}, later, "no encryption subkey (sign-only key)"},
		{"encryption subkey revoked", func(t *testing.T) *Cert {
			return certAfter(t, kindCv25519, created, func(e *openpgp.Entity, cfg *packet.Config) {
				if err := e.RevokeSubkey(&e.Subkeys[0], packet.KeySuperseded, "", cfg); err != nil {
					t.Fatal(err)
				}
			})
		}, later, "no usable encryption subkey: subkey"},
		{"encryption subkey expired", func(t *testing.T) *Cert {
			return certAfter(t, kindCv25519, created, func(e *openpgp.Entity, cfg *packet.Config) {
				e.Subkeys = nil
				cfg.KeyLifetimeSecs = oneDay
				if err := e.AddEncryptionSubkey(cfg); err != nil {
					t.Fatal(err)
				}
			})
		}, later, "expired on 2024-01-02"},
		{"subkey binding signature dated in the future", func(t *testing.T) *Cert {
			return certAfter(t, kindCv25519, created, func(e *openpgp.Entity, cfg *packet.Config) {
				sig := e.Subkeys[0].Sig
				sig.CreationTime = later.Add(24 * time.Hour)
				if err := sig.SignKey(e.Subkeys[0].PublicKey, e.PrivateKey, cfg); err != nil {
					t.Fatal(err)
				}
			})
		}, later, "binding signature dated in the future"},
		{"primary user ID revoked", func(t *testing.T) *Cert {
			return certAfter(t, kindCv25519, created, func(e *openpgp.Entity, _ *packet.Config) {
				revokeUserID(t, e, "Test <test@example.org>", created)
			})
		}, later, "primary user ID revoked"},
		{"RSA-1024", func(t *testing.T) *Cert {
			return certOf(t, testKey(t, kindRSA1024))
		}, time.Now(), "RSA key of 1024 bits; at least 2048 required"},
		{"RSA-1024 encryption subkey", func(t *testing.T) *Cert {
			return certAfter(t, kindCv25519, created, func(e *openpgp.Entity, cfg *packet.Config) {
				e.Subkeys = nil
				cfg.Algorithm, cfg.RSABits = packet.PubKeyAlgoRSA, 1024
				if err := e.AddEncryptionSubkey(cfg); err != nil {
					t.Fatal(err)
				}
			})
		}, later, "RSA key of 1024 bits; at least 2048 required"},
		{"SHA-1 self-signature after 2023", func(t *testing.T) *Cert {
			return certAfter(t, kindCv25519, created, func(e *openpgp.Entity, _ *packet.Config) {
				resignUserID(t, e, crypto.SHA1)
			})
		}, later, "self-signature uses the weak hash SHA-1"},
		{"SHA-1 subkey binding after 2023", func(t *testing.T) *Cert {
			return certAfter(t, kindCv25519, created, func(e *openpgp.Entity, _ *packet.Config) {
				sig := e.Subkeys[0].Sig
				sig.Hash = crypto.SHA1
				if err := sig.SignKey(e.Subkeys[0].PublicKey, e.PrivateKey, noSaltNotation()); err != nil {
					t.Fatal(err)
				}
			})
		}, later, "encryption key binding signature uses the weak hash SHA-1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.cert(t)
			wantUnusable(t, c.CheckEncryption(tt.now), tt.reason)
			// Encrypt must refuse the same certificate at the same time.
			_, err := Encrypt(discard{}, []*Cert{c}, EncryptOptions{Now: func() time.Time { return tt.now }})
			wantUnusable(t, err, tt.reason)
		})
	}
}

func TestCheckEncryptionOldSHA1Accepted(t *testing.T) {
	// Before Sequoia's cut-off (2023-02-01), SHA-1 self-signatures pass.
	created := time.Date(2015, 1, 1, 0, 0, 0, 0, time.UTC)
	c := certAfter(t, kindCv25519, created, func(e *openpgp.Entity, _ *packet.Config) {
		resignUserID(t, e, crypto.SHA1)
	})
	if c.Entity.Identities["Test <test@example.org>"].SelfSignature.Hash != crypto.SHA1 {
		t.Fatal("setup: self-signature is not SHA-1")
	}
	if err := c.CheckEncryption(created.Add(time.Hour)); err != nil {
		t.Fatalf("2015 SHA-1 self-signature refused: %v", err)
	}
}

func TestHashProblem(t *testing.T) {
	after := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, h := range []crypto.Hash{crypto.MD5, crypto.RIPEMD160, crypto.SHA1} {
		if hashProblem(&packet.Signature{Hash: h, CreationTime: after}, "self-signature") == "" {
			t.Errorf("%v self-signature from 2024 accepted", h)
		}
	}
	for _, h := range []crypto.Hash{crypto.SHA256, crypto.SHA512} {
		if p := hashProblem(&packet.Signature{Hash: h, CreationTime: after}, "self-signature"); p != "" {
			t.Errorf("%v refused: %s", h, p)
		}
	}
}

func TestCheckEncryptionFollowsNow(t *testing.T) {
	// Valid for one day from creation: fine after an hour, refused after two
	// days, refused before creation.
	created := time.Now().Add(-time.Hour)
	cfg := keyConfig(kindCv25519, created)
	cfg.KeyLifetimeSecs = 24 * 60 * 60
	e, err := openpgp.NewEntity("Test", "", "test@example.org", cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := certOf(t, e)
	if err := c.CheckEncryption(created.Add(time.Hour)); err != nil {
		t.Errorf("within lifetime: %v", err)
	}
	wantUnusable(t, c.CheckEncryption(created.Add(48*time.Hour)), "expired on")
	wantUnusable(t, c.CheckEncryption(created.Add(-time.Hour)), "created in the future")
}

// resignUserID makes the self-signature of the only user ID again, with h.
// go-crypto refuses to generate keys that prefer SHA-1, so we re-sign.
func resignUserID(t *testing.T, e *openpgp.Entity, h crypto.Hash) {
	t.Helper()
	for uid, id := range e.Identities {
		id.SelfSignature.Hash = h
		if err := id.SelfSignature.SignUserId(uid, e.PrimaryKey, e.PrivateKey, noSaltNotation()); err != nil {
			t.Fatalf("re-sign %q with %v: %v", uid, h, err)
		}
	}
}

// noSaltNotation turns off go-crypto's salt notation on v4 signatures,
// which it can only make for RFC 9580 §9.5 salted hashes (not SHA-1).
func noSaltNotation() *packet.Config {
	off := false
	return &packet.Config{NonDeterministicSignaturesViaNotation: &off}
}

// discard is an io.Writer that drops everything.
type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
