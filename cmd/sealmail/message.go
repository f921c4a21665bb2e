package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/quotedprintable"
	"strings"

	"github.com/emersion/go-message/textproto"

	"github.com/sealgate/sealgate/pgp/endpoint"
)

// Limits of the MIME front end (STYLE rule 2). The whole message and the
// whole plaintext are held in memory: nothing may leave before the
// integrity check at the very end (STYLE rule 6).
const (
	maxMessageBytes  = 100 << 20 // input message, and decrypted plaintext
	maxMIMEDepth     = 10        // nested multipart levels
	maxMIMEParts     = 100       // body parts in the whole decrypted entity
	maxHeaderFields  = 1000      // per header section
	maxWrapperLevels = 3         // multipart/mixed levels around the encrypted entity
)

// kind is the form of an encrypted message.
type kind int

const (
	kindPGPMIME   kind = iota + 1 // RFC 3156 multipart/encrypted
	kindPGPInline                 // text/plain holding one armored PGP MESSAGE
	kindSMIME                     // RFC 8551 application/pkcs7-mime enveloped-data
)

// envelope is an encrypted message taken apart.
type envelope struct {
	kind    kind
	outer   textproto.Header // the message's own header
	part    textproto.Header // header of the encrypted entity: outer, or the one part of a wrapper
	payload []byte           // the ciphertext, transfer-decoded
	lf      bool             // the message uses bare LF line ends (a file, not the wire)
	around  *signedEntity    // a signature around the encrypted entity, verified after decryption
}

// errNotEncrypted and the other errors of this file are refusals: the
// caller shows none of them, only the generic message (STYLE rule 5).
var errNotEncrypted = errors.New("mime: the message is not one encrypted entity")

// parseEnvelope accepts only messages whose root is the encrypted entity,
// or a multipart/mixed with that entity as its only part. Anything with an
// encrypted part beside other parts is refused (EFAIL direct exfiltration
// and reply oracles, reliability.md M8 and P3): decrypted text must never
// be shown next to attacker-controlled content.
func parseEnvelope(msg []byte) (*envelope, error) {
	h, body, err := splitEntity(msg)
	if err != nil {
		return nil, err
	}
	env := &envelope{outer: h, lf: usesBareLF(msg)}
	if err := env.classify(h, body, 0); err != nil {
		return nil, err
	}
	return env, nil
}

func (env *envelope) classify(h textproto.Header, body []byte, wrappers int) error {
	mt, params := mediaType(h)
	env.part = h
	switch mt {
	case "multipart/encrypted":
		return env.pgpMIME(h, params, body)
	case "application/pkcs7-mime", "application/x-pkcs7-mime":
		// RFC 8551 §3.2.2; some clients omit smime-type.
		switch strings.ToLower(params["smime-type"]) {
		case "", "enveloped-data", "authenveloped-data":
		case "signed-data": // encrypt-then-sign (RFC 8551 §3.7)
			return env.signedWrapper(h, body, wrappers)
		default:
			return fmt.Errorf("mime: smime-type %q is not encrypted data", params["smime-type"])
		}
		payload, err := transferDecode(h, body)
		if err != nil {
			return err
		}
		env.kind, env.payload = kindSMIME, payload
		return nil
	case "multipart/signed":
		return env.signedWrapper(h, body, wrappers)
	case "text/plain":
		payload, err := transferDecode(h, body)
		if err != nil {
			return err
		}
		if !endpoint.IsArmoredMessage(payload) {
			return errNotEncrypted
		}
		// The armor must be all of the text; endpoint.Decrypt checks.
		env.kind, env.payload = kindPGPInline, payload
		return nil
	case "multipart/mixed":
		if wrappers == maxWrapperLevels {
			return errors.New("mime: too many multipart/mixed wrappers")
		}
		parts, err := readParts(h, params, body, 1)
		if err != nil {
			return err
		}
		if len(parts) != 1 {
			return errNotEncrypted
		}
		return env.classify(parts[0].header, parts[0].body, wrappers+1)
	}
	return errNotEncrypted
}

// pgpMIME checks the RFC 3156 §4 structure: exactly two parts, the first
// application/pgp-encrypted with "Version: 1", the second
// application/octet-stream with the OpenPGP message.
func (env *envelope) pgpMIME(h textproto.Header, params map[string]string, body []byte) error {
	if !strings.EqualFold(params["protocol"], "application/pgp-encrypted") {
		return errors.New("mime: multipart/encrypted without protocol application/pgp-encrypted")
	}
	parts, err := readParts(h, params, body, 2)
	if err != nil {
		return err
	}
	if len(parts) != 2 {
		return fmt.Errorf("mime: multipart/encrypted with %d parts, want 2", len(parts))
	}
	if mt, _ := mediaType(parts[0].header); mt != "application/pgp-encrypted" {
		return fmt.Errorf("mime: first part is %s, want application/pgp-encrypted", mt)
	}
	control, err := transferDecode(parts[0].header, parts[0].body)
	if err != nil {
		return err
	}
	if !hasLine(control, "Version: 1") {
		return errors.New("mime: the control part lacks \"Version: 1\"")
	}
	if mt, _ := mediaType(parts[1].header); mt != "application/octet-stream" {
		return fmt.Errorf("mime: second part is %s, want application/octet-stream", mt)
	}
	payload, err := transferDecode(parts[1].header, parts[1].body)
	if err != nil {
		return err
	}
	env.kind, env.payload = kindPGPMIME, payload
	return nil
}

func hasLine(b []byte, line string) bool {
	for _, l := range bytes.Split(b, []byte("\n")) {
		if string(bytes.TrimSpace(l)) == line {
			return true
		}
	}
	return false
}

// splitEntity reads an entity's header and returns it with the body.
func splitEntity(data []byte) (textproto.Header, []byte, error) {
	br := bufio.NewReader(bytes.NewReader(data))
	h, err := textproto.ReadHeader(br)
	if err != nil {
		return h, nil, fmt.Errorf("mime: header: %w", err)
	}
	if h.Len() > maxHeaderFields {
		return h, nil, fmt.Errorf("mime: more than %d header fields", maxHeaderFields)
	}
	body, err := io.ReadAll(br)
	if err != nil {
		return h, nil, err
	}
	return h, body, nil
}

// mediaType is the entity's lower-cased media type and its parameters;
// RFC 2045 §5.2: no Content-Type means text/plain.
func mediaType(h textproto.Header) (string, map[string]string) {
	v := h.Get("Content-Type")
	if strings.TrimSpace(v) == "" {
		return "text/plain", map[string]string{}
	}
	mt, params, err := mime.ParseMediaType(v)
	if err != nil && !errors.Is(err, mime.ErrInvalidMediaParameter) {
		return "invalid", map[string]string{}
	}
	return mt, params
}

// transferDecode undoes the Content-Transfer-Encoding (RFC 2045 §6).
func transferDecode(h textproto.Header, body []byte) ([]byte, error) {
	switch cte := strings.ToLower(strings.TrimSpace(h.Get("Content-Transfer-Encoding"))); cte {
	case "", "7bit", "8bit", "binary":
		return body, nil
	case "base64":
		compact := bytes.Map(func(r rune) rune {
			if r == '\r' || r == '\n' || r == ' ' || r == '\t' {
				return -1
			}
			return r
		}, body)
		out := make([]byte, base64.StdEncoding.DecodedLen(len(compact)))
		n, err := base64.StdEncoding.Decode(out, compact)
		if err != nil {
			return nil, fmt.Errorf("mime: base64: %w", err)
		}
		return out[:n], nil
	case "quoted-printable":
		out, err := io.ReadAll(quotedprintable.NewReader(bytes.NewReader(body)))
		if err != nil {
			return nil, fmt.Errorf("mime: quoted-printable: %w", err)
		}
		return out, nil
	default:
		return nil, fmt.Errorf("mime: unknown Content-Transfer-Encoding %q", cte)
	}
}

type bodyPart struct {
	header textproto.Header
	body   []byte
}

// readParts reads the parts of a multipart body, failing on more than max
// parts or a missing close delimiter (a truncated message).
func readParts(h textproto.Header, params map[string]string, body []byte, max int) ([]bodyPart, error) {
	// RFC 2045 §6.4: a multipart entity has no transfer encoding.
	switch cte := strings.ToLower(strings.TrimSpace(h.Get("Content-Transfer-Encoding"))); cte {
	case "", "7bit", "8bit", "binary":
	default:
		return nil, fmt.Errorf("mime: multipart with Content-Transfer-Encoding %q", cte)
	}
	boundary := params["boundary"]
	if boundary == "" {
		return nil, errors.New("mime: multipart without boundary")
	}
	mr := textproto.NewMultipartReader(bytes.NewReader(body), boundary)
	var parts []bodyPart
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			return parts, nil
		}
		if err != nil {
			return nil, fmt.Errorf("mime: %w", err)
		}
		if len(parts) == max {
			return nil, fmt.Errorf("mime: more than %d parts", max)
		}
		if p.Header.Len() > maxHeaderFields {
			return nil, fmt.Errorf("mime: more than %d header fields", maxHeaderFields)
		}
		b, err := io.ReadAll(p)
		if err != nil {
			return nil, fmt.Errorf("mime: %w", err)
		}
		parts = append(parts, bodyPart{header: p.Header, body: b})
	}
}

// checkEntity checks that decrypted data is one complete MIME entity:
// every header parses, every multipart ends with its close delimiter,
// nesting is at most maxMIMEDepth and there are at most maxMIMEParts
// parts. A CBC-malleated S/MIME plaintext (EFAIL, reliability.md C1) or a
// truncated one is likely to fail here; the check is no substitute for
// authenticated encryption, which CBC lacks.
func checkEntity(data []byte) error {
	parts := 0
	return checkEntityAt(data, 0, &parts)
}

func checkEntityAt(data []byte, depth int, parts *int) error {
	h, body, err := splitEntity(data)
	if err != nil {
		return err
	}
	mt, params := mediaType(h)
	if mt == "invalid" {
		return errors.New("mime: malformed Content-Type")
	}
	if !strings.HasPrefix(mt, "multipart/") {
		return nil
	}
	if depth == maxMIMEDepth {
		return fmt.Errorf("mime: multipart nested more than %d deep", maxMIMEDepth)
	}
	children, err := readParts(h, params, body, maxMIMEParts-*parts)
	if err != nil {
		return err
	}
	*parts += len(children)
	for _, c := range children {
		// Rebuild the child entity: its raw header, a blank line, its body.
		var buf bytes.Buffer
		if err := textproto.WriteHeader(&buf, c.header); err != nil {
			return err
		}
		buf.Write(c.body)
		if err := checkEntityAt(buf.Bytes(), depth+1, parts); err != nil {
			return err
		}
	}
	return nil
}

// usesBareLF reports whether the message's first line ends in a bare LF.
func usesBareLF(msg []byte) bool {
	i := bytes.IndexByte(msg, '\n')
	return i >= 0 && (i == 0 || msg[i-1] != '\r')
}
