package endpoint

import (
	"bytes"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"github.com/sealgate/sealgate/pgp"
)

func TestGenerateProfiles(t *testing.T) {
	t.Parallel()
	tests := []struct {
		profile          Profile
		version          int
		primary, subkey  packet.PublicKeyAlgorithm
		advertisesSEIPD2 bool
	}{
		{ProfileDefault, 4, packet.PubKeyAlgoEdDSA, packet.PubKeyAlgoECDH, false},
		{ProfileRFC9580, 6, packet.PubKeyAlgoEd25519, packet.PubKeyAlgoX25519, true},
		{ProfilePQ, 6, packet.PubKeyAlgoMldsa65Ed25519, packet.PubKeyAlgoMlkem768X25519, true},
	}
	for _, tt := range tests {
		t.Run(string(tt.profile), func(t *testing.T) {
			t.Parallel()
			k := keyFor(t, tt.profile)
			if !bytes.HasPrefix(k.gen.Public, []byte("-----BEGIN PGP PUBLIC KEY BLOCK-----")) ||
				!bytes.HasPrefix(k.gen.Secret, []byte("-----BEGIN PGP PRIVATE KEY BLOCK-----")) {
				t.Fatalf("armor blocks:\n%.60s\n%.60s", k.gen.Public, k.gen.Secret)
			}
			// The gateway and the directory read the public key as any other.
			certs, err := pgp.ReadCerts(bytes.NewReader(k.gen.Public), 1<<20)
			if err != nil {
				t.Fatalf("pgp.ReadCerts: %v", err)
			}
			c := certs[0]
			if c.Fingerprint() != k.gen.Fingerprint || c.Fingerprint() != Fingerprint(k.entity) {
				t.Errorf("fingerprints %s, %s, %s", c.Fingerprint(), k.gen.Fingerprint, Fingerprint(k.entity))
			}
			if err := c.CheckEncryption(time.Now()); err != nil {
				t.Errorf("CheckEncryption: %v", err)
			}
			if a := c.Addresses(); len(a) != 1 || a[0] != string(tt.profile)+"@example.org" {
				t.Errorf("addresses %q", a)
			}
			e := c.Entity
			if e.PrimaryKey.Version != tt.version || e.PrimaryKey.PubKeyAlgo != tt.primary {
				t.Errorf("primary v%d algo %d, want v%d algo %d", e.PrimaryKey.Version, e.PrimaryKey.PubKeyAlgo, tt.version, tt.primary)
			}
			if tt.profile == ProfileDefault {
				if curve, _ := e.PrimaryKey.Curve(); curve != packet.Curve25519 {
					t.Errorf("primary curve %s", curve)
				}
			}
			if len(e.Subkeys) != 1 || e.Subkeys[0].PublicKey.PubKeyAlgo != tt.subkey || !e.Subkeys[0].Sig.FlagEncryptCommunications {
				t.Fatalf("subkeys %+v, want one %d encryption subkey", e.Subkeys, tt.subkey)
			}
			sig, _ := e.PrimarySelfSignature()
			if len(sig.PreferredSymmetric) == 0 || sig.PreferredSymmetric[0] != uint8(packet.CipherAES256) {
				t.Errorf("preferred ciphers %v, want AES-256 first", sig.PreferredSymmetric)
			}
			if !sig.SEIPDv1 || sig.SEIPDv2 != tt.advertisesSEIPD2 {
				t.Errorf("features SEIPDv1 %v SEIPDv2 %v, want true %v", sig.SEIPDv1, sig.SEIPDv2, tt.advertisesSEIPD2)
			}
			if len(sig.PreferredCompression) == 0 || sig.PreferredCompression[0] != uint8(packet.CompressionNone) {
				t.Errorf("preferred compression %v, want none first", sig.PreferredCompression)
			}
		})
	}
}

func TestGenerateSecretIsProtected(t *testing.T) {
	t.Parallel()
	for _, p := range []Profile{ProfileDefault, ProfileRFC9580, ProfilePQ} {
		k := keyFor(t, p)
		keys, err := ReadKeys(k.gen.Secret)
		if err != nil {
			t.Fatal(err)
		}
		e := keys[0]
		if !HasSecret(e) || !Locked(e) || !e.PrivateKey.Encrypted || !e.Subkeys[0].PrivateKey.Encrypted {
			t.Fatalf("%s: secret key is not protected", p)
		}
		if err := Unlock(e, []byte("wrong")); !errors.Is(err, ErrPassphrase) {
			t.Errorf("%s: wrong passphrase: %v", p, err)
		}
		if err := Unlock(e, testPassphrase); err != nil || Locked(e) {
			t.Errorf("%s: right passphrase: %v", p, err)
		}
		// The public block holds no secret key material at all.
		if _, err := pgp.ReadCerts(bytes.NewReader(k.gen.Public), 1<<20); errors.Is(err, pgp.ErrSecretKey) {
			t.Errorf("%s: public block holds secret material", p)
		}
	}
}

func TestGenerateRefusals(t *testing.T) {
	t.Parallel()
	for name, o := range map[string]GenerateOptions{
		"no address":        {Passphrase: testPassphrase},
		"display name form": {Address: "Alice <alice@example.org>", Passphrase: testPassphrase},
		"no domain":         {Address: "alice", Passphrase: testPassphrase},
		"empty passphrase":  {Address: "alice@example.org"},
		"unknown profile":   {Address: "alice@example.org", Passphrase: testPassphrase, Profile: "rsa1024"},
		"bad name":          {Address: "alice@example.org", Passphrase: testPassphrase, Name: "Alice <evil>"},
	} {
		if _, err := Generate(o); err == nil {
			t.Errorf("%s: Generate succeeded", name)
		}
	}
}

func TestGenerateName(t *testing.T) {
	t.Parallel()
	g, err := Generate(GenerateOptions{Address: "alice@example.org", Name: "Alice Example", Passphrase: testPassphrase, Profile: ProfileRFC9580})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := ReadKeys(g.Public)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := keys[0].Identities["Alice Example <alice@example.org>"]; !ok {
		t.Errorf("identities %v", keys[0].Identities)
	}
}

// TestGatewayDoesNotLinkEndpoint pins the custody rule of DESIGN.md: the
// gateway and directory binaries do not contain this package.
func TestGatewayDoesNotLinkEndpoint(t *testing.T) {
	t.Parallel()
	out, err := exec.Command("go", "list", "-deps", "../../cmd/sealgate", "../../gateway/...", "../../keydir/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "/pgp/endpoint") {
		t.Fatal("the gateway links github.com/sealgate/sealgate/pgp/endpoint")
	}
	if !strings.Contains(string(out), "github.com/sealgate/sealgate/pgp\n") {
		t.Fatalf("go list output does not look right:\n%s", out)
	}
}
