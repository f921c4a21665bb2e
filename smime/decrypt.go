package smime

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/subtle"
	"crypto/x509"
	"encoding/asn1"
	"errors"
)

// Content-encryption algorithms Decrypt accepts, with their key sizes:
// AES-CBC in EnvelopedData (RFC 3565), AES-GCM in AuthEnvelopedData
// (RFC 5084). Everything else is refused: DES, 3DES and RC2 (RFC 8551 §2.7
// and reliability reference C6), and pkcs7's non-standard AES-GCM inside
// EnvelopedData (reliability reference 1.3-2).
func contentKeySize(alg asn1.ObjectIdentifier, authenticated bool) (int, bool) {
	switch {
	case !authenticated && alg.Equal(oidAES128CBC), authenticated && alg.Equal(oidAES128GCM):
		return 16, true
	case !authenticated && alg.Equal(oidAES192CBC), authenticated && alg.Equal(oidAES192GCM):
		return 24, true
	case !authenticated && alg.Equal(oidAES256CBC), authenticated && alg.Equal(oidAES256GCM):
		return 32, true
	}
	return 0, false
}

// Decrypt returns the content of a CMS EnvelopedData (AES-CBC) or
// AuthEnvelopedData (AES-GCM), BER or DER, for the recipient cert with its
// RSA private key. It is for the endpoint client; the gateway never calls
// it.
//
// Every failure (malformed input, no recipient for cert, wrong key, bad
// RSA padding, bad CBC padding, failed GCM tag, legacy or unknown
// algorithm) returns the same ErrDecrypt and nothing else, and a panic
// anywhere below becomes ErrDecrypt too (reliability reference C3, C4).
// The RSA step uses implicit rejection: a bad PKCS#1 v1.5 padding yields a
// random content key, in constant time, so it fails later in exactly the
// way a bad CBC padding does.
//
// AES-CBC content is not authenticated (EFAIL, reliability reference C1):
// the caller must treat the result as untrusted, refuse anything that is
// not one complete MIME entity, and never load remote content.
func Decrypt(der []byte, cert *x509.Certificate, key crypto.PrivateKey) (plain []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			plain, err = nil, ErrDecrypt
		}
	}()
	plain, err = decrypt(der, cert, key)
	if err != nil {
		return nil, ErrDecrypt
	}
	return plain, nil
}

func decrypt(der []byte, cert *x509.Certificate, key crypto.PrivateKey) ([]byte, error) {
	priv, ok := key.(*rsa.PrivateKey)
	if !ok || cert == nil || !priv.PublicKey.Equal(cert.PublicKey) {
		return nil, errors.New("key is not the RSA key of cert")
	}
	env, err := parseEnvelope(der)
	if err != nil {
		return nil, err
	}
	if !env.content.ContentType.Equal(oidData) {
		return nil, errors.New("encrypted content is not id-data")
	}
	keyLen, ok := contentKeySize(env.content.ContentEncryptionAlgorithm.Algorithm, env.authenticated)
	if !ok {
		return nil, errors.New("content encryption algorithm refused")
	}
	ek, err := env.encryptedKey(cert)
	if err != nil {
		return nil, err
	}
	ct, err := env.ciphertext()
	if err != nil {
		return nil, err
	}
	cek := make([]byte, keyLen)
	if _, err := rand.Read(cek); err != nil {
		return nil, err
	}
	// Implicit rejection: on bad padding cek keeps its random value. The
	// error is only for a ciphertext of the wrong length, which is public.
	if err := rsa.DecryptPKCS1v15SessionKey(nil, priv, ek, cek); err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(cek)
	if err != nil {
		return nil, err
	}
	if env.authenticated {
		return env.openGCM(block, ct)
	}
	return openCBC(block, env.content.ContentEncryptionAlgorithm.Parameters.FullBytes, ct)
}

// encryptedKey returns the RSA-encrypted content key of the
// KeyTransRecipientInfo that names cert, by issuer and serial number or by
// subject key identifier (RFC 5652 §6.2.1).
func (e *envelope) encryptedKey(cert *x509.Certificate) ([]byte, error) {
	for _, raw := range e.recipients {
		if raw.Class != asn1.ClassUniversal || raw.Tag != asn1.TagSequence {
			continue // kari [1], kekri [2], pwri [3], ori [4]
		}
		var ktri keyTransRecipientInfo
		if unmarshalAll(raw.FullBytes, &ktri) != nil || !ktri.KeyEncryptionAlgorithm.Algorithm.Equal(oidRSAEncryption) {
			continue
		}
		if matchRecipient(ktri.RID, cert) {
			return ktri.EncryptedKey, nil
		}
	}
	return nil, errors.New("no RSA key-transport recipient for the certificate")
}

func matchRecipient(rid asn1.RawValue, cert *x509.Certificate) bool {
	switch {
	case rid.Class == asn1.ClassUniversal && rid.Tag == asn1.TagSequence:
		var ias issuerAndSerial
		return unmarshalAll(rid.FullBytes, &ias) == nil && ias.Serial != nil &&
			bytes.Equal(ias.Issuer.FullBytes, cert.RawIssuer) && ias.Serial.Cmp(cert.SerialNumber) == 0
	case rid.Class == asn1.ClassContextSpecific && rid.Tag == 0:
		return len(cert.SubjectKeyId) > 0 && bytes.Equal(rid.Bytes, cert.SubjectKeyId)
	}
	return false
}

// openCBC decrypts AES-CBC content and removes its RFC 5652 §6.3 padding,
// checking the padding in constant time.
func openCBC(block cipher.Block, params, ct []byte) ([]byte, error) {
	var iv []byte
	if err := unmarshalAll(params, &iv); err != nil || len(iv) != aes.BlockSize {
		return nil, errors.New("bad CBC IV")
	}
	if len(ct) == 0 || len(ct)%aes.BlockSize != 0 {
		return nil, errors.New("ciphertext is not whole blocks")
	}
	p := make([]byte, len(ct))
	cipher.NewCBCDecrypter(block, iv).CryptBlocks(p, ct)
	n := len(p)
	padLen := int(p[n-1])
	good := subtle.ConstantTimeLessOrEq(1, padLen) & subtle.ConstantTimeLessOrEq(padLen, aes.BlockSize)
	for i := 1; i <= aes.BlockSize; i++ {
		inPad := subtle.ConstantTimeLessOrEq(i, padLen)
		eq := subtle.ConstantTimeByteEq(p[n-i], byte(padLen))
		good &= subtle.ConstantTimeSelect(inPad, eq, 1)
	}
	if good != 1 {
		return nil, errors.New("bad padding")
	}
	return p[:n-padLen], nil
}

// openGCM checks the tag and decrypts AuthEnvelopedData content. The
// authenticated attributes, if any, are the additional data, DER-encoded
// with the SET OF tag (RFC 5083 §2.2).
func (e *envelope) openGCM(block cipher.Block, ct []byte) ([]byte, error) {
	var params gcmParameters
	if err := unmarshalAll(e.content.ContentEncryptionAlgorithm.Parameters.FullBytes, &params); err != nil {
		return nil, err
	}
	if len(params.Nonce) != 12 || params.ICVLen < 12 || params.ICVLen > 16 || len(e.mac) != params.ICVLen {
		return nil, errors.New("bad GCM parameters")
	}
	gcm, err := cipher.NewGCMWithTagSize(block, params.ICVLen)
	if err != nil {
		return nil, err
	}
	var aad []byte
	if len(e.authAttrs.FullBytes) > 0 {
		aad = append([]byte{0x31}, e.authAttrs.FullBytes[1:]...)
	}
	sealed := append(ct[:len(ct):len(ct)], e.mac...)
	return gcm.Open(nil, params.Nonce, sealed, aad)
}
