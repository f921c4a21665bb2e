package main

// Hand-built hostile inputs: an OpenPGP SED message (reliability.md P1a;
// no current tool writes one) and CMS EnvelopedData with a chosen content
// key, so that the padding can be made bad on purpose (C3).

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
	"io"
	"math/big"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

// sedMessage is an armored OpenPGP message to h's key whose data sits in a
// Symmetrically Encrypted Data packet (tag 9, RFC 4880 §5.7): no MDC. It
// also returns the binary form for the sanity check in the test.
func sedMessage(t testing.TB, h *home, data []byte) (armored, bin []byte) {
	t.Helper()
	keys, err := openpgp.ReadArmoredKeyRing(bytes.NewReader(h.public(t)))
	if err != nil {
		t.Fatal(err)
	}
	enc, ok := keys[0].EncryptionKey(time.Now())
	if !ok {
		t.Fatal("no encryption key")
	}
	var lit bytes.Buffer
	w, err := packet.SerializeLiteral(nopWriteCloser{&lit}, true, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data)
	w.Close()

	key := make([]byte, 32)
	rand.Read(key)
	var msg bytes.Buffer
	if err := packet.SerializeEncryptedKeyAEAD(&msg, enc.PublicKey, packet.CipherAES256, false, key, nil); err != nil {
		t.Fatal(err)
	}
	block, _ := aes.NewCipher(key)
	iv := make([]byte, aes.BlockSize)
	rand.Read(iv)
	stream, prefix := packet.NewOCFBEncrypter(block, iv, packet.OCFBResync)
	ct := make([]byte, lit.Len())
	stream.XORKeyStream(ct, lit.Bytes())
	body := append(prefix, ct...)
	if len(body) >= 192 {
		t.Fatal("sedMessage: keep the data short")
	}
	msg.Write([]byte{0xc0 | 9, byte(len(body))})
	msg.Write(body)
	return armorMessage(t, msg.Bytes()), msg.Bytes()
}

func armorMessage(t testing.TB, bin []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	w, err := armor.Encode(&out, "PGP MESSAGE", nil)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(bin)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	out.WriteString("\n")
	return out.Bytes()
}

func dearmor(t testing.TB, armored []byte) []byte {
	t.Helper()
	block, err := armor.Decode(bytes.NewReader(armored))
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(block.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// smimeIdentity is an RSA key with a self-signed certificate.
type smimeIdentity struct {
	key  *rsa.PrivateKey
	cert *x509.Certificate
	pem  []byte // PEM key and certificate, as --key reads them
}

func newSMIMEIdentity(t testing.TB, address string) *smimeIdentity {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: address},
		EmailAddresses: []string{address}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageKeyEncipherment | x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(key)
	p := append(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	return &smimeIdentity{key: key, cert: cert, pem: p}
}

// CMS structures (RFC 5652 §6) for one key-transport recipient.
type algorithmIdentifier struct {
	Algorithm  asn1.ObjectIdentifier
	Parameters asn1.RawValue `asn1:"optional"`
}

type issuerAndSerial struct {
	Issuer asn1.RawValue
	Serial *big.Int
}

type keyTransRecipient struct {
	Version      int
	RID          issuerAndSerial
	KeyAlgorithm algorithmIdentifier
	EncryptedKey []byte
}

type encryptedContentInfo struct {
	ContentType asn1.ObjectIdentifier
	Algorithm   algorithmIdentifier
	Content     asn1.RawValue // [0] IMPLICIT OCTET STRING
}

type envelopedData struct {
	Version              int
	Recipients           []keyTransRecipient `asn1:"set"`
	EncryptedContentInfo encryptedContentInfo
}

type contentInfo struct {
	ContentType asn1.ObjectIdentifier
	Content     asn1.RawValue // [0] EXPLICIT
}

var (
	oidData          = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
	oidEnvelopedData = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 3}
	oidRSAEncryption = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}
	oidAES256CBC     = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 42}
)

// cmsOptions spoils a CMS message on purpose.
type cmsOptions struct {
	badPadding bool // the last block's padding bytes are invalid
	badKey     bool // the RSA-encrypted content key is corrupted
}

// cmsEnvelope builds DER EnvelopedData (AES-256-CBC content, RSA PKCS#1 v1.5
// key transport, as the gateway and most clients write) of content to id.
func cmsEnvelope(t testing.TB, id *smimeIdentity, content []byte, o cmsOptions) []byte {
	t.Helper()
	cek := make([]byte, 32)
	rand.Read(cek)
	iv := make([]byte, aes.BlockSize)
	rand.Read(iv)
	pad := aes.BlockSize - len(content)%aes.BlockSize
	padded := append(bytes.Clone(content), bytes.Repeat([]byte{byte(pad)}, pad)...)
	if o.badPadding {
		padded[len(padded)-1] = 0x11 // more than a block: never valid
	}
	block, _ := aes.NewCipher(cek)
	ct := make([]byte, len(padded))
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(ct, padded)
	ek, err := rsa.EncryptPKCS1v15(rand.Reader, &id.key.PublicKey, cek)
	if err != nil {
		t.Fatal(err)
	}
	if o.badKey {
		ek[len(ek)/2] ^= 0x40
	}
	ivDER, _ := asn1.Marshal(iv)
	ed := envelopedData{
		Recipients: []keyTransRecipient{{
			RID:          issuerAndSerial{Issuer: asn1.RawValue{FullBytes: id.cert.RawIssuer}, Serial: id.cert.SerialNumber},
			KeyAlgorithm: algorithmIdentifier{Algorithm: oidRSAEncryption, Parameters: asn1.NullRawValue},
			EncryptedKey: ek,
		}},
		EncryptedContentInfo: encryptedContentInfo{
			ContentType: oidData,
			Algorithm:   algorithmIdentifier{Algorithm: oidAES256CBC, Parameters: asn1.RawValue{FullBytes: ivDER}},
			Content:     asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, Bytes: ct},
		},
	}
	edDER, err := asn1.Marshal(ed)
	if err != nil {
		t.Fatal(err)
	}
	der, err := asn1.Marshal(contentInfo{ContentType: oidEnvelopedData,
		Content: asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: edDER}})
	if err != nil {
		t.Fatal(err)
	}
	return der
}
