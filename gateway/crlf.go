package gateway

import (
	"bytes"
	"io"
)

// crlfWriter canonicalises line endings: a bare CR or a bare LF becomes
// CRLF. The SMTP engine passes bare CR and LF through from the client, and treating
// them the same way on every path is what keeps "\n.\n"-style smuggling
// sequences (CVE-2023-51764 family) inside one message: after this writer a
// line holding a lone dot is always CRLF-delimited and gets dot-stuffed by
// the upstream writer, never read as an end of data.
type crlfWriter struct {
	w      io.Writer
	pendCR bool // the previous write ended in CR
}

func newCRLFWriter(w io.Writer) *crlfWriter { return &crlfWriter{w: w} }

var crlf = []byte("\r\n")

// Write passes runs of well-formed CRLF lines on as they are (one write
// for a whole chunk of ordinary mail) and writes a CRLF in place of each
// bare CR or LF. Line ends are found with bytes.IndexByte.
func (c *crlfWriter) Write(p []byte) (int, error) {
	n := len(p)
	if c.pendCR && len(p) > 0 {
		c.pendCR = false
		if _, err := c.w.Write(crlf); err != nil {
			return 0, err
		}
		if p[0] == '\n' {
			p = p[1:]
		}
	}
	start, i := 0, 0 // p[start:i] is checked and not yet written
	lf := -1         // the next LF at or after i, when known
	for i < len(p) {
		if lf < i {
			if lf = bytes.IndexByte(p[i:], '\n'); lf >= 0 {
				lf += i
			} else {
				lf = len(p)
			}
		}
		cr := bytes.IndexByte(p[i:lf], '\r')
		switch {
		case cr >= 0 && i+cr == len(p)-1:
			// A CR ends the write: whether it is bare depends on the next.
			if err := c.emit(p[start:i+cr], nil); err != nil {
				return 0, err
			}
			c.pendCR = true
			return n, nil
		case cr >= 0 && i+cr != lf-1:
			// A bare CR (not the one right before the LF).
			if err := c.emit(p[start:i+cr], crlf); err != nil {
				return 0, err
			}
			i = i + cr + 1
			start = i
		case lf == len(p):
			i = len(p)
		case lf == 0 || p[lf-1] != '\r':
			// A bare LF.
			if err := c.emit(p[start:lf], crlf); err != nil {
				return 0, err
			}
			i = lf + 1
			start = i
		default:
			i = lf + 1 // a CRLF line: keep going
		}
	}
	if err := c.emit(p[start:], nil); err != nil {
		return 0, err
	}
	return n, nil
}

// emit writes run, then end (a CRLF replacing a bare CR or LF, or nil).
func (c *crlfWriter) emit(run, end []byte) error {
	if len(run) > 0 {
		if _, err := c.w.Write(run); err != nil {
			return err
		}
	}
	if end != nil {
		_, err := c.w.Write(end)
		return err
	}
	return nil
}

// Flush writes a CR still held back from the last Write.
func (c *crlfWriter) Flush() error {
	if !c.pendCR {
		return nil
	}
	c.pendCR = false
	_, err := c.w.Write(crlf)
	return err
}
