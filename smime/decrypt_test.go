package smime

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"path/filepath"
	"testing"

	"go.mozilla.org/pkcs7"
)

// envelopeSpec builds an EnvelopedData by hand, with a content key and a
// padded plaintext the test chooses, to make the failures Decrypt must not
// tell apart.
type envelopeSpec struct {
	recip     *x509.Certificate
	alg       asn1.ObjectIdentifier
	cek       []byte // content key; RSA-encrypted to recip unless encKey is set
	encKey    []byte
	iv        []byte
	plaintext []byte // already padded: encrypted as is
}

func (s envelopeSpec) build(t testing.TB) []byte {
	t.Helper()
	ek := s.encKey
	if ek == nil {
		var err error
		if ek, err = rsa.EncryptPKCS1v15(rand.Reader, s.recip.PublicKey.(*rsa.PublicKey), s.cek); err != nil {
			t.Fatal(err)
		}
	}
	block, err := aes.NewCipher(s.cek)
	if err != nil {
		t.Fatal(err)
	}
	ct := make([]byte, len(s.plaintext))
	cipher.NewCBCEncrypter(block, s.iv).CryptBlocks(ct, s.plaintext)
	return marshalEnvelope(t, s.recip, ek, s.alg, mustMarshal(t, s.iv), ct)
}

func marshalEnvelope(t testing.TB, recip *x509.Certificate, ek []byte, alg asn1.ObjectIdentifier, params, ct []byte) []byte {
	t.Helper()
	rid := mustMarshal(t, issuerAndSerial{Issuer: asn1.RawValue{FullBytes: recip.RawIssuer}, Serial: recip.SerialNumber})
	ktri := mustMarshal(t, keyTransRecipientInfo{
		RID:                    asn1.RawValue{FullBytes: rid},
		KeyEncryptionAlgorithm: pkix.AlgorithmIdentifier{Algorithm: oidRSAEncryption, Parameters: asn1.NullRawValue},
		EncryptedKey:           ek,
	})
	ed := mustMarshal(t, envelopedData{
		RecipientInfos: []asn1.RawValue{{FullBytes: ktri}},
		EncryptedContent: encryptedContentInfo{
			ContentType:                oidData,
			ContentEncryptionAlgorithm: pkix.AlgorithmIdentifier{Algorithm: alg, Parameters: asn1.RawValue{FullBytes: params}},
			EncryptedContent:           asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, Bytes: ct},
		},
	})
	return mustMarshal(t, struct {
		ContentType asn1.ObjectIdentifier
		Content     asn1.RawValue
	}{oidEnvelopedData, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: ed}})
}

func mustMarshal(t testing.TB, v any) []byte {
	t.Helper()
	b, err := asn1.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// decryptFixture is a recipient and one valid message to it.
type decryptFixture struct {
	cert  *x509.Certificate
	key   *rsa.PrivateKey
	plain []byte
	der   []byte
}

func newDecryptFixture(t testing.TB) decryptFixture {
	t.Helper()
	Setup()
	root := newCA(t, "Test Root", nil)
	f := decryptFixture{cert: root.issue(t, leafTemplate("bob@example.org"), nil), key: rsaKey(t, 1), plain: sampleEntity(1000)}
	var err error
	if f.der, err = Encrypt(f.plain, []*x509.Certificate{f.cert}); err != nil {
		t.Fatal(err)
	}
	return f
}

// assertErrDecrypt calls Decrypt and wants exactly ErrDecrypt: the same
// value, not merely a wrapper, so no detail can leak through its text.
func assertErrDecrypt(t *testing.T, name string, der []byte, cert *x509.Certificate, key any) {
	t.Helper()
	plain, err := Decrypt(der, cert, key)
	if err != ErrDecrypt || plain != nil {
		t.Errorf("Decrypt(%s) = %d bytes, %v; want nothing and exactly ErrDecrypt", name, len(plain), err)
	}
}

func TestDecryptHandBuiltEnvelope(t *testing.T) {
	// The builder itself is right: a well-padded message decrypts.
	f := newDecryptFixture(t)
	padded := append([]byte("sixteen byte msg"), bytes.Repeat([]byte{16}, 16)...)
	der := envelopeSpec{recip: f.cert, alg: oidAES256CBC, cek: randBytes(32), iv: randBytes(16), plaintext: padded}.build(t)
	if got, err := Decrypt(der, f.cert, f.key); err != nil || string(got) != "sixteen byte msg" {
		t.Fatalf("Decrypt(hand-built) = %q, %v", got, err)
	}
}

// TestDecryptFailuresLookAlike covers reliability reference C1, C3 and C4:
// every failure is the same ErrDecrypt, and nothing panics.
func TestDecryptFailuresLookAlike(t *testing.T) {
	f := newDecryptFixture(t)
	other := newCA(t, "Other Root", nil).issue(t, leafTemplate("bob@example.org"), rsaKey(t, 2).Public())
	loadTestKeys(t)
	spec := func(mut func(s *envelopeSpec)) []byte {
		s := envelopeSpec{recip: f.cert, alg: oidAES256CBC, cek: randBytes(32), iv: randBytes(16),
			plaintext: append(bytes.Repeat([]byte("a"), 16), bytes.Repeat([]byte{16}, 16)...)}
		mut(&s)
		return s.build(t)
	}
	lastBlock := func(b ...byte) func(s *envelopeSpec) {
		return func(s *envelopeSpec) { s.plaintext = append(bytes.Repeat([]byte("a"), 16), b...) }
	}
	cases := map[string][]byte{
		// pkcs7's unpad panics on this one (reliability reference 1.3-4).
		"last byte 0xFF, 16 bytes": spec(lastBlock(bytes.Repeat([]byte{0xff}, 16)...)),
		"padding byte 0":           spec(lastBlock(append(bytes.Repeat([]byte("b"), 15), 0)...)),
		"padding byte 17":          spec(lastBlock(bytes.Repeat([]byte{17}, 16)...)),
		"inconsistent padding":     spec(lastBlock(append(bytes.Repeat([]byte("b"), 14), 3, 2)...)),
		"DES-CBC OID":              spec(func(s *envelopeSpec) { s.alg = pkcs7.OIDEncryptionAlgorithmDESCBC }),
		"3DES-CBC OID":             spec(func(s *envelopeSpec) { s.alg = pkcs7.OIDEncryptionAlgorithmDESEDE3CBC }),
		"RC2-CBC OID":              spec(func(s *envelopeSpec) { s.alg = asn1.ObjectIdentifier{1, 2, 840, 113549, 3, 2} }),
		"AES-GCM in EnvelopedData": spec(func(s *envelopeSpec) { s.alg = oidAES256GCM }),
		"short IV":                 marshalEnvelope(t, f.cert, randBytes(256), oidAES256CBC, mustMarshal(t, randBytes(8)), randBytes(32)),
		"partial block":            marshalEnvelope(t, f.cert, randBytes(256), oidAES256CBC, mustMarshal(t, randBytes(16)), randBytes(33)),
		"empty content":            marshalEnvelope(t, f.cert, randBytes(256), oidAES256CBC, mustMarshal(t, randBytes(16)), nil),
		"ber 1F 80":                {0x1f, 0x80},
		"ber 30 81":                {0x30, 0x81},
		"ber 30 84 01":             {0x30, 0x84, 0x01},
		"ber 5F 4D":                {0x5f, 0x4d},
		"ber 30 82 06":             {0x30, 0x82, 0x06},
		"deep BER":                 append(bytes.Repeat([]byte{0x30, 0x80}, 10000), bytes.Repeat([]byte{0, 0}, 10000)...),
		"empty":                    nil,
		"a certificate":            f.cert.Raw,
	}
	for name, der := range cases {
		assertErrDecrypt(t, name, der, f.cert, f.key)
	}
	// A bad RSA block gives a random content key (implicit rejection),
	// with which the CBC padding is usually wrong: ErrDecrypt. About one
	// time in 256 it happens to be valid and the result is garbage, as
	// with OpenSSL: never the plaintext, never another error.
	for name, der := range map[string][]byte{
		"RSA block of random bytes": spec(func(s *envelopeSpec) { s.encKey = randBytes(256) }),
		"RSA block for a 16-byte key": spec(func(s *envelopeSpec) {
			s.encKey, _ = rsa.EncryptPKCS1v15(rand.Reader, &f.key.PublicKey, randBytes(16))
		}),
	} {
		plain, err := Decrypt(der, f.cert, f.key)
		if err != ErrDecrypt && (err != nil || bytes.HasPrefix(plain, []byte("aaaa"))) {
			t.Errorf("Decrypt(%s) = %q, %v; want ErrDecrypt or garbage", name, plain, err)
		}
	}
	assertErrDecrypt(t, "wrong private key", f.der, f.cert, rsaKey(t, 2))
	assertErrDecrypt(t, "not a recipient", f.der, other, rsaKey(t, 2))
	assertErrDecrypt(t, "EC key", f.der, f.cert, testKeys.ec)
	assertErrDecrypt(t, "nil certificate", f.der, nil, f.key)
	// A flipped byte anywhere: ErrDecrypt, or (CBC is malleable, EFAIL)
	// a changed plaintext; never another error or a panic.
	for i := 0; i < len(f.der); i += 3 {
		flipped := bytes.Clone(f.der)
		flipped[i] ^= 0x01
		if _, err := Decrypt(flipped, f.cert, f.key); err != nil && err != ErrDecrypt {
			t.Fatalf("Decrypt(byte %d flipped) = %v; want nil or exactly ErrDecrypt", i, err)
		}
	}
	for n := 0; n < len(f.der); n += 5 {
		assertErrDecrypt(t, "truncated", f.der[:n], f.cert, f.key)
	}
}

// TestDecryptPKCS7UnpadPanic pins reliability reference 1.3-4: pkcs7's own
// Decrypt panics on a final byte larger than the plaintext; ours returns
// ErrDecrypt.
func TestDecryptPKCS7UnpadPanic(t *testing.T) {
	f := newDecryptFixture(t)
	der := envelopeSpec{recip: f.cert, alg: oidAES256CBC, cek: randBytes(32), iv: randBytes(16),
		plaintext: bytes.Repeat([]byte{0xff}, 16)}.build(t)
	panicked := func() (p bool) {
		defer func() { p = recover() != nil }()
		p7, err := pkcs7.Parse(der)
		if err == nil {
			_, _ = p7.Decrypt(f.cert, f.key)
		}
		return false
	}()
	if !panicked {
		t.Log("pkcs7 no longer panics here; the regression test still holds for Decrypt")
	}
	assertErrDecrypt(t, "pkcs7 unpad panic input", der, f.cert, f.key)
}

// Decrypt reads what the real peers write: OpenSSL (DER, streamed BER,
// subject key identifier, AES-128, AuthEnvelopedData AES-GCM), NSS cmsutil
// and gpgsm (both BER with indefinite lengths). Legacy 3DES is refused.
func TestDecryptFromPeers(t *testing.T) {
	root := newCA(t, "Interop Root", nil)
	r := newOpenSSLRecipient(t, root)
	plain := sampleEntity(5000)
	in := writeFile(t, r.dir, "plain.txt", plain)
	enc := func(name string, args ...string) []byte {
		out := filepath.Join(r.dir, name)
		run(t, r.dir, nil, nil, "openssl", append(append([]string{"cms", "-encrypt", "-binary", "-in", in, "-out", out}, args...), r.certPath)...)
		return readFile(t, out)
	}
	gcm := enc("gcm.p7m", "-aes-256-gcm", "-outform", "DER")
	streamed := enc("stream.pem", "-aes256", "-stream", "-outform", "PEM")
	block, _ := pem.Decode(streamed)
	messages := map[string][]byte{
		"openssl AES-256-CBC DER":      enc("cbc.p7m", "-aes256", "-outform", "DER"),
		"openssl AES-128-CBC DER":      enc("cbc128.p7m", "-aes128", "-outform", "DER"),
		"openssl streamed BER":         block.Bytes,
		"openssl subject key id":       enc("keyid.p7m", "-aes256", "-keyid", "-outform", "DER"),
		"openssl AuthEnvelopedData":    gcm,
		"NSS cmsutil (indefinite BER)": nssEncrypt(t, r, in),
		"gpgsm (indefinite BER)":       gpgsmEncrypt(t, r, in),
	}
	for name, der := range messages {
		got, err := Decrypt(der, r.cert, r.key)
		if err != nil || !bytes.Equal(got, plain) {
			t.Errorf("Decrypt(%s) = %d bytes, %v; want the %d plaintext bytes", name, len(got), err, len(plain))
		}
	}
	// AuthEnvelopedData: a changed tag (the mac is the last element) fails.
	tampered := bytes.Clone(gcm)
	tampered[len(tampered)-1] ^= 0x01
	assertErrDecrypt(t, "AuthEnvelopedData with a changed tag", tampered, r.cert, r.key)
	assertErrDecrypt(t, "openssl 3DES", enc("3des.p7m", "-des3", "-outform", "DER"), r.cert, r.key)
}

func nssEncrypt(t *testing.T, r *opensslRecipient, in string) []byte {
	t.Helper()
	db := nssDB(t, r)
	out := filepath.Join(r.dir, "nss.p7m")
	run(t, r.dir, nil, nil, "cmsutil", "-E", "-i", in, "-d", db, "-r", opensslAddress, "-o", out)
	der := readFile(t, out)
	if !bytes.HasPrefix(der, []byte{0x30, 0x80}) {
		t.Errorf("cmsutil output starts % x; expected indefinite-length BER", der[:2])
	}
	return der
}

func gpgsmEncrypt(t *testing.T, r *opensslRecipient, in string) []byte {
	t.Helper()
	env := gpgsmHome(t, r)
	out := filepath.Join(r.dir, "gpgsm.p7m")
	run(t, r.dir, nil, env, "gpgsm", "--batch", "--disable-dirmngr", "--disable-crl-checks", "-r", opensslAddress, "--encrypt", "-o", out, in)
	return readFile(t, out)
}
