package main

import (
	"bytes"
	"fmt"
	"mime"
	"strings"

	"github.com/emersion/go-message/textproto"

	"github.com/sealgate/sealgate/pgp/endpoint"
)

// Our own output fields. Any field of these names in the input, outside or
// inside the encryption, is dropped: a sender must not be able to forge
// sealmail's verdict.
const (
	signatureField = "X-Sealmail-Signature"
	signerField    = "X-Sealmail-Signer"
	ownFieldPrefix = "X-Sealmail-"
)

// traceFields are added to the outside by the MTAs that delivered the
// message; they stay when protected headers replace the outer ones.
var traceFields = map[string]bool{
	"Return-Path": true, "Received": true, "Delivered-To": true, "X-Original-To": true,
}

// decrypted is the plaintext of an envelope and what is known about it.
type decrypted struct {
	plaintext []byte
	signature endpoint.SignatureStatus
	signer    string     // fingerprint, for a good, mismatched or bad signature
	checks    []sigCheck // the signatures, outer to inner (verdict.go)
	notes     []string   // why signatures are not good, for stderr
}

// assemble builds the output message: our verdict fields, then the header
// and the body (RFC 9788 §4 for protected headers).
//
//   - PGP/MIME and S/MIME whose decrypted entity has hp="cipher" in its
//     Content-Type: the inner header fields replace the outer ones (less
//     HP-Outer and the hp parameter); only the outer trace fields stay.
//   - Thunderbird's and Enigmail's older protected-headers="v1": inner
//     fields replace outer fields of the same name; other outer non-Content
//     fields stay.
//   - Otherwise the outer header less its Content-* fields, then the
//     decrypted entity's Content-* fields (RFC 3156 §4: the encrypted
//     entity is a body part; other fields in it are not promoted).
//   - Inline PGP: the outer header with the plaintext as the text/plain
//     body it replaces.
func assemble(env *envelope, d *decrypted) ([]byte, error) {
	var head bytes.Buffer
	head.WriteString(signatureField + ": " + string(d.signature) + "\r\n")
	if d.signer != "" {
		head.WriteString(signerField + ": " + d.signer + "\r\n")
	}
	var body []byte
	if env.kind == kindPGPInline {
		writeFields(&head, env.outer, func(k string) bool { return !isContentField(k) })
		writeFields(&head, env.part, func(k string) bool { return isContentField(k) && k != "Content-Transfer-Encoding" })
		head.WriteString("Content-Transfer-Encoding: " + transferEncodingOf(d.plaintext) + "\r\n")
		body = d.plaintext
	} else {
		inner, innerBody, err := splitEntity(d.plaintext)
		if err != nil {
			return nil, err
		}
		_, params := mediaType(inner)
		switch {
		case strings.EqualFold(params["hp"], "cipher"):
			writeFields(&head, env.outer, func(k string) bool { return traceFields[k] })
			writeProtected(&head, inner)
		case strings.EqualFold(params["protected-headers"], "v1"):
			writeFields(&head, env.outer, func(k string) bool { return !isContentField(k) && !inner.Has(k) })
			writeFields(&head, inner, func(string) bool { return true })
		default:
			writeFields(&head, env.outer, func(k string) bool { return !isContentField(k) })
			writeFields(&head, inner, func(k string) bool { return isContentField(k) })
		}
		body = innerBody
	}
	head.WriteString("\r\n")
	out := head.Bytes()
	if env.lf {
		out = bytes.ReplaceAll(out, []byte("\r\n"), []byte("\n"))
	}
	return append(out, body...), nil
}

func isContentField(k string) bool {
	return strings.HasPrefix(k, "Content-")
}

// writeFields writes the raw fields of h that keep accepts, never our own.
func writeFields(w *bytes.Buffer, h textproto.Header, keep func(key string) bool) {
	for f := h.Fields(); f.Next(); {
		k := f.Key()
		if strings.HasPrefix(k, ownFieldPrefix) || !keep(k) {
			continue
		}
		raw, err := f.Raw()
		if err != nil {
			continue // a field we built ourselves; never the case for parsed ones
		}
		w.Write(raw)
	}
}

// writeProtected writes the inner header of an hp="cipher" entity
// (RFC 9788 §2.1) as the message header: HP-Outer fields, which record
// what the outside showed (§2.2), are dropped, and so is the hp parameter.
func writeProtected(w *bytes.Buffer, inner textproto.Header) {
	for f := inner.Fields(); f.Next(); {
		k := f.Key()
		switch {
		case k == "Hp-Outer" || strings.HasPrefix(k, ownFieldPrefix):
			continue
		case k == "Content-Type":
			if v, ok := withoutParam(f.Value(), "hp"); ok {
				w.WriteString(foldField("Content-Type: " + v))
				continue
			}
		}
		raw, err := f.Raw()
		if err == nil {
			w.Write(raw)
		}
	}
}

// withoutParam returns the media type value v without parameter name.
func withoutParam(v, name string) (string, bool) {
	mt, params, err := mime.ParseMediaType(v)
	if err != nil {
		return "", false
	}
	delete(params, name)
	out := mime.FormatMediaType(mt, params)
	return out, out != ""
}

// foldField ends a field with CRLF, folding it at "; " where a line would
// pass RFC 5322's 78 characters.
func foldField(line string) string {
	var b strings.Builder
	width := 0
	for i, piece := range strings.SplitAfter(line, "; ") {
		if i > 0 && width+len(piece) > 78 {
			b.WriteString("\r\n ")
			width = 1
		}
		b.WriteString(piece)
		width += len(piece)
	}
	return strings.TrimRight(b.String(), " ") + "\r\n"
}

// transferEncodingOf is the RFC 2045 §2 class of data: 7bit or 8bit.
func transferEncodingOf(data []byte) string {
	for _, c := range data {
		if c >= 0x80 {
			return "8bit"
		}
	}
	return "7bit"
}

// signatureLine is what decrypt writes to stderr: the verdict, then a
// line for each signature that is not good, saying why.
func signatureLine(d *decrypted) string {
	line := fmt.Sprintf("sealmail: signature: %s", d.signature)
	if d.signer != "" {
		line = fmt.Sprintf("sealmail: signature: %s (key %s)", d.signature, d.signer)
	}
	for _, n := range d.notes {
		line += "\nsealmail: " + n
	}
	return line
}
