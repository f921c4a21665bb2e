package gateway

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

func TestInnerHeaderAddsMIMEFieldsWhenMissing(t *testing.T) {
	msg := "From: a@x.example\r\nTo: b@y.example\r\nBcc: hidden@z.example\r\nSubject: s\r\n\r\nbody\r\n"
	h, n, err := parseHeader(strings.NewReader(msg), 1024)
	if err != nil {
		t.Fatal(err)
	}
	body, err := bodyAfter(strings.NewReader(msg), n)
	if err != nil {
		t.Fatal(err)
	}
	var inner bytes.Buffer
	if err := writeInnerHeader(&inner, h, true); err != nil {
		t.Fatal(err)
	}
	got := inner.String()
	for _, want := range []string{"From: a@x.example\r\n", "Subject: s\r\n", "MIME-Version: 1.0\r\n", "Content-Type: text/plain; charset=us-ascii; hp=\"cipher\"\r\n", "HP-Outer: Subject: ...\r\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("inner header lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "hidden@z.example") {
		t.Error("Bcc copied inside")
	}
	if !strings.HasSuffix(got, "\r\n\r\n") {
		t.Error("inner header not terminated by a blank line")
	}
	rest, _ := io.ReadAll(body)
	if string(rest) != "body\r\n" {
		t.Errorf("body %q", rest)
	}
}

func TestHeaderTooLarge(t *testing.T) {
	msg := "Subject: " + strings.Repeat("x", 5000) + "\r\n\r\nbody"
	if _, _, err := parseHeader(strings.NewReader(msg), 1000); err != errHeaderTooLarge {
		t.Fatalf("err = %v, want errHeaderTooLarge", err)
	}
}

func TestFoldField(t *testing.T) {
	long := "HP-Outer: To: " + strings.Repeat("someone@example.org, ", 20)
	out := foldField(long)
	for _, l := range strings.Split(strings.TrimSuffix(out, "\r\n"), "\r\n") {
		if len(l) > 78 {
			t.Errorf("line of %d characters: %q", len(l), l)
		}
	}
	if unfolded := strings.ReplaceAll(out, "\r\n", ""); unfolded != long {
		t.Errorf("folding changed the value: %q", unfolded)
	}
	if got := foldField("Short: x"); got != "Short: x\r\n" {
		t.Errorf("short line %q", got)
	}
}

func TestParseHeaderAtLimitBoundaries(t *testing.T) {
	hdr := "Subject: s\r\nFrom: a@x.example\r\n\r\n"
	body := strings.Repeat("b", 5000)
	// The limit exactly fits the header, and is far below the message size.
	h, n, err := parseHeader(strings.NewReader(hdr+body), int64(len(hdr)))
	if err != nil {
		t.Fatalf("header exactly at the limit: %v", err)
	}
	if h.Get("From") != "a@x.example" {
		t.Errorf("From %q", h.Get("From"))
	}
	if n != int64(len(hdr)) {
		t.Errorf("header length %d, want %d", n, len(hdr))
	}
	// The body after the header, from a reader that can seek and from one
	// that cannot.
	for _, r := range []io.Reader{strings.NewReader(hdr + body), io.MultiReader(strings.NewReader(hdr + body))} {
		rest, err := bodyAfter(r, n)
		if err != nil {
			t.Fatal(err)
		}
		if b, _ := io.ReadAll(rest); string(b) != body {
			t.Errorf("body of %d bytes, want %d", len(b), len(body))
		}
	}
	// One byte less: the blank line does not fit.
	if _, _, err := parseHeader(strings.NewReader(hdr+body), int64(len(hdr)-1)); err != errHeaderTooLarge {
		t.Errorf("header over the limit: %v", err)
	}
	// A message that is only a header (no blank line, no body) is fine.
	only := "Subject: s\r\n"
	if _, n, err := parseHeader(strings.NewReader(only), 1000); err != nil || n != int64(len(only)) {
		t.Errorf("header-only message: length %d, %v", n, err)
	}
}
