package pgp

// Keys made by real gpg that the gateway must refuse: secret key exports
// (ReadCerts) and certificates it cannot encrypt to (CheckEncryption).

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// fakedTime makes gpg believe it is 2024-01-01 00:00:00 UTC.
var fakedTime = []string{"--faked-system-time", "20240101T000000"}

func TestGPGSecretKeyImportsRefused(t *testing.T) {
	t.Parallel()
	g := newGPG(t)
	a := g.genKey(t, "A <a@example.org>", "future-default", "default", "never")
	b := g.genKey(t, "B <b@example.org>", "future-default", "default", "never")
	pubA, pubABinary := g.export(t, a), g.run(t, "--export", a)
	secB := g.run(t, "--armor", "--export-secret-keys", b)
	tests := map[string][]byte{
		"armored secret key":           secB,
		"binary secret key":            g.run(t, "--export-secret-keys", b),
		"secret subkeys only":          g.run(t, "--armor", "--export-secret-subkeys", b),
		"public and secret, armored":   concat(pubA, secB),
		"secret and public, armored":   concat(secB, []byte("\n"), pubA),
		"public and secret, binary":    concat(pubABinary, g.run(t, "--export-secret-keys", b)),
		"both secret keys in one file": g.run(t, "--armor", "--export-secret-keys", a, b),
	}
	for name, input := range tests {
		t.Run(name, func(t *testing.T) {
			certs, err := ReadCerts(bytes.NewReader(input), 1<<20)
			if !errors.Is(err, ErrSecretKey) {
				t.Fatalf("got %v, want ErrSecretKey", err)
			}
			if certs != nil {
				t.Fatalf("got %d certs along with ErrSecretKey", len(certs))
			}
		})
	}
	// The same public key alone is fine, and two public keys in one export.
	if certs, err := ReadCerts(bytes.NewReader(g.run(t, "--armor", "--export", a, b)), 1<<20); err != nil || len(certs) != 2 {
		t.Fatalf("public export of two keys: %d certs, %v", len(certs), err)
	}
}

func TestGPGUnusableKeysRefused(t *testing.T) {
	t.Parallel()
	g := newGPG(t)
	tests := []struct {
		name   string
		make   func(t *testing.T) string // returns the fingerprint
		reason string
	}{
		{"expired", func(t *testing.T) string {
			return g.genKey(t, "E <expired@example.org>", "future-default", "default", "1d", fakedTime...)
		}, "expired on 2024-01-02"},
		{"revoked", func(t *testing.T) string {
			fpr := g.genKey(t, "R <revoked@example.org>", "future-default", "default", "never")
			g.run(t, "--import", revocationCert(t, g, fpr))
			return fpr
		}, "revoked"},
		{"sign-only", func(t *testing.T) string {
			return g.genKey(t, "S <sign@example.org>", "ed25519", "sign", "never")
		}, "no encryption subkey (sign-only key)"},
		{"RSA-1024", func(t *testing.T) string {
			fpr := g.genKey(t, "W <rsa1024@example.org>", "rsa1024", "sign,cert", "never")
			g.run(t, "--quick-add-key", fpr, "rsa1024", "encr", "never")
			return fpr
		}, "RSA key of 1024 bits; at least 2048 required"},
		{"DSA and ElGamal", func(t *testing.T) string {
			fpr := g.genKey(t, "D <dsa@example.org>", "dsa2048", "sign,cert", "never")
			g.run(t, "--quick-add-key", fpr, "elg2048", "encr", "never")
			return fpr
		}, "DSA/ElGamal keys are not accepted"},
		{"encryption subkey expired", func(t *testing.T) string {
			fpr := g.genKey(t, "X <subexpired@example.org>", "ed25519", "sign,cert", "never", fakedTime...)
			g.run(t, append(fakedTime, "--quick-add-key", fpr, "cv25519", "encr", "1d")...)
			return fpr
		}, "no usable encryption subkey: subkey"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fpr := tt.make(t)
			certs, err := ReadCerts(bytes.NewReader(g.export(t, fpr)), 1<<20)
			if err != nil || len(certs) != 1 {
				t.Fatalf("ReadCerts: %d certs, %v (an unusable key must still parse)", len(certs), err)
			}
			// time.Now() after generation: gpg stamps keys with the current second.
			err = certs[0].CheckEncryption(time.Now())
			wantUnusable(t, err, tt.reason)
			if !strings.Contains(err.Error(), fpr) {
				t.Errorf("error %q does not name the key %s", err, fpr)
			}
			t.Logf("%s: %v", tt.name, err)
			if _, err := Encrypt(discard{}, certs, EncryptOptions{}); err == nil {
				t.Error("Encrypt accepted the key")
			}
		})
	}
}

// revocationCert returns the path of gpg's pre-made revocation certificate
// for fpr, made importable (gpg prefixes the armor line with ':').
func revocationCert(t *testing.T, g *gpgHome, fpr string) string {
	t.Helper()
	rev := readFile(t, filepath.Join(g.dir, "openpgp-revocs.d", fpr+".rev"))
	rev = bytes.Replace(rev, []byte(":-----BEGIN PGP PUBLIC KEY BLOCK-----"), []byte("-----BEGIN PGP PUBLIC KEY BLOCK-----"), 1)
	path := filepath.Join(g.dir, "revoke.asc")
	if err := os.WriteFile(path, rev, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestGPGRevokedUserIDNotListed(t *testing.T) {
	t.Parallel()
	g := newGPG(t)
	fpr := g.genKey(t, "Keep <keep@example.org>", "future-default", "default", "never")
	g.run(t, "--quick-add-uid", fpr, "Old <old@example.org>")
	g.run(t, "--quick-add-uid", fpr, "Other <other@example.org>")
	g.run(t, "--quick-revoke-uid", fpr, "Old <old@example.org>")
	c := readOne(t, g.export(t, fpr))
	if got, want := c.Addresses(), []string{"keep@example.org", "other@example.org"}; !slices.Equal(got, want) {
		t.Fatalf("Addresses() = %q, want %q", got, want)
	}
}

func TestSQStorageOnlyKeyRefused(t *testing.T) {
	t.Parallel()
	// RFC 9580 §5.2.3.29: mail needs the communications-encryption flag
	// (0x04); a subkey flagged for storage only (0x08) is not for us.
	dir := shortTempDir(t, "sg-sq")
	key, cert := filepath.Join(dir, "key.pgp"), filepath.Join(dir, "cert.pgp")
	mustRun(t, "sq", "key", "generate", "--userid", "<storage@example.org>", "--can-encrypt", "storage", "--export", key)
	mustRun(t, "sq", "key", "extract-cert", "--output", cert, key)
	certs, err := ReadCerts(bytes.NewReader(readFile(t, cert)), 1<<20)
	if err != nil || len(certs) != 1 {
		t.Fatalf("ReadCerts: %d certs, %v", len(certs), err)
	}
	wantUnusable(t, certs[0].CheckEncryption(time.Now()), "not flagged for communications encryption")
}
