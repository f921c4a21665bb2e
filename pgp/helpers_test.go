package pgp

// Helpers shared by the unit tests: go-crypto generated keys and a
// go-crypto based decrypter that also reports which packets it saw.

import (
	"bytes"
	"crypto"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// keyKind names the key shapes the unit tests generate.
type keyKind string

const (
	kindCv25519 keyKind = "cv25519" // v4 EdDSA + legacy ECDH Curve25519 (gpg/Thunderbird shape)
	kindX25519  keyKind = "x25519"  // v4 Ed25519 + X25519 (RFC 9580 native algorithms)
	kindRSA3072 keyKind = "rsa3072"
	kindRSA1024 keyKind = "rsa1024"
	kindAEAD    keyKind = "x25519-aead" // v4, advertises SEIPDv2
	kindV6      keyKind = "v6"          // v6 Ed25519 + X25519, advertises SEIPDv2
)

// keyConfig is the generation config of each kind. All prefer AES-256, as
// gpg, sq and rnp keys do.
func keyConfig(kind keyKind, now time.Time) *packet.Config {
	c := &packet.Config{
		DefaultCipher: packet.CipherAES256,
		DefaultHash:   crypto.SHA256,
		Time:          func() time.Time { return now },
	}
	switch kind {
	case kindCv25519:
		c.Algorithm, c.Curve = packet.PubKeyAlgoEdDSA, packet.Curve25519
	case kindX25519:
		c.Algorithm = packet.PubKeyAlgoEd25519
	case kindRSA3072:
		c.Algorithm, c.RSABits = packet.PubKeyAlgoRSA, 3072
	case kindRSA1024:
		c.Algorithm, c.RSABits = packet.PubKeyAlgoRSA, 1024
	case kindAEAD:
		c.Algorithm, c.AEADConfig = packet.PubKeyAlgoEd25519, &packet.AEADConfig{}
	case kindV6:
		c.Algorithm, c.AEADConfig, c.V6Keys = packet.PubKeyAlgoEd25519, &packet.AEADConfig{}, true
	}
	return c
}

// newKey generates a secret key of the given kind for "<kind>@example.org".
func newKey(t testing.TB, kind keyKind, now time.Time) *openpgp.Entity {
	t.Helper()
	e, err := openpgp.NewEntity(string(kind), "", string(kind)+"@example.org", keyConfig(kind, now))
	if err != nil {
		t.Fatalf("generate %s key: %v", kind, err)
	}
	return e
}

// cachedKeys avoids generating the slow RSA keys in every test.
var cachedKeys sync.Map // keyKind -> *openpgp.Entity

// testKey returns a shared, unmodified key of kind created an hour ago.
// Tests that change a key must use newKey.
func testKey(t testing.TB, kind keyKind) *openpgp.Entity {
	t.Helper()
	if e, ok := cachedKeys.Load(kind); ok {
		return e.(*openpgp.Entity)
	}
	e, _ := cachedKeys.LoadOrStore(kind, newKey(t, kind, time.Now().Add(-time.Hour)))
	return e.(*openpgp.Entity)
}

// publicBytes is the binary public certificate of e.
func publicBytes(t testing.TB, e *openpgp.Entity) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := e.Serialize(&buf); err != nil {
		t.Fatalf("serialize public key: %v", err)
	}
	return buf.Bytes()
}

// armorBytes armors b as blockType, with the CRC, as most exporters do.
func armorBytes(t testing.TB, blockType string, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := armor.Encode(&buf, blockType, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	buf.WriteByte('\n')
	return buf.Bytes()
}

// secretBytes is the binary secret key of e.
func secretBytes(t testing.TB, e *openpgp.Entity) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := e.SerializePrivateWithoutSigning(&buf, nil); err != nil {
		t.Fatalf("serialize secret key: %v", err)
	}
	return buf.Bytes()
}

// certOf turns e into a Cert the way the gateway gets one: through ReadCerts
// of its public export.
func certOf(t testing.TB, e *openpgp.Entity) *Cert {
	t.Helper()
	certs, err := ReadCerts(bytes.NewReader(publicBytes(t, e)), 1<<20)
	if err != nil {
		t.Fatalf("ReadCerts: %v", err)
	}
	if len(certs) != 1 {
		t.Fatalf("ReadCerts returned %d certs, want 1", len(certs))
	}
	return certs[0]
}

// encryptTo runs Encrypt with plaintext and returns the armored output.
func encryptTo(t testing.TB, plaintext []byte, opts EncryptOptions, to ...*Cert) []byte {
	t.Helper()
	var out bytes.Buffer
	w, err := Encrypt(&out, to, opts)
	if err != nil {
		t.Fatalf("Encrypt: %v", err)
	}
	if _, err := w.Write(plaintext); err != nil {
		t.Fatalf("write plaintext: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return out.Bytes()
}

// msgInfo is what the tests check about an encrypted message's packets.
type msgInfo struct {
	pkeskVersions []int
	pkeskKeyIDs   []uint64
	seipdVersion  int                   // 1: MDC (RFC 9580 §5.13.1), 2: AEAD (§5.13.2)
	cipher        packet.CipherFunction // session cipher
	aeadMode      packet.AEADMode       // for SEIPDv2
	plaintext     []byte
	literalBinary bool
}

// inspect parses the armored message, decrypts it with key and reports on
// it. Any error, including an MDC/AEAD failure at EOF, fails the test.
func inspect(t testing.TB, armored []byte, key *openpgp.Entity) msgInfo {
	t.Helper()
	block, err := armor.Decode(bytes.NewReader(armored))
	if err != nil {
		t.Fatalf("decode armor: %v", err)
	}
	if block.Type != "PGP MESSAGE" {
		t.Fatalf("armor type %q, want PGP MESSAGE", block.Type)
	}
	raw, err := io.ReadAll(block.Body)
	if err != nil {
		t.Fatalf("read armor: %v", err)
	}
	var info msgInfo
	info.cipher = sessionCipher(t, raw, key, &info)

	md, err := openpgp.ReadMessage(bytes.NewReader(raw), openpgp.EntityList{key}, nil, nil)
	if err != nil {
		t.Fatalf("ReadMessage: %v", err)
	}
	info.plaintext, err = io.ReadAll(md.UnverifiedBody)
	if err != nil {
		t.Fatalf("read plaintext (integrity check): %v", err)
	}
	if md.IsSigned {
		t.Errorf("message is signed; the gateway must not sign")
	}
	info.literalBinary = md.LiteralData.IsBinary
	return info
}

// sessionCipher walks the packets, records PKESK and SEIPD versions into
// info and returns the session cipher, decrypting key's PKESK for SEIPDv1.
func sessionCipher(t testing.TB, raw []byte, key *openpgp.Entity, info *msgInfo) packet.CipherFunction {
	t.Helper()
	var cipher packet.CipherFunction
	packets := packet.NewReader(bytes.NewReader(raw))
	for {
		p, err := packets.Next()
		if err != nil {
			t.Fatalf("read packets: %v", err)
		}
		switch p := p.(type) {
		case *packet.EncryptedKey:
			info.pkeskVersions = append(info.pkeskVersions, p.Version)
			info.pkeskKeyIDs = append(info.pkeskKeyIDs, p.KeyId)
			for _, k := range (openpgp.EntityList{key}).DecryptionKeys() {
				if p.Decrypt(k.PrivateKey, nil) == nil {
					cipher = p.CipherFunc
				}
			}
		case *packet.SymmetricallyEncrypted:
			if !p.IntegrityProtected {
				t.Fatalf("message without integrity protection (tag 9)")
			}
			info.seipdVersion = p.Version
			if p.Version == 2 {
				info.aeadMode = p.Mode
				return p.Cipher
			}
			return cipher
		default:
			t.Fatalf("unexpected packet %T before the encrypted data", p)
		}
	}
}

// wantUnusable asserts that err is an *UnusableKeyError whose message
// contains want.
func wantUnusable(t testing.TB, err error, want string) {
	t.Helper()
	var ue *UnusableKeyError
	if !errors.As(err, &ue) {
		t.Fatalf("got error %v, want *UnusableKeyError containing %q", err, want)
	}
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("got %q, want it to contain %q", err, want)
	}
	if !strings.HasPrefix(err.Error(), "pgp: ") {
		t.Fatalf("error %q lacks the pgp: prefix", err)
	}
}
