package gateway

import (
	"bytes"
	"io"
)

// crlfWriter canonicalises line endings: a bare CR or a bare LF becomes
// CRLF. go-smtp passes bare CR and LF through from the client, and treating
// them the same way on every path is what keeps "\n.\n"-style smuggling
// sequences (CVE-2023-51764 family) inside one message: after this writer a
// line holding a lone dot is always CRLF-delimited and gets dot-stuffed by
// the upstream writer, never read as an end of data.
type crlfWriter struct {
	w      io.Writer
	pendCR bool // the previous write ended in CR
	buf    []byte
}

func newCRLFWriter(w io.Writer) *crlfWriter {
	return &crlfWriter{w: w, buf: make([]byte, 0, 32*1024)}
}

func (c *crlfWriter) Write(p []byte) (int, error) {
	n := len(p)
	out := c.buf[:0]
	if c.pendCR && len(p) > 0 {
		c.pendCR = false
		out = append(out, '\r', '\n')
		if p[0] == '\n' {
			p = p[1:]
		}
	}
	for len(p) > 0 {
		i := bytes.IndexAny(p, "\r\n")
		if i < 0 {
			out = append(out, p...)
			break
		}
		out = append(out, p[:i]...)
		if p[i] == '\n' {
			out = append(out, '\r', '\n')
			p = p[i+1:]
			continue
		}
		// p[i] == '\r'
		if i+1 == len(p) {
			c.pendCR = true
			p = nil
			break
		}
		out = append(out, '\r', '\n')
		if p[i+1] == '\n' {
			p = p[i+2:]
		} else {
			p = p[i+1:]
		}
	}
	c.buf = out[:0]
	if _, err := c.w.Write(out); err != nil {
		return 0, err
	}
	return n, nil
}

// Flush writes a CR still held back from the last Write.
func (c *crlfWriter) Flush() error {
	if !c.pendCR {
		return nil
	}
	c.pendCR = false
	_, err := c.w.Write([]byte("\r\n"))
	return err
}
