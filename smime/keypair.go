package smime

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

	"software.sslmate.com/src/go-pkcs12"
)

// KeyPair is an endpoint's own S/MIME identity: its certificate, the
// matching private key, and any other certificates that came with them.
type KeyPair struct {
	Cert  *x509.Certificate
	Key   crypto.PrivateKey
	Chain []*x509.Certificate
}

// ReadKeyPair reads an endpoint's identity for Decrypt: PEM (one private
// key block, PKCS#8, PKCS#1 or SEC 1, and CERTIFICATE blocks, in any order)
// or PKCS#12 (.p12/.pfx, BER or DER, modern AES or legacy encryption)
// protected by password. The certificate returned is the one whose public
// key matches the private key. Only the endpoint client calls this; the
// gateway refuses such input (ReadCerts).
func ReadKeyPair(data []byte, password string) (*KeyPair, error) {
	if isPKCS12(data) {
		return readPKCS12(data, password)
	}
	var key crypto.PrivateKey
	var certs []*x509.Certificate
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		switch {
		case block.Type == "CERTIFICATE":
			c, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("smime: key pair: certificate: %w", err)
			}
			certs = append(certs, c)
		case block.Type == "ENCRYPTED PRIVATE KEY" || strings.Contains(block.Headers["Proc-Type"], "ENCRYPTED"):
			return nil, errors.New("smime: key pair: encrypted PEM keys are not supported; use PKCS#12 or `openssl pkey` to decrypt")
		case strings.HasSuffix(block.Type, "PRIVATE KEY"):
			if key != nil {
				return nil, errors.New("smime: key pair: more than one private key")
			}
			k, err := parsePrivateKey(block.Bytes)
			if err != nil {
				return nil, err
			}
			key = k
		}
	}
	if key == nil {
		return nil, errors.New("smime: key pair: no private key (want PEM key and certificate, or PKCS#12)")
	}
	return pairUp(key, nil, certs)
}

func parsePrivateKey(der []byte) (crypto.PrivateKey, error) {
	if k, err := x509.ParsePKCS8PrivateKey(der); err == nil {
		return k, nil
	}
	if k, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		return k, nil
	}
	if k, err := x509.ParseECPrivateKey(der); err == nil {
		return k, nil
	}
	return nil, errors.New("smime: key pair: private key is not PKCS#8, PKCS#1 or SEC 1")
}

func readPKCS12(data []byte, password string) (*KeyPair, error) {
	// go-pkcs12 reads DER only; Windows and Java may write BER.
	der, err := berToDER(data)
	if err != nil {
		return nil, fmt.Errorf("smime: key pair: PKCS#12: %w", err)
	}
	key, cert, chain, err := pkcs12.DecodeChain(der, password)
	if err != nil {
		return nil, fmt.Errorf("smime: key pair: PKCS#12: %w", err)
	}
	return pairUp(key, cert, chain)
}

// pairUp picks the certificate whose public key matches key: first, if
// given, then any of others.
func pairUp(key crypto.PrivateKey, first *x509.Certificate, others []*x509.Certificate) (*KeyPair, error) {
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("smime: key pair: unsupported private key type %T", key)
	}
	pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok {
		return nil, fmt.Errorf("smime: key pair: unsupported private key type %T", key)
	}
	all := others
	if first != nil {
		all = append([]*x509.Certificate{first}, others...)
	}
	kp := &KeyPair{Key: key}
	for _, c := range all {
		if kp.Cert == nil && pub.Equal(c.PublicKey) {
			kp.Cert = c
			continue
		}
		if kp.Cert == nil || !bytes.Equal(c.Raw, kp.Cert.Raw) {
			kp.Chain = append(kp.Chain, c)
		}
	}
	if kp.Cert == nil {
		return nil, errors.New("smime: key pair: no certificate matches the private key")
	}
	return kp, nil
}
