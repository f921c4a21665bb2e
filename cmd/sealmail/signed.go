package main

// Signed entities around and inside the encryption: RFC 1847
// multipart/signed with an OpenPGP (RFC 3156 §5) or S/MIME (RFC 8551
// §3.5.3) detached signature, and S/MIME opaque signed-data (RFC 8551
// §3.5.2). They are parsed here and verified in verdict.go.
//
// Which signatures count (reliability.md P2, "the signed entity is the
// displayed root"):
//   - inside: the decrypted entity itself is signed, as PGP/MIME's nested
//     method (RFC 3156 §6.1) and Outlook's sign-then-encrypt write it. The
//     signed content then replaces the decrypted entity: the output is the
//     message with the signed part as its body. A signed entity deeper in
//     the decrypted tree (a part of a multipart/mixed) is not verified: it
//     would vouch for part of what is shown only.
//   - around: the encrypted entity is the content of a signature (S/MIME
//     encrypt-then-sign, the outer layer of RFC 2634 triple wrapping). The
//     signature covers the ciphertext, hence what it decrypts to.
//   - the OpenPGP "combined" signature inside the encrypted OpenPGP
//     message (RFC 3156 §6.2), verified by endpoint.Decrypt.

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"github.com/emersion/go-message/textproto"

	"github.com/sealgate/sealgate/smime"
)

const (
	protocolPGP   = "application/pgp-signature"
	protocolSMIME = "application/pkcs7-signature"
	// Older Outlook and Netscape spelling (RFC 8551 §3.2.1 asks receivers
	// to accept it).
	protocolSMIMEOld = "application/x-pkcs7-signature"
)

// signedEntity is a signature found in a message: parsed, not verified.
type signedEntity struct {
	smime bool
	// canonical is the content a detached signature covers: the first part
	// of the multipart/signed as it appears between the boundaries, line
	// ends made CRLF (RFC 3156 §5, RFC 8551 §3.1.1). nil for opaque
	// signed-data, whose content is inside sd.
	canonical []byte
	signature []byte            // OpenPGP: the signature part, transfer-decoded
	sd        *smime.SignedData // S/MIME: the parsed SignedData
	parseErr  error             // S/MIME detached: why the signature part did not parse
	label     string            // names the signature in stderr notes
}

// parseSigned recognises a signed entity and returns its content entity
// (the first part of a multipart/signed, raw; the encapsulated content of
// opaque signed-data) and the signature. s is nil, with no error, for an
// entity that is not signed in a form we verify. A signed entity whose
// content cannot be told (not two parts, a second part that is not the
// signature, opaque signed-data that does not parse) is malformed: an
// error, and the caller refuses the message.
func parseSigned(h textproto.Header, body []byte) (content []byte, s *signedEntity, err error) {
	mt, params := mediaType(h)
	switch mt {
	case "multipart/signed":
		return parseMultipartSigned(h, params, body)
	case "application/pkcs7-mime", "application/x-pkcs7-mime":
		st := strings.ToLower(params["smime-type"])
		if st != "signed-data" && st != "" {
			return nil, nil, nil
		}
		der, err := transferDecode(h, body)
		if err != nil {
			return nil, nil, err
		}
		sd, err := smime.ParseSignedData(der)
		if err != nil {
			if st == "" { // RFC 8551 §3.2.2: smime-type is optional; not signed data then
				return nil, nil, nil
			}
			return nil, nil, err
		}
		content, ok := sd.Content()
		if !ok {
			return nil, nil, errors.New("mime: signed-data without its content")
		}
		return content, &signedEntity{smime: true, sd: sd, label: "S/MIME signature"}, nil
	}
	return nil, nil, nil
}

func parseMultipartSigned(h textproto.Header, params map[string]string, body []byte) ([]byte, *signedEntity, error) {
	protocol := strings.ToLower(params["protocol"])
	s := &signedEntity{label: "PGP/MIME signature"}
	switch protocol {
	case protocolPGP:
	case protocolSMIME, protocolSMIMEOld:
		s.smime, s.label = true, "S/MIME signature"
	default:
		return nil, nil, nil
	}
	// RFC 2045 §6.4: a multipart entity has no transfer encoding.
	switch cte := strings.ToLower(strings.TrimSpace(h.Get("Content-Transfer-Encoding"))); cte {
	case "", "7bit", "8bit", "binary":
	default:
		return nil, nil, fmt.Errorf("mime: multipart/signed with Content-Transfer-Encoding %q", cte)
	}
	boundary := params["boundary"]
	if boundary == "" {
		return nil, nil, errors.New("mime: multipart/signed without boundary")
	}
	parts, err := rawParts(body, boundary, 2)
	if err != nil {
		return nil, nil, err
	}
	if len(parts) != 2 {
		// RFC 1847 §2.1: exactly two body parts.
		return nil, nil, fmt.Errorf("mime: multipart/signed with %d parts, want 2", len(parts))
	}
	sh, sb, err := splitEntity(parts[1])
	if err != nil {
		return nil, nil, err
	}
	if smt, _ := mediaType(sh); smt != protocol && !(s.smime && (smt == protocolSMIME || smt == protocolSMIMEOld)) {
		return nil, nil, fmt.Errorf("mime: multipart/signed for %s has a %s second part", protocol, smt)
	}
	sig, err := transferDecode(sh, sb)
	if err != nil {
		return nil, nil, err
	}
	s.canonical = canonicalCRLF(parts[0])
	if !s.smime {
		s.signature = sig
	} else if s.sd, err = smime.ParseSignedData(sig); err != nil {
		// The content is intact; only the signature is unreadable: bad.
		s.parseErr = err
	}
	return parts[0], s, nil
}

// rawParts returns the body parts of a multipart body exactly as they
// appear between the boundaries: what an RFC 1847 signature covers. RFC
// 2046 §5.1.1: a delimiter line is "--" boundary, optional white space,
// and the line break before it belongs to it; the close delimiter ends
// in "--" and is required (a missing one is a truncated message). Line
// breaks are CRLF or, for files, LF. At most maxParts parts.
func rawParts(body []byte, boundary string, maxParts int) ([][]byte, error) {
	dash := []byte("--" + boundary)
	var parts [][]byte
	start := -1 // offset of the current part; -1 in the preamble
	for off := 0; off < len(body); {
		next := len(body)
		line := body[off:]
		if i := bytes.IndexByte(line, '\n'); i >= 0 {
			line, next = line[:i], off+i+1
		}
		rest, isDelimiter := bytes.CutPrefix(bytes.TrimSuffix(line, []byte("\r")), dash)
		closing := bytes.HasPrefix(rest, []byte("--"))
		if closing {
			rest = rest[2:]
		}
		if isDelimiter && len(bytes.TrimLeft(rest, " \t")) == 0 {
			if start >= 0 {
				end := off - 1 // the LF before this line
				if end > start && body[end-1] == '\r' {
					end--
				}
				parts = append(parts, body[start:max(end, start)])
			}
			if closing {
				if start < 0 {
					return nil, errors.New("mime: close delimiter before the first part")
				}
				return parts, nil
			}
			if len(parts) == maxParts {
				return nil, fmt.Errorf("mime: more than %d parts", maxParts)
			}
			start = next
		}
		off = next
	}
	return nil, errors.New("mime: multipart without close delimiter")
}

// canonicalCRLF makes every bare LF a CRLF, leaving CRLFs alone.
func canonicalCRLF(b []byte) []byte {
	out := make([]byte, 0, len(b)+len(b)/16+1)
	for i, c := range b {
		if c == '\n' && (i == 0 || b[i-1] != '\r') {
			out = append(out, '\r')
		}
		out = append(out, c)
	}
	return out
}

// signedWrapper takes a signature around the encrypted entity off and
// goes on with its content. The signature is verified after decryption,
// with the others.
func (env *envelope) signedWrapper(h textproto.Header, body []byte, wrappers int) error {
	if wrappers == maxWrapperLevels {
		return errors.New("mime: too many wrappers")
	}
	if env.around != nil {
		return errors.New("mime: more than one signature around the encrypted entity")
	}
	content, s, err := parseSigned(h, body)
	if err != nil {
		return err
	}
	if s == nil {
		return errNotEncrypted
	}
	s.label = "signature around the encryption (" + s.label + ")"
	env.around = s
	ch, cb, err := splitEntity(content)
	if err != nil {
		return err
	}
	return env.classify(ch, cb, wrappers+1)
}

// unwrapInner takes a signature off the decrypted entity: the signed
// content becomes the decrypted entity, and the signature joins d.checks
// unverified (verdict.go verifies it).
func unwrapInner(d *decrypted) (*signedEntity, error) {
	h, body, err := splitEntity(d.plaintext)
	if err != nil {
		return nil, err
	}
	content, s, err := parseSigned(h, body)
	if err != nil || s == nil {
		return nil, err
	}
	// Opaque signed-data hid its content from checkEntity.
	if err := checkEntity(content); err != nil {
		return nil, err
	}
	d.plaintext = content
	return s, nil
}
