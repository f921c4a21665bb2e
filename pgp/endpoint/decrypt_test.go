package endpoint

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"github.com/sealgate/sealgate/pgp"
)

var plaintext = []byte("Content-Type: text/plain; charset=utf-8\r\n\r\nPrivileged and confidential: the settlement is 1.2M.\r\n")

// gatewayEncrypt encrypts data to k's public key with the gateway's own
// encryptor (pgp.Encrypt) and returns the armored message.
func gatewayEncrypt(t testing.TB, data []byte, keys ...*testKey) []byte {
	t.Helper()
	var to []*pgp.Cert
	for _, k := range keys {
		certs, err := pgp.ReadCerts(bytes.NewReader(k.gen.Public), 1<<20)
		if err != nil {
			t.Fatalf("pgp.ReadCerts: %v", err)
		}
		to = append(to, certs...)
	}
	var out bytes.Buffer
	w, err := pgp.Encrypt(&out, to, pgp.EncryptOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// binary dearmors an armored message.
func binary(t testing.TB, armored []byte) []byte {
	t.Helper()
	b, err := dearmorMessage(armored)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// encryptedDataVersion is the version of the message's SEIPD packet.
func encryptedDataVersion(t testing.TB, bin []byte) int {
	t.Helper()
	r := packet.NewReader(bytes.NewReader(bin))
	for {
		p, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		if se, ok := p.(*packet.SymmetricallyEncrypted); ok {
			return se.Version
		}
	}
}

func TestDecryptGatewayOutput(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		profile Profile
		seipd   int // the version the gateway picks for this key
	}{{ProfileDefault, 1}, {ProfileRFC9580, 2}, {ProfilePQ, 2}} {
		t.Run(string(tt.profile), func(t *testing.T) {
			t.Parallel()
			k := keyFor(t, tt.profile)
			armored := gatewayEncrypt(t, plaintext, k)
			if v := encryptedDataVersion(t, binary(t, armored)); v != tt.seipd {
				t.Errorf("gateway wrote SEIPDv%d, want v%d", v, tt.seipd)
			}
			for name, msg := range map[string][]byte{"armored": armored, "binary": binary(t, armored)} {
				res, err := decryptWith(msg, k.entity)
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				if !bytes.Equal(res.Plaintext, plaintext) || res.Signature != SignatureNone || res.Text {
					t.Errorf("%s: got %q, signature %s, text %v", name, res.Plaintext, res.Signature, res.Text)
				}
			}
		})
	}
}

func TestDecryptWrongKey(t *testing.T) {
	t.Parallel()
	armored := gatewayEncrypt(t, plaintext, keyFor(t, ProfileDefault))
	_, err := decryptWith(armored, keyFor(t, ProfileRFC9580).entity)
	if !errors.Is(err, ErrDecrypt) {
		t.Fatalf("err = %v, want ErrDecrypt", err)
	}
	// A locked key is no key.
	locked, err := ReadKeys(keyFor(t, ProfileDefault).gen.Secret)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decryptWith(armored, locked...); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("locked key: err = %v, want ErrDecrypt", err)
	}
}

// signedEncrypted is what Thunderbird and gpg --sign --encrypt write: one
// OpenPGP message holding a one-pass signed literal.
func signedEncrypted(t testing.TB, signer *openpgp.Entity, to *openpgp.Entity, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := openpgp.Encrypt(&buf, []*openpgp.Entity{to}, signer, &openpgp.FileHints{IsBinary: true}, nil)
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

func TestDecryptSignatures(t *testing.T) {
	t.Parallel()
	me := keyFor(t, ProfileDefault)
	sender := keyFor(t, ProfileRFC9580)
	senderPublic := publicCert(t, sender)
	ops, lit, sig := signedPackets(t, sender.entity, plaintext)
	forged := literal(t, []byte("Content-Type: text/plain\r\n\r\nPay the attacker.\r\n"))

	tests := []struct {
		name string
		msg  []byte
		keys []*openpgp.Entity
		want SignatureStatus
	}{
		{"good", signedEncrypted(t, sender.entity, publicCert(t, me), plaintext), []*openpgp.Entity{me.entity, senderPublic}, SignatureGood},
		{"unknown-key", signedEncrypted(t, sender.entity, publicCert(t, me), plaintext), []*openpgp.Entity{me.entity}, SignatureUnknownKey},
		{"bad: literal replaced under the signature", craft(t, me.entity, cat(ops, forged, sig), formSEIPDv1), []*openpgp.Entity{me.entity, senderPublic}, SignatureBad},
		{"good: compressed signed message", craft(t, me.entity, compressed(t, cat(ops, lit, sig)), formSEIPDv1), []*openpgp.Entity{me.entity, senderPublic}, SignatureGood},
		{"none", craft(t, me.entity, lit, formSEIPDv1), []*openpgp.Entity{me.entity, senderPublic}, SignatureNone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := decryptWith(tt.msg, tt.keys...)
			if err != nil {
				t.Fatal(err)
			}
			if res.Signature != tt.want {
				t.Errorf("signature %s, want %s", res.Signature, tt.want)
			}
			if (tt.want == SignatureGood || tt.want == SignatureBad) && Fingerprint(res.Signer) != sender.gen.Fingerprint {
				t.Errorf("signer %s, want %s", Fingerprint(res.Signer), sender.gen.Fingerprint)
			}
		})
	}
}

func TestDecryptArmorStrictness(t *testing.T) {
	t.Parallel()
	k := keyFor(t, ProfileDefault)
	armored := gatewayEncrypt(t, plaintext, k)
	if _, err := decryptWith(append(append([]byte("\r\n  \n"), armored...), " \r\n\n"...), k.entity); err != nil {
		t.Fatalf("white space around the armor: %v", err)
	}
	if _, err := decryptWith(bytes.ReplaceAll(armored, []byte("\n"), []byte("\r\n")), k.entity); err != nil {
		t.Fatalf("CRLF armor: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(armored)), "\n")
	crc := len(lines) - 2
	if !strings.HasPrefix(lines[crc], "=") {
		t.Fatalf("no CRC line in %q", lines)
	}
	badCRC := append([]string{}, lines...)
	badCRC[crc] = "=AAAA"
	noEnd := lines[:len(lines)-1]
	twice := string(armored) + string(armored)
	for name, msg := range map[string]string{
		"text before":                    "<img src=\"http://attacker.example/\n" + string(armored),
		"text after":                     string(armored) + "\">\n",
		"two blocks":                     twice,
		"bad checksum":                   strings.Join(badCRC, "\n"),
		"no END line":                    strings.Join(noEnd, "\n"),
		"no blank line after the header": strings.Replace(string(armored), "-----\n\n", "-----\n", 1),
	} {
		if _, err := decryptWith([]byte(msg), k.entity); !errors.Is(err, ErrDecrypt) {
			t.Errorf("%s: err = %v, want ErrDecrypt", name, err)
		}
	}
}

func TestDecryptNeedsLimit(t *testing.T) {
	t.Parallel()
	if _, err := Decrypt(nil, nil, DecryptOptions{}); err == nil || errors.Is(err, ErrDecrypt) {
		t.Fatalf("err = %v, want a usage error", err)
	}
}

func TestDecryptPlaintextLimit(t *testing.T) {
	t.Parallel()
	k := keyFor(t, ProfileDefault)
	big := bytes.Repeat([]byte("x"), 4096)
	msg := gatewayEncrypt(t, big, k)
	if _, err := Decrypt(msg, openpgp.EntityList{k.entity}, DecryptOptions{MaxPlaintext: 4096}); err != nil {
		t.Fatalf("at the limit: %v", err)
	}
	if _, err := Decrypt(msg, openpgp.EntityList{k.entity}, DecryptOptions{MaxPlaintext: 4095}); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("over the limit: err = %v, want ErrDecrypt", err)
	}
}
