package pgp

import (
	"bytes"
	"io"
	"mime"
	"mime/multipart"
	"regexp"
	"strings"
	"testing"
)

func TestNewBoundary(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		b := NewBoundary()
		if !regexp.MustCompile(`^sealgate-[0-9a-f]{24}$`).MatchString(b) {
			t.Fatalf("boundary %q has the wrong form", b)
		}
		if !validBoundary(b) {
			t.Fatalf("boundary %q is not a valid RFC 2046 boundary", b)
		}
		if seen[b] {
			t.Fatalf("boundary %q repeated", b)
		}
		seen[b] = true
	}
}

func TestMIMEContentType(t *testing.T) {
	ct := MIMEContentType("sealgate-0123")
	if ct != `multipart/encrypted; protocol="application/pgp-encrypted"; boundary="sealgate-0123"` {
		t.Errorf("got %s", ct)
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || mt != "multipart/encrypted" ||
		params["protocol"] != "application/pgp-encrypted" || params["boundary"] != "sealgate-0123" {
		t.Errorf("ParseMediaType(%q) = %q %v %v", ct, mt, params, err)
	}
}

// encryptMIMETo runs EncryptMIME with body and returns the output.
func encryptMIMETo(t testing.TB, boundary string, body []byte, to ...*Cert) []byte {
	t.Helper()
	var out bytes.Buffer
	w, err := EncryptMIME(&out, boundary, to, EncryptOptions{})
	if err != nil {
		t.Fatalf("EncryptMIME: %v", err)
	}
	if _, err := w.Write(body); err != nil {
		t.Fatalf("write: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return out.Bytes()
}

// mimeParts splits an RFC 3156 body into its parts, checking the structure
// every reader relies on. It returns the armored second part.
func mimeParts(t testing.TB, boundary string, body []byte) []byte {
	t.Helper()
	r := multipart.NewReader(bytes.NewReader(body), boundary)
	var parts []*multipart.Part
	var bodies [][]byte
	for {
		p, err := r.NextRawPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("part %d: %v", len(parts)+1, err)
		}
		b, err := io.ReadAll(p)
		if err != nil {
			t.Fatalf("read part %d: %v", len(parts)+1, err)
		}
		parts, bodies = append(parts, p), append(bodies, b)
	}
	// RFC 3156 §4: exactly two parts.
	if len(parts) != 2 {
		t.Fatalf("%d parts, want 2", len(parts))
	}
	if ct := parts[0].Header.Get("Content-Type"); ct != "application/pgp-encrypted" {
		t.Errorf("part 1 Content-Type %q", ct)
	}
	if got := strings.TrimSpace(string(bodies[0])); got != "Version: 1" {
		t.Errorf("part 1 body %q, want Version: 1", got)
	}
	mt, params, err := mime.ParseMediaType(parts[1].Header.Get("Content-Type"))
	if err != nil || mt != "application/octet-stream" || params["name"] != "encrypted.asc" {
		t.Errorf("part 2 Content-Type %q %v", mt, params)
	}
	if cd := parts[1].Header.Get("Content-Disposition"); cd != `inline; filename="encrypted.asc"` {
		t.Errorf("part 2 Content-Disposition %q", cd)
	}
	return bodies[1]
}

func TestEncryptMIME(t *testing.T) {
	key := testKey(t, kindCv25519)
	boundary := NewBoundary()
	out := encryptMIMETo(t, boundary, plaintext, certOf(t, key))

	armored := mimeParts(t, boundary, out)
	if info := inspect(t, armored, key); !bytes.Equal(info.plaintext, plaintext) {
		t.Fatalf("decrypted %q, want %q", info.plaintext, plaintext)
	}
	s := string(out)
	if !strings.HasPrefix(s, "This is an OpenPGP/MIME encrypted message (RFC 3156).\r\n--"+boundary+"\r\n") {
		t.Errorf("body starts %q", s[:min(len(s), 100)])
	}
	if !strings.HasSuffix(s, "\r\n-----END PGP MESSAGE-----\r\n--"+boundary+"--\r\n") {
		t.Errorf("body ends %q", s[max(0, len(s)-80):])
	}
	// Canonical CRLF: no bare LF and no bare CR anywhere.
	if n := strings.Count(s, "\n"); n != strings.Count(s, "\r\n") || n != strings.Count(s, "\r") {
		t.Error("body has bare LF or CR")
	}
	for _, line := range strings.Split(s, "\r\n") {
		if len(line) > 76 {
			t.Errorf("line of %d characters: %q", len(line), line)
		}
	}
}

func TestEncryptMIMERefusals(t *testing.T) {
	good := certOf(t, testKey(t, kindCv25519))
	for _, b := range []string{"", strings.Repeat("a", 71), "ends with space ", "quote\"", "semi;colon", "new\r\nline"} {
		if _, err := EncryptMIME(discard{}, b, []*Cert{good}, EncryptOptions{}); err == nil {
			t.Errorf("boundary %q accepted", b)
		}
	}
	sign := newKey(t, kindCv25519, good.Entity.PrimaryKey.CreationTime)
	sign.Subkeys = nil
	var w recordingWriter
	_, err := EncryptMIME(&w, NewBoundary(), []*Cert{good, certOf(t, sign)}, EncryptOptions{})
	wantUnusable(t, err, "sign-only")
	if w.Len() != 0 {
		t.Errorf("a refused EncryptMIME wrote %d bytes", w.Len())
	}
}
