package pgp

// Interop: keys made by gpg, sq and rnp are read with ReadCerts, messages
// are encrypted with Encrypt and EncryptMIME, and each tool must decrypt
// them to exactly the plaintext.

import (
	"bytes"
	"testing"
)

// decrypter is one recipient's way of decrypting an armored message.
type decrypter func(t testing.TB, armored []byte) []byte

// checkDecrypts encrypts plaintext to cert with Encrypt and with
// EncryptMIME and checks that decrypt returns the plaintext for both.
func checkDecrypts(t *testing.T, cert *Cert, decrypt decrypter) {
	t.Helper()
	if got := decrypt(t, encryptTo(t, plaintext, EncryptOptions{}, cert)); !bytes.Equal(got, plaintext) {
		t.Errorf("Encrypt: decrypted %q, want %q", got, plaintext)
	}
	boundary := NewBoundary()
	armored := mimeParts(t, boundary, encryptMIMETo(t, boundary, plaintext, cert))
	if got := decrypt(t, armored); !bytes.Equal(got, plaintext) {
		t.Errorf("EncryptMIME: decrypted %q, want %q", got, plaintext)
	}
}

func TestInteropGPG(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, algo, usage string
		addEncryptionKey  string // for explicit algorithms gpg makes no subkey
	}{
		{"default", "default", "default", ""},               // RSA-3072 + RSA-3072 in GnuPG 2.2
		{"future-default", "future-default", "default", ""}, // Ed25519 + Cv25519
		{"rsa3072", "rsa3072", "sign,cert", "rsa3072"},
		{"rsa4096", "rsa4096", "sign,cert", "rsa4096"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			g := newGPG(t)
			fpr := g.genKey(t, "GPG <gpg-"+tt.name+"@example.org>", tt.algo, tt.usage, "never")
			if tt.addEncryptionKey != "" {
				g.run(t, "--quick-add-key", fpr, tt.addEncryptionKey, "encr", "never")
			}
			cert := readOne(t, g.export(t, fpr))
			if cert.Fingerprint() != fpr {
				t.Errorf("Fingerprint %s, gpg says %s", cert.Fingerprint(), fpr)
			}
			if a := cert.Addresses(); len(a) != 1 || a[0] != "gpg-"+tt.name+"@example.org" {
				t.Errorf("Addresses %q", a)
			}
			checkDecrypts(t, cert, g.decrypt)
		})
	}
}

func TestInteropSQ(t *testing.T) {
	t.Parallel()
	for _, suite := range []string{"cv25519", "rsa3k"} {
		t.Run(suite, func(t *testing.T) {
			t.Parallel()
			k := newSQ(t, "sq-"+suite+"@example.org", suite)
			cert := readOne(t, readFile(t, k.cert))
			if a := cert.Addresses(); len(a) != 1 || a[0] != "sq-"+suite+"@example.org" {
				t.Errorf("Addresses %q", a)
			}
			checkDecrypts(t, cert, k.decrypt)
		})
	}
}

func TestInteropRNP(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, expertChoice string }{
		{"default-rsa2048", ""},
		{"eddsa-x25519", "22"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newRNP(t, "rnp-"+tt.name+"@example.org", tt.expertChoice)
			cert := readOne(t, h.export(t))
			if a := cert.Addresses(); len(a) != 1 || a[0] != "rnp-"+tt.name+"@example.org" {
				t.Errorf("Addresses %q", a)
			}
			checkDecrypts(t, cert, h.decrypt)
		})
	}
}

func TestInteropOneMessageThreeRecipients(t *testing.T) {
	t.Parallel()
	g := newGPG(t)
	gpgCert := readOne(t, g.export(t, g.genKey(t, "GPG <gpg@example.org>", "future-default", "default", "never")))
	k := newSQ(t, "sq@example.org", "cv25519")
	sqCert := readOne(t, readFile(t, k.cert))
	h := newRNP(t, "rnp@example.org", "")
	rnpCert := readOne(t, h.export(t))

	boundary := NewBoundary()
	armored := mimeParts(t, boundary, encryptMIMETo(t, boundary, plaintext, gpgCert, sqCert, rnpCert))
	for name, decrypt := range map[string]decrypter{"gpg": g.decrypt, "sq": k.decrypt, "rnp": h.decrypt} {
		if got := decrypt(t, armored); !bytes.Equal(got, plaintext) {
			t.Errorf("%s decrypted %q, want %q", name, got, plaintext)
		}
	}
}

// TestGnuPGT7071ArmorPadding pins the GnuPG 2.2 armor bug (dev.gnupg.org
// T7071): without a CRC-24 line, gpg fails on armor whose base64 ends
// without '=' padding, i.e. one message length in three.
func TestGnuPGT7071ArmorPadding(t *testing.T) {
	t.Parallel()
	g := newGPG(t)
	cert := readOne(t, g.export(t, g.genKey(t, "GPG <t7071@example.org>", "future-default", "default", "never")))
	for n := range 6 {
		if got := g.decrypt(t, encryptTo(t, plaintext[:n], EncryptOptions{}, cert)); !bytes.Equal(got, plaintext[:n]) {
			t.Errorf("length %d: gpg decrypted %q", n, got)
		}
	}
}
