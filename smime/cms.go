package smime

import (
	"bytes"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
)

// CMS structures read by Decrypt and ContentAlgorithm (RFC 5652, RFC 5083).
// RecipientInfos stay raw: only KeyTransRecipientInfo is decoded, so other
// recipients' kinds (key agreement, KEK, password) do not stop parsing.

type contentInfo struct {
	ContentType asn1.ObjectIdentifier
	Content     asn1.RawValue `asn1:"explicit,tag:0"`
}

// RFC 5652 §6.1.
type envelopedData struct {
	Version          int
	OriginatorInfo   asn1.RawValue   `asn1:"optional,tag:0"`
	RecipientInfos   []asn1.RawValue `asn1:"set"`
	EncryptedContent encryptedContentInfo
	UnprotectedAttrs asn1.RawValue `asn1:"optional,tag:1"`
}

// RFC 5083 §2.1.
type authEnvelopedData struct {
	Version              int
	OriginatorInfo       asn1.RawValue   `asn1:"optional,tag:0"`
	RecipientInfos       []asn1.RawValue `asn1:"set"`
	AuthEncryptedContent encryptedContentInfo
	AuthAttrs            asn1.RawValue `asn1:"optional,tag:1"`
	MAC                  []byte
	UnauthAttrs          asn1.RawValue `asn1:"optional,tag:2"`
}

type encryptedContentInfo struct {
	ContentType                asn1.ObjectIdentifier
	ContentEncryptionAlgorithm pkix.AlgorithmIdentifier
	EncryptedContent           asn1.RawValue `asn1:"optional,tag:0"`
}

// RFC 5652 §6.2.1.
type keyTransRecipientInfo struct {
	Version                int
	RID                    asn1.RawValue
	KeyEncryptionAlgorithm pkix.AlgorithmIdentifier
	EncryptedKey           []byte
}

type issuerAndSerial struct {
	Issuer asn1.RawValue
	Serial *big.Int
}

// RFC 5084 §3.2.
type gcmParameters struct {
	Nonce  []byte
	ICVLen int `asn1:"optional,default:12"`
}

// envelope is the part of an EnvelopedData or AuthEnvelopedData that
// decryption needs.
type envelope struct {
	authenticated bool
	recipients    []asn1.RawValue
	content       encryptedContentInfo
	authAttrs     asn1.RawValue // AuthEnvelopedData only
	mac           []byte        // AuthEnvelopedData only
}

// parseEnvelope reads a ContentInfo holding EnvelopedData or
// AuthEnvelopedData, BER or DER.
func parseEnvelope(ber []byte) (*envelope, error) {
	der, err := berToDER(ber)
	if err != nil {
		return nil, err
	}
	var ci contentInfo
	if err := unmarshalAll(der, &ci); err != nil {
		return nil, fmt.Errorf("smime: CMS ContentInfo: %w", err)
	}
	switch {
	case ci.ContentType.Equal(oidEnvelopedData):
		var ed envelopedData
		if err := unmarshalAll(ci.Content.Bytes, &ed); err != nil {
			return nil, fmt.Errorf("smime: CMS EnvelopedData: %w", err)
		}
		return &envelope{recipients: ed.RecipientInfos, content: ed.EncryptedContent}, nil
	case ci.ContentType.Equal(oidAuthEnveloped):
		var ad authEnvelopedData
		if err := unmarshalAll(ci.Content.Bytes, &ad); err != nil {
			return nil, fmt.Errorf("smime: CMS AuthEnvelopedData: %w", err)
		}
		return &envelope{authenticated: true, recipients: ad.RecipientInfos,
			content: ad.AuthEncryptedContent, authAttrs: ad.AuthAttrs, mac: ad.MAC}, nil
	}
	return nil, fmt.Errorf("smime: CMS content type %v is not (auth)enveloped data", ci.ContentType)
}

// ciphertext returns the encryptedContent octets, joining the parts of a
// constructed encoding.
func (e *envelope) ciphertext() ([]byte, error) {
	ec := e.content.EncryptedContent
	if ec.FullBytes == nil {
		return nil, errors.New("smime: CMS: no encrypted content (detached content is not supported)")
	}
	if !ec.IsCompound {
		return ec.Bytes, nil
	}
	var parts [][]byte
	for rest := ec.Bytes; len(rest) > 0; {
		var part []byte
		var err error
		if rest, err = asn1.Unmarshal(rest, &part); err != nil {
			return nil, fmt.Errorf("smime: CMS encrypted content: %w", err)
		}
		parts = append(parts, part)
	}
	if len(parts) == 1 {
		return parts[0], nil
	}
	return bytes.Join(parts, nil), nil
}

func unmarshalAll(der []byte, v any) error {
	rest, err := asn1.Unmarshal(der, v)
	if err != nil {
		return err
	}
	if len(rest) != 0 {
		return errors.New("trailing data")
	}
	return nil
}
