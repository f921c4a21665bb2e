package pgp

import (
	"bytes"
	"errors"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

var plaintext = []byte("Content-Type: text/plain; charset=utf-8\r\n\r\nGrüße, this is the inner MIME entity.\r\nLine two\n\x00binary\xff\r\n")

func TestEncryptRoundTrip(t *testing.T) {
	for _, kind := range []keyKind{kindCv25519, kindX25519, kindRSA3072} {
		t.Run(string(kind), func(t *testing.T) {
			key := testKey(t, kind)
			out := encryptTo(t, plaintext, EncryptOptions{}, certOf(t, key))
			info := inspect(t, out, key)
			if !bytes.Equal(info.plaintext, plaintext) {
				t.Fatalf("decrypted %q, want %q", info.plaintext, plaintext)
			}
			if info.seipdVersion != 1 {
				t.Errorf("SEIPD version %d, want 1 (MDC) for a key without SEIPDv2", info.seipdVersion)
			}
			if info.cipher != packet.CipherAES256 {
				t.Errorf("cipher %v, want AES-256", info.cipher)
			}
			if !info.literalBinary {
				t.Error("literal data is not binary; the MIME entity must travel untouched")
			}
			if len(info.pkeskVersions) != 1 || info.pkeskVersions[0] != 3 {
				t.Errorf("PKESK versions %v, want [3]", info.pkeskVersions)
			}
		})
	}
}

var crcLine = regexp.MustCompile(`(?m)^=([A-Za-z0-9+/]{4})\n-----END PGP MESSAGE-----\n\z`)

func TestEncryptArmor(t *testing.T) {
	v4, v6 := certOf(t, testKey(t, kindCv25519)), certOf(t, testKey(t, kindV6))
	tests := []struct {
		name         string
		to           []*Cert
		wantChecksum bool
	}{
		// GnuPG 2.2 needs the CRC-24 (T7071, see armor.go).
		{"v4", []*Cert{v4}, true},
		{"v4 and v6", []*Cert{v6, v4}, true},
		// RFC 9580 §6.1: SHOULD NOT be generated.
		{"v6 only", []*Cert{v6}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Lengths 0, 1, 2 mod 3 of the binary message all occur.
			for n := range 3 {
				out := string(encryptTo(t, plaintext[:n], EncryptOptions{}, tt.to...))
				if !strings.HasPrefix(out, "-----BEGIN PGP MESSAGE-----\n\n") {
					t.Errorf("output starts %q", out[:min(len(out), 40)])
				}
				if !strings.HasSuffix(out, "\n-----END PGP MESSAGE-----\n") {
					t.Errorf("output ends %q", out[max(0, len(out)-40):])
				}
				if got := crcLine.MatchString(out); got != tt.wantChecksum {
					t.Errorf("CRC-24 line present: %v, want %v", got, tt.wantChecksum)
				}
				if strings.Contains(out, "\r") {
					t.Error("Encrypt output has CR")
				}
			}
		})
	}
}

func TestEncryptAEADOnlyWhenAllRecipientsSupportIt(t *testing.T) {
	aead, aead2 := testKey(t, kindAEAD), newKey(t, kindAEAD, time.Now().Add(-time.Hour))
	v6, legacy := testKey(t, kindV6), testKey(t, kindCv25519)
	tests := []struct {
		name      string
		to        []*openpgp.Entity
		wantSEIPD int
		wantPKESK int
	}{
		{"one AEAD recipient", []*openpgp.Entity{aead}, 2, 6},
		{"two AEAD recipients", []*openpgp.Entity{aead, aead2}, 2, 6},
		{"v6 recipient", []*openpgp.Entity{v6}, 2, 6},
		{"AEAD and legacy", []*openpgp.Entity{aead, legacy}, 1, 3},
		{"legacy and AEAD", []*openpgp.Entity{legacy, aead}, 1, 3},
		{"v6 and legacy", []*openpgp.Entity{v6, legacy}, 1, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var to []*Cert
			for _, e := range tt.to {
				to = append(to, certOf(t, e))
			}
			out := encryptTo(t, plaintext, EncryptOptions{}, to...)
			for i, e := range tt.to {
				info := inspect(t, out, e)
				if !bytes.Equal(info.plaintext, plaintext) {
					t.Fatalf("recipient %d: wrong plaintext", i)
				}
				if info.seipdVersion != tt.wantSEIPD {
					t.Errorf("recipient %d: SEIPD v%d, want v%d", i, info.seipdVersion, tt.wantSEIPD)
				}
				if info.cipher != packet.CipherAES256 {
					t.Errorf("recipient %d: cipher %v, want AES-256", i, info.cipher)
				}
				if tt.wantSEIPD == 2 && info.aeadMode != packet.AEADModeOCB {
					t.Errorf("AEAD mode %v, want OCB", info.aeadMode)
				}
				for _, v := range info.pkeskVersions {
					if v != tt.wantPKESK {
						t.Errorf("PKESK versions %v, want all %d", info.pkeskVersions, tt.wantPKESK)
					}
				}
				if len(info.pkeskVersions) != len(tt.to) {
					t.Errorf("%d PKESKs for %d recipients", len(info.pkeskVersions), len(tt.to))
				}
			}
		})
	}
}

func TestEncryptUsesRemainingValidSubkey(t *testing.T) {
	// P4 cases 3 and 4: the newest encryption subkey is revoked or expired;
	// the message goes to the older valid one.
	created := time.Now().Add(-2 * time.Hour)
	for _, how := range []string{"revoked", "expired"} {
		t.Run(how, func(t *testing.T) {
			cfg := keyConfig(kindCv25519, created)
			e, err := openpgp.NewEntity("Two", "", "two@example.org", cfg)
			if err != nil {
				t.Fatal(err)
			}
			newer := keyConfig(kindCv25519, created.Add(time.Minute))
			if how == "expired" {
				newer.KeyLifetimeSecs = 60
			}
			if err := e.AddEncryptionSubkey(newer); err != nil {
				t.Fatal(err)
			}
			if how == "revoked" {
				if err := e.RevokeSubkey(&e.Subkeys[1], packet.KeyCompromised, "", newer); err != nil {
					t.Fatal(err)
				}
			}
			info := inspect(t, encryptTo(t, plaintext, EncryptOptions{}, certOf(t, e)), e)
			if want := e.Subkeys[0].PublicKey.KeyId; len(info.pkeskKeyIDs) != 1 || info.pkeskKeyIDs[0] != want {
				t.Errorf("PKESK key IDs %X, want [%X] (the older, valid subkey)", info.pkeskKeyIDs, want)
			}
		})
	}
}

func TestEncryptAES128OnlyRecipient(t *testing.T) {
	// go-crypto honours the recipients' cipher preferences (RFC 9580
	// §5.2.3.14): a key that lists only AES-128 gets AES-128. This pins that
	// behaviour so a change in go-crypto is noticed.
	cfg := keyConfig(kindCv25519, time.Now().Add(-time.Hour))
	cfg.DefaultCipher = packet.CipherAES128
	e, err := openpgp.NewEntity("Old", "", "old@example.org", cfg)
	if err != nil {
		t.Fatal(err)
	}
	info := inspect(t, encryptTo(t, plaintext, EncryptOptions{}, certOf(t, e)), e)
	if info.cipher != packet.CipherAES128 || info.seipdVersion != 1 {
		t.Errorf("got %v SEIPDv%d, want AES-128 SEIPDv1", info.cipher, info.seipdVersion)
	}
}

func TestEncryptDoesNotCompress(t *testing.T) {
	key := testKey(t, kindCv25519)
	zeros := make([]byte, 1<<20)
	out := encryptTo(t, zeros, EncryptOptions{}, certOf(t, key))
	// Base64 of 1 MiB is 1.4 MB; compressed zeros would be a few KB.
	if len(out) < len(zeros) {
		t.Fatalf("1 MiB of zeros became %d bytes: the message is compressed", len(out))
	}
	if info := inspect(t, out, key); !bytes.Equal(info.plaintext, zeros) {
		t.Fatal("wrong plaintext")
	}
}

func TestEncryptHonoursNow(t *testing.T) {
	created := time.Now().Add(-time.Hour)
	cfg := keyConfig(kindCv25519, created)
	cfg.KeyLifetimeSecs = 24 * 60 * 60
	e, err := openpgp.NewEntity("Day", "", "day@example.org", cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := certOf(t, e)
	at := func(d time.Duration) EncryptOptions {
		return EncryptOptions{Now: func() time.Time { return created.Add(d) }}
	}
	if _, err := Encrypt(discard{}, []*Cert{c}, at(2*time.Hour)); err != nil {
		t.Errorf("within the key's lifetime: %v", err)
	}
	_, err = Encrypt(discard{}, []*Cert{c}, at(48*time.Hour))
	wantUnusable(t, err, "expired on")
	_, err = EncryptMIME(discard{}, NewBoundary(), []*Cert{c}, at(48*time.Hour))
	wantUnusable(t, err, "expired on")
}

func TestEncryptRefusals(t *testing.T) {
	good := certOf(t, testKey(t, kindCv25519))
	if w, err := Encrypt(discard{}, nil, EncryptOptions{}); err == nil || w != nil {
		t.Errorf("Encrypt with no recipients: %v, %v; want a nil writer and an error", w, err)
	}
	if w, err := EncryptMIME(discard{}, NewBoundary(), nil, EncryptOptions{}); err == nil || w != nil {
		t.Errorf("EncryptMIME with no recipients: %v, %v; want a nil writer and an error", w, err)
	}
	if _, err := Encrypt(discard{}, []*Cert{good, {}}, EncryptOptions{}); err == nil {
		t.Error("Encrypt with an empty Cert succeeded")
	}
	sign := newKey(t, kindCv25519, time.Now())
	sign.Subkeys = nil
	var w recordingWriter
	_, err := Encrypt(&w, []*Cert{good, certOf(t, sign)}, EncryptOptions{})
	wantUnusable(t, err, "sign-only")
	if w.Len() != 0 {
		t.Errorf("a refused Encrypt wrote %d bytes", w.Len())
	}
}

func TestEncryptCloseSemantics(t *testing.T) {
	var w recordingWriter
	enc, err := Encrypt(&w, []*Cert{certOf(t, testKey(t, kindCv25519))}, EncryptOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := enc.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := enc.Close(); err != nil {
		t.Fatal(err)
	}
	if w.closed {
		t.Error("Close closed the destination writer")
	}
	if !strings.HasSuffix(w.String(), "-----END PGP MESSAGE-----\n") {
		t.Error("Close did not finish the armor")
	}
	if err := enc.Close(); err == nil {
		t.Error("second Close succeeded")
	}
	if _, err := enc.Write([]byte("y")); err == nil {
		t.Error("Write after Close succeeded")
	}
}

func TestEncryptStreams(t *testing.T) {
	// Output must leave while input arrives: after 8 MiB in, most of it is
	// out, long before Close. (Memory independent of message size.)
	var w recordingWriter
	enc, err := Encrypt(&w, []*Cert{certOf(t, testKey(t, kindCv25519))}, EncryptOptions{})
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	const total = 8 << 20
	for written := 0; written < total; written += len(chunk) {
		if _, err := enc.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	if w.Len() < total {
		t.Fatalf("only %d armored bytes out after %d plaintext bytes in: not streaming", w.Len(), total)
	}
	if err := enc.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestEncryptWriteError(t *testing.T) {
	boom := errors.New("disk full")
	enc, err := Encrypt(failingWriter{boom}, []*Cert{certOf(t, testKey(t, kindCv25519))}, EncryptOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, werr := enc.Write(make([]byte, 1<<20))
	cerr := enc.Close()
	if !errors.Is(werr, boom) && !errors.Is(cerr, boom) {
		t.Fatalf("write error lost: Write %v, Close %v", werr, cerr)
	}
}

// recordingWriter is a bytes.Buffer that remembers whether it was closed.
type recordingWriter struct {
	bytes.Buffer
	closed bool
}

func (r *recordingWriter) Close() error { r.closed = true; return nil }

type failingWriter struct{ err error }

func (f failingWriter) Write([]byte) (int, error) { return 0, f.err }

var _ io.WriteCloser = (*recordingWriter)(nil)
