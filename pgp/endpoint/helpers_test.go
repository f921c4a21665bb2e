package endpoint

// Helpers shared by the tests: keys from Generate, and hand-built messages
// (reliability.md P1 asks for SED and MDC-less packets that modern tools
// no longer write).

import (
	"bytes"
	"crypto/aes"
	"crypto/rand"
	"crypto/sha1"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

var testPassphrase = []byte("correct horse battery staple")

// testLimit is the plaintext cap of most tests.
const testLimit = 1 << 20

type testKey struct {
	gen    *GeneratedKey
	entity *openpgp.Entity // unlocked secret key
}

var testKeys sync.Map // Profile -> *testKey

// keyFor returns a shared, unlocked key of profile p for
// "<profile>@example.org"; tests must not change it.
func keyFor(t testing.TB, p Profile) *testKey {
	t.Helper()
	if k, ok := testKeys.Load(p); ok {
		return k.(*testKey)
	}
	gen, err := Generate(GenerateOptions{Address: string(p) + "@example.org", Profile: p, Passphrase: testPassphrase,
		Now: func() time.Time { return time.Now().Add(-time.Hour) }})
	if err != nil {
		t.Fatalf("Generate %s: %v", p, err)
	}
	k := &testKey{gen: gen, entity: unlock(t, gen.Secret)}
	got, _ := testKeys.LoadOrStore(p, k)
	return got.(*testKey)
}

// unlock reads one secret key and unlocks it with testPassphrase.
func unlock(t testing.TB, secret []byte) *openpgp.Entity {
	t.Helper()
	keys, err := ReadKeys(secret)
	if err != nil || len(keys) != 1 {
		t.Fatalf("ReadKeys: %d keys, %v", len(keys), err)
	}
	if err := Unlock(keys[0], testPassphrase); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	return keys[0]
}

// publicCert reads the public key of k as a sender would.
func publicCert(t testing.TB, k *testKey) *openpgp.Entity {
	t.Helper()
	keys, err := ReadKeys(k.gen.Public)
	if err != nil || len(keys) != 1 {
		t.Fatalf("ReadKeys(public): %d keys, %v", len(keys), err)
	}
	return keys[0]
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// literal is a binary literal data packet holding data.
func literal(t testing.TB, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := packet.SerializeLiteral(nopCloser{&buf}, true, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// compressed wraps inner packets in a ZLIB compressed data packet.
func compressed(t testing.TB, inner []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := packet.SerializeCompressed(nopCloser{&buf}, packet.CompressionZLIB, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(inner); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// form is the shape of a hand-built encrypted data packet.
type form int

const (
	formSEIPDv1 form = iota // tag 18 v1 with MDC (RFC 9580 §5.13.1)
	formNoMDC               // tag 18 v1 whose MDC is cut off (P1b)
	formSED                 // tag 9, no integrity protection (P1a)
)

// craft encrypts the packet stream inner to to's encryption subkey: a v3
// PKESK and one encrypted data packet of the given form, AES-256.
func craft(t testing.TB, to *openpgp.Entity, inner []byte, f form) []byte {
	t.Helper()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	enc, ok := to.EncryptionKey(time.Now())
	if !ok {
		t.Fatal("recipient has no encryption key")
	}
	var out bytes.Buffer
	if err := packet.SerializeEncryptedKeyAEAD(&out, enc.PublicKey, packet.CipherAES256, false, key, nil); err != nil {
		t.Fatal(err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	iv := make([]byte, block.BlockSize())
	_, _ = rand.Read(iv)
	var body []byte
	tag := byte(18)
	switch f {
	case formSED:
		// RFC 4880 §5.7: OpenPGP CFB with the resynchronisation step.
		tag = 9
		s, prefix := packet.NewOCFBEncrypter(block, iv, packet.OCFBResync)
		ct := make([]byte, len(inner))
		s.XORKeyStream(ct, inner)
		body = append(prefix, ct...)
	default:
		s, prefix := packet.NewOCFBEncrypter(block, iv, packet.OCFBNoResync)
		data := append([]byte{}, inner...)
		if f == formSEIPDv1 {
			// RFC 9580 §5.13.1: SHA-1 over prefix, data and the MDC header.
			h := sha1.New()
			h.Write(iv)
			h.Write(iv[len(iv)-2:])
			h.Write(inner)
			h.Write([]byte{0xd3, 0x14})
			data = append(append(data, 0xd3, 0x14), h.Sum(nil)...)
		}
		ct := make([]byte, len(data))
		s.XORKeyStream(ct, data)
		body = append(append([]byte{1}, prefix...), ct...)
	}
	out.Write(newPacket(tag, body))
	return out.Bytes()
}

// newPacket is an OpenPGP packet in the new format with a fixed length
// (RFC 9580 §4.2.1).
func newPacket(tag byte, body []byte) []byte {
	h := []byte{0xc0 | tag}
	switch n := len(body); {
	case n < 192:
		h = append(h, byte(n))
	case n < 8384:
		n -= 192
		h = append(h, byte(n>>8)+192, byte(n))
	default:
		h = append(h, 0xff, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(h, body...)
}

// packets splits a binary packet stream into its packets, raw.
func packets(t testing.TB, b []byte) [][]byte {
	t.Helper()
	var out [][]byte
	r := packet.NewOpaqueReader(bytes.NewReader(b))
	for {
		op, err := r.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := op.Serialize(&buf); err != nil {
			t.Fatal(err)
		}
		out = append(out, buf.Bytes())
	}
}

// signedPackets returns the packets of a message signed by signer:
// one-pass signature, literal data, signature.
func signedPackets(t testing.TB, signer *openpgp.Entity, data []byte) (ops, lit, sig []byte) {
	t.Helper()
	var buf bytes.Buffer
	w, err := openpgp.Sign(&buf, signer, &openpgp.FileHints{IsBinary: true}, &packet.Config{DefaultCompressionAlgo: packet.CompressionNone})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	ps := packets(t, buf.Bytes())
	if len(ps) != 3 {
		t.Fatalf("signed message has %d packets, want 3", len(ps))
	}
	return ps[0], ps[1], ps[2]
}

func decryptWith(message []byte, keys ...*openpgp.Entity) (*Result, error) {
	return Decrypt(message, keys, DecryptOptions{MaxPlaintext: testLimit})
}

func cat(parts ...[]byte) []byte {
	return bytes.Join(parts, nil)
}
