package smtpd

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strconv"
	"unicode/utf8"
)

// dotReader reads a DATA message from the connection's buffer a line at
// a time: it removes the dot of dot-stuffed lines and ends at the
// CRLF "." CRLF line. Only that sequence ends the message: "." after a
// bare LF or CR is ordinary data (the Session decides what to do with
// bare line ends; SMTP smuggling, RFC 5321 §4.1.1.4).
type dotReader struct {
	c       *conn
	max     int64  // message size limit
	n       int64  // bytes returned so far
	line    []byte // the rest of the current slice of the buffer
	bol     bool   // the next slice starts a line (the last one ended in CRLF)
	cr      bool   // the last byte read was CR
	lineLen int    // bytes of the current line read so far
	done    bool   // the end-of-data line has been read
	eof     bool   // io.EOF has been returned
	err     error  // sticky: a limit, or *gone
	discard bool   // draining after the Session stopped reading
}

func (r *dotReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	n := 0
	for n < len(p) {
		if len(r.line) == 0 {
			if r.done || (n > 0 && r.c.br.Buffered() == 0) {
				break // return what there is rather than wait
			}
			if err := r.next(); err != nil {
				r.err = err
				break
			}
			continue
		}
		k := copy(p[n:], r.line)
		r.line = r.line[k:]
		n += k
	}
	if n > 0 {
		return n, nil
	}
	if r.err != nil {
		return 0, r.err
	}
	r.eof = true
	return 0, io.EOF
}

// next takes the next line (or, for a line longer than the buffer, the
// next part of it) from the buffer.
func (r *dotReader) next() error {
	c := r.c
	if c.br.Buffered() == 0 {
		if err := c.flush(); err != nil {
			return &gone{err}
		}
	}
	line, err := c.br.ReadSlice('\n')
	if err != nil && err != bufio.ErrBufferFull {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return &gone{err}
	}
	c.consumed(len(line))
	full := err == nil // the slice ends with LF
	orig := line
	if r.bol {
		if full && len(line) == 3 && line[0] == '.' && line[1] == '\r' {
			r.done = true
			return nil
		}
		if line[0] == '.' {
			line = line[1:]
		}
	}
	lineLen := r.lineLen + len(orig)
	endsCRLF := full && (len(orig) >= 2 && orig[len(orig)-2] == '\r' || len(orig) == 1 && r.cr)
	r.bol, r.cr = endsCRLF, orig[len(orig)-1] == '\r'
	if full {
		r.lineLen = 0
	} else {
		r.lineLen = lineLen
	}
	if r.discard {
		return nil
	}
	if lineLen-lineEnd(full, endsCRLF) > c.srv.MaxLineLength {
		return ErrLineTooLong
	}
	r.n += int64(len(line))
	if r.n > r.max {
		return ErrTooBig
	}
	r.line = line
	return nil
}

// lineEnd is the length of the line ending counted in a line's length:
// CRLF, a bare LF, or none yet (the line goes on in the next slice).
func lineEnd(full, crlf bool) int {
	switch {
	case crlf:
		return 2
	case full:
		return 1
	}
	return 0
}

// drain reads the rest of the message, without limits, so the next
// command is read from the right place.
func (r *dotReader) drain() {
	r.discard, r.line = true, nil
	for !r.done {
		if err := r.next(); err != nil {
			r.err = err
			return
		}
	}
}

// bdatReader reads a message sent in BDAT chunks (RFC 3030). The chunks
// come in on the connection's goroutine: when one is used up, the reader
// acknowledges it and reads the next command itself, so the transfer can
// never outlive its transaction.
type bdatReader struct {
	c       *conn
	remain  int64 // bytes of the current chunk still to read
	last    bool  // the current chunk is the LAST one
	total   int64 // the declared sizes of all chunks so far
	eof     bool  // io.EOF has been returned
	err     error // sticky
	pending []byte
}

func (r *bdatReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	for r.remain == 0 {
		if r.last {
			r.eof = true
			return 0, io.EOF
		}
		r.c.reply(250, EnhancedCode{2, 0, 0}, "Chunk received, "+strconv.FormatInt(r.total, 10)+" octets in all")
		if err := r.nextChunk(); err != nil {
			r.err = err
			return 0, err
		}
	}
	if int64(len(p)) > r.remain {
		p = p[:r.remain]
	}
	if r.c.br.Buffered() == 0 {
		if err := r.c.flush(); err != nil {
			r.err = &gone{err}
			return 0, r.err
		}
	}
	n, err := r.c.br.Read(p)
	r.remain -= int64(n)
	r.c.consumed(n)
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		r.err = &gone{err} // the chunk was cut short: never a whole message
		if n > 0 {
			return n, nil
		}
		return 0, r.err
	}
	return n, nil
}

// nextChunk waits for the command after a chunk: another BDAT continues
// the transfer, NOOP is answered, and RSET, QUIT, HELO or EHLO end it
// (they run once the Session has returned). Anything else is out of
// sequence while a transfer is open.
func (r *bdatReader) nextChunk() error {
	c := r.c
	for {
		line, err := c.readLine()
		if err == errLineTooLong {
			if !c.syntaxError(500, EnhancedCode{5, 5, 2}, "Line too long") {
				return &gone{errTooManyErrors}
			}
			continue
		}
		if err != nil {
			return err
		}
		verb, arg := line, []byte(nil)
		if i := bytes.IndexByte(line, ' '); i >= 0 {
			verb, arg = line[:i], bytes.TrimSpace(line[i+1:])
		}
		switch string(upper(verb)) {
		case "BDAT":
			size, last, ok := parseBDAT(arg)
			if !ok {
				// The chunk size is unknown, so its bytes cannot be skipped.
				c.reply(501, EnhancedCode{5, 5, 4}, "Syntax: BDAT size [LAST]")
				return &gone{errors.New("malformed BDAT command inside a transfer")}
			}
			r.remain, r.last = size, last
			if size > c.srv.MaxMessageBytes-r.total { // no overflow: total <= max

				return ErrTooBig
			}
			r.total += size
			return nil
		case "NOOP":
			c.reply(250, EnhancedCode{2, 0, 0}, "OK")
		case "RSET", "QUIT", "EHLO", "HELO":
			r.pending = append([]byte(nil), line...)
			return ErrAborted
		default:
			if !c.syntaxError(503, EnhancedCode{5, 5, 1}, "BDAT transfer in progress: send BDAT, RSET or QUIT") {
				return &gone{errTooManyErrors}
			}
		}
	}
}

var errTooManyErrors = errors.New("too many errors")

func (c *conn) bdat(arg []byte) bool {
	size, last, ok := parseBDAT(arg)
	if !ok {
		return c.syntaxError(501, EnhancedCode{5, 5, 4}, "Syntax: BDAT size [LAST]")
	}
	// A refused chunk still follows its command (RFC 3030 §3): it is
	// skipped after the reply is sent, so the client hears at once.
	if ready, keep := c.readyForData(); !ready {
		return c.skip(size) && keep
	}
	if size > c.srv.MaxMessageBytes {
		c.reply(552, EnhancedCode{5, 3, 4}, "Message too big")
		c.endTx()
		return c.skip(size)
	}
	// One data deadline for the whole transfer, renewed only per DataBlock
	// received: the commands between chunks do not renew it, or a client
	// sending one byte per BDAT could hold the connection for ever.
	c.startData()
	c.inData = true
	r := &bdatReader{c: c, remain: size, last: last, total: size}
	err := c.sess.Data(r)
	c.inData = false
	if g := asGone(r.err); g != nil {
		c.endTx()
		c.readFailed(g)
		return false
	}
	if r.pending != nil {
		// The transfer ended with RSET, QUIT, HELO or EHLO: the last chunk
		// was acknowledged, and the command gets its own reply.
		c.endTx()
		return c.handle(r.pending)
	}
	c.endOfMessage(r.err, err, r.eof)
	// What the Session left unread of the chunk (it stopped early, or the
	// chunk broke the size limit) is skipped once the reply is out.
	return c.skip(r.remain)
}

// skip reads and drops n bytes of chunk data; false: the client is gone.
func (c *conn) skip(n int64) bool {
	if n == 0 {
		return true
	}
	if err := c.flush(); err != nil {
		return false
	}
	c.startData()
	for n > 0 {
		k, err := c.br.Discard(int(min(n, DataBlock)))
		n -= int64(k)
		c.consumed(k)
		if err != nil {
			c.readFailed(err)
			return false
		}
	}
	return true
}

func parseBDAT(arg []byte) (size int64, last bool, ok bool) {
	f := bytes.Fields(arg)
	if len(f) == 0 || len(f) > 2 {
		return 0, false, false
	}
	for _, ch := range f[0] {
		if ch < '0' || ch > '9' {
			return 0, false, false
		}
	}
	size, err := strconv.ParseInt(string(f[0]), 10, 64)
	if err != nil {
		return 0, false, false
	}
	if len(f) == 2 {
		if !bytes.EqualFold(f[1], []byte("LAST")) {
			return 0, false, false
		}
		last = true
	}
	return size, last, true
}

// cutPrefixFold removes prefix (ASCII, any case) and the spaces after it.
func cutPrefixFold(b []byte, prefix string) ([]byte, bool) {
	if len(b) < len(prefix) || !bytes.EqualFold(b[:len(prefix)], []byte(prefix)) {
		return nil, false
	}
	return bytes.TrimLeft(b[len(prefix):], " "), true
}

// parsePath reads "<address> params..." (RFC 5321 §4.1.2). A source
// route ("<@a,@b:user@c>") is dropped, as §C allows. The address may not
// hold spaces, angle brackets, control characters or invalid UTF-8: it
// goes upstream again inside a command line.
func parsePath(b []byte) (addr string, params [][]byte, err error) {
	if len(b) == 0 || b[0] != '<' {
		return "", nil, errBadPath
	}
	end := bytes.IndexByte(b, '>')
	if end < 0 {
		return "", nil, errBadPath
	}
	a, rest := b[1:end], b[end+1:]
	if len(rest) > 0 && rest[0] != ' ' {
		return "", nil, errBadPath
	}
	if len(a) > 0 && a[0] == '@' {
		i := bytes.IndexByte(a, ':')
		if i < 0 {
			return "", nil, errBadPath
		}
		a = a[i+1:]
	}
	if len(a) > 512 || !utf8.Valid(a) {
		return "", nil, errBadPath
	}
	for _, ch := range a {
		if ch <= ' ' || ch == 0x7f || ch == '<' {
			return "", nil, errBadPath
		}
	}
	return string(a), bytes.Fields(rest), nil
}

var errBadPath = errors.New("smtpd: bad address syntax")

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
