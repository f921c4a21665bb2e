package gateway

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"
)

// errHeaderTooLarge marks a header section over the configured cap.
var errHeaderTooLarge = errors.New("gateway: message header too large")

// parseHeader reads the header section of a canonical (CRLF) message,
// at most max bytes of it, and returns it with its length in bytes (the
// blank line that ends it included): where the body starts. Every field
// keeps its raw bytes, so what is copied out is what came in.
func parseHeader(msg io.Reader, max int64) (textproto.Header, int64, error) {
	lr := &io.LimitedReader{R: msg, N: max}
	br := headerReaders.Get().(*bufio.Reader)
	br.Reset(lr)
	defer func() { br.Reset(nil); headerReaders.Put(br) }()
	h, err := textproto.ReadHeader(br)
	if err != nil {
		if lr.N == 0 {
			return h, 0, errHeaderTooLarge
		}
		return h, 0, fmt.Errorf("gateway: malformed header: %w", err)
	}
	consumed := max - lr.N - int64(br.Buffered())
	if lr.N == 0 && consumed != rawLen(h)+2 {
		// ReadHeader stopped at the end of what the limit let through,
		// not at the blank line (CRLF) that ends a header section.
		return h, 0, errHeaderTooLarge
	}
	return h, consumed, nil
}

// bodyAfter returns msg advanced past a header section of n bytes, as
// parseHeader measured it on the same message.
func bodyAfter(msg io.Reader, n int64) (io.Reader, error) {
	if s, ok := msg.(io.Seeker); ok { // a message held in memory: no copy
		if _, err := s.Seek(n, io.SeekCurrent); err != nil {
			return nil, err
		}
		return msg, nil
	}
	if _, err := io.CopyN(io.Discard, msg, n); err != nil {
		return nil, err
	}
	return msg, nil
}

// headerReaders recycles parseHeader's buffers (one per message).
var headerReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 16*1024) }}

// rawLen is the byte length of all header fields as they were read.
func rawLen(h textproto.Header) int64 {
	var n int64
	for f := h.Fields(); f.Next(); {
		raw, _ := f.Raw()
		n += int64(len(raw))
	}
	return n
}

func mustPeek(br *bufio.Reader, n int) []byte {
	b, _ := br.Peek(n) // n <= Buffered(), so Peek cannot fail
	return b
}

// visibleRecipients returns the normalised addresses named in To and Cc.
// ok is false when a field cannot be parsed: then nobody counts as visible
// and every encrypted recipient gets a copy of its own, the safe side.
func visibleRecipients(h textproto.Header, normalize func(string) (string, error)) (map[string]bool, bool) {
	mh := mail.Header{Header: message.Header{Header: h}}
	seen := map[string]bool{}
	for _, key := range []string{"To", "Cc"} {
		list, err := mh.AddressList(key)
		if err != nil {
			return nil, false
		}
		for _, a := range list {
			if n, err := normalize(a.Address); err == nil {
				seen[n] = true
			}
		}
	}
	return seen, true
}

// Header fields that stay on the outside of an encrypted message when
// header protection is on: what transport, threading and display of the
// message list need. Everything else travels only inside (RFC 9788 §2).
var outerFields = map[string]bool{
	"Return-Path": true, "Received": true, "From": true, "Sender": true,
	"Reply-To": true, "To": true, "Cc": true, "Date": true, "Message-Id": true,
	"In-Reply-To": true, "References": true, "Auto-Submitted": true,
	"Resent-Date": true, "Resent-From": true, "Resent-Sender": true,
	"Resent-To": true, "Resent-Cc": true, "Resent-Message-Id": true,
}

// obscuredSubject replaces the Subject on the outside (RFC 9788 §4.2 uses
// "[...]"; this gateway's contract is "...").
const obscuredSubject = "..."

func isContentField(key string) bool {
	return strings.HasPrefix(key, "Content-")
}

// writeRaw writes a header field's raw bytes.
func writeRaw(w io.Writer, fields textproto.HeaderFields) error {
	raw, err := fields.Raw()
	if err != nil {
		return err
	}
	_, err = w.Write(raw)
	return err
}

// writeOuterHeader writes the header of an encrypted copy: the fields kept
// outside, the obscured Subject and the given Content-Type. Bcc never
// appears.
func writeOuterHeader(w io.Writer, h textproto.Header, protect bool, contentType string) error {
	subjectDone := false
	for f := h.Fields(); f.Next(); {
		key := f.Key()
		switch {
		case key == "Bcc" || key == "Mime-Version" || isContentField(key):
			continue
		case key == "Subject" && protect:
			if !subjectDone {
				subjectDone = true
				if _, err := io.WriteString(w, "Subject: "+obscuredSubject+"\r\n"); err != nil {
					return err
				}
			}
			continue
		case protect && !outerFields[key]:
			continue
		}
		if err := writeRaw(w, f); err != nil {
			return err
		}
	}
	if protect && !subjectDone {
		if _, err := io.WriteString(w, "Subject: "+obscuredSubject+"\r\n"); err != nil {
			return err
		}
	}
	_, err := io.WriteString(w, "MIME-Version: 1.0\r\nContent-Type: "+contentType+"\r\n\r\n")
	return err
}

// writeInnerHeader writes the header of the entity that gets encrypted.
//
// With header protection (RFC 9788 §2.1) the inner header is the original
// header, field by field and byte for byte, less Bcc; the Content-Type gains
// hp="cipher" and HP-Outer fields record what the outside shows (§2.2).
// Without it, the inner entity is the original MIME body part: just the
// Content-* fields (RFC 3156 §4).
func writeInnerHeader(w io.Writer, h textproto.Header, protect bool) error {
	sawType := false
	for f := h.Fields(); f.Next(); {
		key := f.Key()
		if key == "Bcc" || (!protect && !isContentField(key)) {
			continue
		}
		if protect && key == "Content-Type" && !sawType {
			sawType = true
			raw, err := f.Raw()
			if err != nil {
				return err
			}
			raw = bytes.TrimRight(raw, "\r\n")
			if _, err := fmt.Fprintf(w, "%s;\r\n hp=\"cipher\"\r\n", raw); err != nil {
				return err
			}
			continue
		}
		if err := writeRaw(w, f); err != nil {
			return err
		}
	}
	if protect {
		if !h.Has("Mime-Version") {
			// Without it a MIME parser may ignore the Content-Type below.
			if _, err := io.WriteString(w, "MIME-Version: 1.0\r\n"); err != nil {
				return err
			}
		}
		if !sawType {
			// RFC 2045 §5.2: no Content-Type means text/plain; us-ascii.
			if _, err := io.WriteString(w, "Content-Type: text/plain; charset=us-ascii; hp=\"cipher\"\r\n"); err != nil {
				return err
			}
		}
		if err := writeHPOuter(w, h); err != nil {
			return err
		}
	}
	_, err := io.WriteString(w, "\r\n")
	return err
}

// writeHPOuter records, per RFC 9788 §2.2, the outer value of each
// non-structural field the outside carries, folded as RFC 5322 wants.
func writeHPOuter(w io.Writer, h textproto.Header) error {
	values := []string{}
	for f := h.Fields(); f.Next(); {
		key := f.Key()
		if outerFields[key] && key != "Received" && key != "Return-Path" {
			values = append(values, key+": "+f.Value())
		}
	}
	values = append(values, "Subject: "+obscuredSubject)
	for _, v := range values {
		if _, err := io.WriteString(w, foldField("HP-Outer: "+v)); err != nil {
			return err
		}
	}
	return nil
}

// foldField ends a header line with CRLF, folding it at spaces so no line
// exceeds RFC 5322's 78-character recommendation where a space allows.
func foldField(line string) string {
	const max = 78
	var b strings.Builder
	for len(line) > max {
		cut := strings.LastIndexByte(line[:max], ' ')
		if cut <= 0 {
			cut = strings.IndexByte(line[max:], ' ')
			if cut < 0 {
				break
			}
			cut += max
		}
		b.WriteString(line[:cut])
		b.WriteString("\r\n")
		line = line[cut:] // keeps the space: it starts the continuation line
	}
	b.WriteString(line)
	b.WriteString("\r\n")
	return b.String()
}

// writePlainHeader writes the header of a copy relayed without encryption:
// the original less Bcc.
func writePlainHeader(w io.Writer, h textproto.Header) error {
	for f := h.Fields(); f.Next(); {
		if f.Key() == "Bcc" {
			continue
		}
		if err := writeRaw(w, f); err != nil {
			return err
		}
	}
	_, err := io.WriteString(w, "\r\n")
	return err
}
