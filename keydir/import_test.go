package keydir

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"github.com/sealgate/sealgate/pgp"
)

// genConfig is a fast key generation config (Ed25519 + X25519 subkey),
// created an hour ago so that no check sees a key from the future.
func genConfig() *packet.Config {
	created := time.Now().Add(-time.Hour)
	return &packet.Config{
		Algorithm:   packet.PubKeyAlgoEdDSA,
		Curve:       packet.Curve25519,
		DefaultHash: crypto.SHA256,
		Time:        func() time.Time { return created },
	}
}

func newEntity(t *testing.T, name, email string, cfg *packet.Config) *openpgp.Entity {
	t.Helper()
	e, err := openpgp.NewEntity(name, "", email, cfg)
	if err != nil {
		t.Fatalf("generate key for %q: %v", email, err)
	}
	return e
}

func fpr(e *openpgp.Entity) string {
	return strings.ToUpper(hex.EncodeToString(e.PrimaryKey.Fingerprint))
}

func publicKey(t *testing.T, e *openpgp.Entity) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := e.Serialize(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func secretKey(t *testing.T, e *openpgp.Entity) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := e.SerializePrivate(&buf, nil); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func armored(t *testing.T, blockType string, b []byte) []byte {
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

func newImportStore(t *testing.T) Store {
	return openTestSQLite(t, filepath.Join(t.TempDir(), "sealgate.db"))
}

func assertEmpty(t *testing.T, s Store) {
	t.Helper()
	keys, err := s.List(t.Context())
	if err != nil || len(keys) != 0 {
		t.Errorf("store holds %v (err %v); want nothing stored", fingerprints(keys), err)
	}
}

func TestImportPGPArmored(t *testing.T) {
	s := newImportStore(t)
	cfg := genConfig()
	alice := newEntity(t, "Alice", "Alice@Bücher.Example", cfg)
	// A second user ID with the same address in another form is indexed once.
	if err := alice.AddUserId("Alice", "work", "ALICE@xn--bcher-kva.example", cfg); err != nil {
		t.Fatal(err)
	}
	if err := alice.AddUserId("Alice", "", "alice@example.org", cfg); err != nil {
		t.Fatal(err)
	}
	res, err := ImportPGP(t.Context(), s, armored(t, openpgp.PublicKeyType, publicKey(t, alice)), time.Now())
	if err != nil {
		t.Fatalf("ImportPGP: %v", err)
	}
	want := []string{"alice@example.org", "alice@xn--bcher-kva.example"}
	if len(res) != 1 || res[0].Err != nil || res[0].Fingerprint != fpr(alice) || !slices.Equal(res[0].Addresses, want) {
		t.Fatalf("results = %+v; want one stored key %s with %q", res, fpr(alice), want)
	}
	keys, err := s.Lookup(t.Context(), "alice@bücher.example")
	if err != nil || len(keys) != 1 {
		t.Fatalf("Lookup = %v, %v; want the imported key", fingerprints(keys), err)
	}
	k := keys[0]
	if k.Kind != KindPGP || !slices.Equal(k.Addresses, want) {
		t.Errorf("stored key kind %s addresses %q; want pgp %q", k.Kind, k.Addresses, want)
	}
	// What is stored is the public certificate, and it parses back.
	certs, err := pgp.ReadCerts(bytes.NewReader(k.Data), MaxImportBytes)
	if err != nil || len(certs) != 1 || certs[0].Fingerprint() != fpr(alice) {
		t.Errorf("stored data does not read back as the certificate: %v", err)
	}
}

func TestImportPGPRejectsUnusableKeysOnly(t *testing.T) {
	s := newImportStore(t)
	now := time.Now()
	good := newEntity(t, "Good", "good@example.org", genConfig())

	weakCfg := genConfig()
	weakCfg.Algorithm, weakCfg.RSABits = packet.PubKeyAlgoRSA, 1024
	weak := newEntity(t, "Weak", "weak@example.org", weakCfg)

	expCfg := genConfig()
	expCfg.KeyLifetimeSecs = 24 * 3600
	expired := newEntity(t, "Expired", "expired@example.org", expCfg)

	noAddr := newEntity(t, "No Address", "", genConfig())

	var input []byte
	for _, e := range []*openpgp.Entity{weak, good, expired, noAddr} {
		input = append(input, publicKey(t, e)...)
	}
	res, err := ImportPGP(t.Context(), s, input, now.Add(72*time.Hour)) // the expired key is past its lifetime
	if err != nil {
		t.Fatalf("ImportPGP: %v", err)
	}
	if len(res) != 4 {
		t.Fatalf("got %d results; want 4: %+v", len(res), res)
	}
	byFpr := map[string]ImportResult{}
	for _, r := range res {
		byFpr[r.Fingerprint] = r
	}
	if r := byFpr[fpr(good)]; r.Err != nil || !slices.Equal(r.Addresses, []string{"good@example.org"}) {
		t.Errorf("good key: %+v; want stored", r)
	}
	for _, c := range []struct {
		e    *openpgp.Entity
		want string
	}{{weak, "RSA"}, {expired, "expired"}, {noAddr, "no valid e-mail address"}} {
		r := byFpr[fpr(c.e)]
		if r.Err == nil || !strings.HasPrefix(r.Err.Error(), "keydir: key "+fpr(c.e)) || !strings.Contains(r.Err.Error(), c.want) {
			t.Errorf("key %s: Err = %v; want a message naming it and containing %q", fpr(c.e), r.Err, c.want)
		}
	}
	keys, err := s.List(t.Context())
	if err != nil || !slices.Equal(fingerprints(keys), []string{fpr(good)}) {
		t.Errorf("stored %v, %v; want the good key only", fingerprints(keys), err)
	}
}

func TestImportPGPRefusesSecretKeys(t *testing.T) {
	pub := newEntity(t, "Public", "public@example.org", genConfig())
	sec := newEntity(t, "Secret", "secret@example.org", genConfig())
	inputs := map[string][]byte{
		"binary secret key":  secretKey(t, sec),
		"armored secret key": armored(t, openpgp.PrivateKeyType, secretKey(t, sec)),
		"public then secret": append(publicKey(t, pub), secretKey(t, sec)...),
		"two armor blocks": append(armored(t, openpgp.PublicKeyType, publicKey(t, pub)),
			armored(t, openpgp.PrivateKeyType, secretKey(t, sec))...),
	}
	for name, in := range inputs {
		t.Run(name, func(t *testing.T) {
			s := newImportStore(t)
			res, err := ImportPGP(t.Context(), s, in, time.Now())
			if !errors.Is(err, pgp.ErrSecretKey) || !strings.HasPrefix(err.Error(), "keydir: ") {
				t.Errorf("ImportPGP: results %+v, err = %v; want a keydir error wrapping pgp.ErrSecretKey", res, err)
			}
			assertEmpty(t, s)
		})
	}
}

func TestImportPGPRefusesGarbage(t *testing.T) {
	inputs := map[string][]byte{
		"empty":           nil,
		"text":            []byte("this is not a key\n"),
		"broken armor":    []byte("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n!!!!\n-----END PGP PUBLIC KEY BLOCK-----\n"),
		"random bytes":    {0x99, 0x01, 0x0d, 0xff, 0x00, 0x13, 0x37},
		"too large input": make([]byte, MaxImportBytes+1),
	}
	for name, in := range inputs {
		t.Run(name, func(t *testing.T) {
			s := newImportStore(t)
			res, err := ImportPGP(t.Context(), s, in, time.Now())
			if err == nil || res != nil || !strings.HasPrefix(err.Error(), "keydir: ") {
				t.Errorf("ImportPGP = %+v, %v; want nil and a keydir error", res, err)
			}
			assertEmpty(t, s)
		})
	}
}

func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestImportFile(t *testing.T) {
	s := newImportStore(t)
	bob := newEntity(t, "Bob", "bob@example.org", genConfig())
	path := writeFile(t, "bob.asc", armored(t, openpgp.PublicKeyType, publicKey(t, bob)))
	res, err := ImportFile(t.Context(), s, path, time.Now())
	if err != nil || len(res) != 1 || res[0].Err != nil {
		t.Fatalf("ImportFile = %+v, %v; want one stored key", res, err)
	}
	if _, err := s.Get(t.Context(), fpr(bob)); err != nil {
		t.Errorf("Get after ImportFile: %v", err)
	}
	if _, err := ImportFile(t.Context(), s, filepath.Join(t.TempDir(), "missing.asc"), time.Now()); err == nil {
		t.Error("ImportFile of a missing file: want an error")
	}
}

func TestImportFileTooLarge(t *testing.T) {
	s := newImportStore(t)
	path := filepath.Join(t.TempDir(), "huge.asc")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(f.Truncate(MaxImportBytes+1), f.Close()); err != nil {
		t.Fatal(err)
	}
	if _, err := ImportFile(t.Context(), s, path, time.Now()); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("ImportFile of an oversized file: err = %v; want a size error", err)
	}
}

func TestDetectFormat(t *testing.T) {
	e := newEntity(t, "Carol", "carol@example.org", genConfig())
	for name, c := range map[string]struct {
		data []byte
		want inputFormat
	}{
		"binary OpenPGP":  {publicKey(t, e), formatPGP},
		"armored OpenPGP": {armored(t, openpgp.PublicKeyType, publicKey(t, e)), formatPGP},
		"DER":             {selfSignedDER(t), formatX509},
		"PEM":             {pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}), formatX509},
		"garbage":         {[]byte("0 not DER"), formatPGP},
	} {
		if got := detectFormat(c.data); got != c.want {
			t.Errorf("detectFormat(%s) = %v; want %v", name, got, c.want)
		}
	}
}

func selfSignedDER(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:   big.NewInt(1),
		Subject:        pkix.Name{CommonName: "Dave"},
		EmailAddresses: []string{"dave@example.org"},
		NotBefore:      time.Now().Add(-time.Hour),
		NotAfter:       time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}
