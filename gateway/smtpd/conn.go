package smtpd

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sealgate/sealgate/internal/deadline"
)

// conn is one client connection. Everything but state and raw is touched
// only by the connection's goroutine.
type conn struct {
	srv  *Server
	raw  net.Conn // the accepted connection: Shutdown closes it
	nc   net.Conn // raw, or the TLS connection over it after STARTTLS
	br   *bufio.Reader
	bw   *bufio.Writer
	pub  Conn
	sess Session
	// state is connBusy, connIdle (waiting for a command outside a
	// transaction) or connShut (Shutdown closed it while idle). The moves
	// out of connIdle are compare-and-swaps, so Shutdown never closes a
	// connection that has just taken a command it is going to run.
	state atomic.Int32

	out    deadlineWriter // under bw: every write to the client has a deadline
	rd, wd deadline.Lazy  // the read and write deadlines in force (renewed lazily)
	helo   string
	tls    bool
	errs   int
	junk   int  // NOOP, RSET, VRFY, HELP and refused DATA/BDAT since the last message
	inTx   bool // MAIL accepted
	utf8   bool // the transaction's MAIL had SMTPUTF8
	inData bool // a BDAT transfer is open: its data deadline also bounds the commands between chunks
	rcpts  int  // recipients accepted
	dataIn int  // bytes of message data read since the deadline was renewed

	scratch []byte
}

var (
	readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 16<<10) }}
	writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4<<10) }}
)

const (
	connBusy int32 = iota
	connIdle
	connShut
)

func newConn(s *Server, nc net.Conn) *conn {
	c := &conn{srv: s, raw: nc, nc: nc, scratch: make([]byte, 0, 256)}
	c.br = readers.Get().(*bufio.Reader)
	c.br.Reset(nc)
	c.out.c = c
	c.bw = writers.Get().(*bufio.Writer)
	c.bw.Reset(&c.out)
	c.pub.c = c
	return c
}

// deadlineWriter writes to the connection (plain or TLS, whichever it is
// now) with a fresh WriteTimeout for every write, including the ones
// bufio makes on its own when a long run of replies fills its buffer.
type deadlineWriter struct{ c *conn }

func (w *deadlineWriter) Write(p []byte) (int, error) {
	if at, set := w.c.wd.Next(w.c.srv.WriteTimeout); set {
		_ = w.c.nc.SetWriteDeadline(at)
	}
	return w.c.nc.Write(p)
}

// readDeadline gives the next read timeout from now. Deadlines are
// renewed lazily (package deadline): a timeout may end up to 1/16 of it
// early, and a dialogue of a dozen commands moves the runtime's timer a
// few times instead of once per command.
func (c *conn) readDeadline(timeout time.Duration) {
	if at, set := c.rd.Next(timeout); set {
		_ = c.nc.SetReadDeadline(at)
	}
}

// junkMax bounds the commands that move no mail (NOOP, RSET, VRFY, HELP,
// refused DATA or BDAT) between two messages, as Postfix's
// smtpd_junk_command_limit does: without it a client could hold a
// connection slot for ever.
const junkMax = 100

// junkCommand counts one such command before it runs; false: too many,
// answered 421, and the connection is to be closed.
func (c *conn) junkCommand() bool {
	c.junk++
	if c.junk > junkMax {
		c.reply(421, EnhancedCode{4, 7, 0}, c.srv.Hostname+" Too many commands without mail, closing connection")
		return false
	}
	return true
}

// errLineTooLong is a command line over the limit; errGone a read that
// failed (EOF, reset, timeout), recorded so the connection ends.
var errLineTooLong = errors.New("smtpd: line too long")

type gone struct{ err error }

func (g *gone) Error() string { return "smtpd: client connection: " + g.err.Error() }
func (g *gone) Unwrap() error { return g.err }

func (c *conn) serve() {
	defer c.finish()
	defer func() {
		if p := recover(); p != nil {
			c.srv.Logger.Error("panic in SMTP connection; closed", "remote", c.raw.RemoteAddr().String(),
				"panic", p, "stack", string(debug.Stack()))
			c.reply(421, EnhancedCode{4, 3, 0}, c.srv.Hostname+" Local error, closing connection")
			c.flush()
		}
	}()
	sess, err := c.srv.Backend.NewSession(&c.pub)
	if err != nil {
		c.srv.Logger.Warn("session refused", "remote", c.raw.RemoteAddr().String(), "err", err)
		c.reply(421, EnhancedCode{4, 3, 0}, c.srv.Hostname+" Service not available, closing connection")
		c.flush()
		return
	}
	c.sess = sess
	c.reply(220, EnhancedCode{}, c.srv.Hostname+" ESMTP sealgate")
	for {
		if !c.inTx && c.srv.closing.Load() {
			c.reply(421, EnhancedCode{4, 3, 2}, c.srv.Hostname+" Service shutting down, closing connection")
			c.flush()
			return
		}
		if !c.inTx {
			// Replies go out before the connection counts as idle: Shutdown
			// closes idle connections, and a 250 still in the buffer would
			// be lost with it (the client would send the message again).
			if err := c.flush(); err != nil {
				return
			}
			c.state.Store(connIdle)
		}
		line, err := c.readLine()
		if !c.inTx && !c.state.CompareAndSwap(connIdle, connBusy) {
			return // Shutdown closed the connection
		}
		if err == errLineTooLong {
			if !c.syntaxError(500, EnhancedCode{5, 5, 2}, "Line too long") {
				c.flush()
				return
			}
			continue
		}
		if err != nil {
			c.readFailed(err)
			return
		}
		if !c.handle(line) {
			c.flush()
			return
		}
	}
}

func (c *conn) finish() {
	if c.sess != nil {
		if c.inTx {
			c.sess.Reset()
		}
		c.sess.Logout()
	}
	_ = c.nc.Close()
	_ = c.raw.Close()
	c.br.Reset(nil)
	readers.Put(c.br)
	c.bw.Reset(nil)
	writers.Put(c.bw)
	c.srv.untrack(c)
}

// readFailed ends the connection after a failed read: a timeout is
// answered 421 (RFC 5321 §4.5.3.2), anything else means the client left.
func (c *conn) readFailed(err error) {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		c.reply(421, EnhancedCode{4, 4, 2}, c.srv.Hostname+" Timeout, closing connection")
		c.flush()
	}
}

// lineBuffered reports whether a whole line is already in the buffer.
func (c *conn) lineBuffered() bool {
	n := c.br.Buffered()
	if n == 0 {
		return false
	}
	b, _ := c.br.Peek(n)
	return bytes.IndexByte(b, '\n') >= 0
}

// readLine returns the next command line without its line ending (CRLF,
// or a bare LF). Replies written so far are sent before it waits.
func (c *conn) readLine() ([]byte, error) {
	if !c.lineBuffered() {
		if err := c.flush(); err != nil {
			return nil, err
		}
		if !c.inData {
			c.readDeadline(c.srv.CommandTimeout)
		}
	}
	line, err := c.br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		for err == bufio.ErrBufferFull {
			_, err = c.br.ReadSlice('\n')
		}
		if err != nil {
			return nil, &gone{err}
		}
		return nil, errLineTooLong
	}
	if err != nil {
		// A line cut short by EOF or a timeout is never run as a command.
		return nil, &gone{err}
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	if len(line) > c.srv.MaxLineLength {
		return nil, errLineTooLong
	}
	return line, nil
}

// flush sends the buffered replies (deadlineWriter bounds each write).
func (c *conn) flush() error {
	if c.bw.Buffered() == 0 {
		return nil
	}
	return c.bw.Flush()
}

// reply buffers one reply line. A zero enh writes none (greeting, 354).
// CR and LF in text become spaces: a reply is always one line.
func (c *conn) reply(code int, enh EnhancedCode, text string) {
	c.replyLine(code, ' ', enh, text)
}

func (c *conn) replyLine(code int, sep byte, enh EnhancedCode, text string) {
	b := strconv.AppendInt(c.scratch[:0], int64(code), 10)
	b = append(b, sep)
	if enh[0] != 0 {
		b = strconv.AppendInt(b, int64(enh[0]), 10)
		b = append(b, '.')
		b = strconv.AppendInt(b, int64(enh[1]), 10)
		b = append(b, '.')
		b = strconv.AppendInt(b, int64(enh[2]), 10)
		b = append(b, ' ')
	}
	start := len(b)
	b = append(b, text...)
	for i := start; i < len(b); i++ {
		if b[i] == '\r' || b[i] == '\n' {
			b[i] = ' '
		}
	}
	b = append(b, '\r', '\n')
	_, _ = c.bw.Write(b)
	c.scratch = b[:0]
}

// replyErr answers with err when it is an *Error, else 451 4.3.0.
func (c *conn) replyErr(err error) {
	var e *Error
	if errors.As(err, &e) {
		c.reply(e.Code, e.Enhanced, e.Message)
		return
	}
	c.reply(451, EnhancedCode{4, 3, 0}, "Local error in processing, try again later")
}

// syntaxError answers a bad command and counts it; false means the
// connection has had too many and is to be closed.
func (c *conn) syntaxError(code int, enh EnhancedCode, text string) bool {
	c.reply(code, enh, text)
	c.errs++
	max := c.srv.MaxErrors
	if max <= 0 {
		max = 10
	}
	if c.errs >= max {
		c.reply(421, EnhancedCode{4, 7, 0}, c.srv.Hostname+" Too many errors, closing connection")
		return false
	}
	return true
}

// endTx closes the transaction, if one is open.
func (c *conn) endTx() {
	if c.inTx {
		c.sess.Reset()
	}
	c.inTx, c.rcpts = false, 0
}

// handle runs one command line; false closes the connection.
func (c *conn) handle(line []byte) bool {
	verb, arg := line, []byte(nil)
	if i := bytes.IndexByte(line, ' '); i >= 0 {
		verb, arg = line[:i], bytes.TrimSpace(line[i+1:])
	}
	switch string(upper(verb)) {
	case "EHLO":
		return c.hello(arg, true)
	case "HELO":
		return c.hello(arg, false)
	case "MAIL":
		return c.mail(arg)
	case "RCPT":
		return c.rcpt(arg)
	case "DATA":
		return c.data(arg)
	case "BDAT":
		return c.bdat(arg)
	case "RSET":
		if !c.junkCommand() {
			return false
		}
		c.endTx()
		c.reply(250, EnhancedCode{2, 0, 0}, "OK")
	case "NOOP":
		if !c.junkCommand() {
			return false
		}
		c.reply(250, EnhancedCode{2, 0, 0}, "OK")
	case "QUIT":
		c.reply(221, EnhancedCode{2, 0, 0}, c.srv.Hostname+" Bye")
		return false
	case "STARTTLS":
		return c.startTLS(arg)
	case "VRFY":
		if !c.junkCommand() {
			return false
		}
		c.reply(252, EnhancedCode{2, 5, 0}, "Cannot VRFY user, but will accept message")
	case "HELP":
		if !c.junkCommand() {
			return false
		}
		c.reply(214, EnhancedCode{2, 0, 0}, "See RFC 5321")
	case "EXPN", "TURN", "ETRN", "AUTH", "SEND", "SOML", "SAML":
		return c.syntaxError(502, EnhancedCode{5, 5, 1}, "Command not implemented")
	default:
		return c.syntaxError(500, EnhancedCode{5, 5, 2}, "Syntax error, command unrecognized")
	}
	return true
}

func upper(b []byte) []byte {
	for i, ch := range b {
		if 'a' <= ch && ch <= 'z' {
			u := make([]byte, len(b))
			copy(u, b)
			for j := i; j < len(u); j++ {
				if 'a' <= u[j] && u[j] <= 'z' {
					u[j] -= 'a' - 'A'
				}
			}
			return u
		}
	}
	return b
}

func (c *conn) hello(arg []byte, ehlo bool) bool {
	if len(arg) == 0 {
		return c.syntaxError(501, EnhancedCode{5, 5, 4}, "Syntax: EHLO hostname")
	}
	if i := bytes.IndexByte(arg, ' '); i >= 0 {
		arg = arg[:i] // RFC 5321 has no arguments after the domain; ignore any
	}
	c.endTx() // a later EHLO resets the session like RSET (RFC 5321 §4.1.4)
	c.helo = string(arg)
	if !ehlo {
		c.reply(250, EnhancedCode{}, c.srv.Hostname)
		return true
	}
	lines := []string{
		c.srv.Hostname,
		"PIPELINING",
		"8BITMIME",
		"ENHANCEDSTATUSCODES",
		"CHUNKING",
		"SMTPUTF8",
		"SIZE " + strconv.FormatInt(c.srv.MaxMessageBytes, 10),
		"LIMITS RCPTMAX=" + strconv.Itoa(c.srv.MaxRecipients),
	}
	if c.srv.TLSConfig != nil && !c.tls {
		lines = append(lines, "STARTTLS")
	}
	for i, l := range lines {
		sep := byte('-')
		if i == len(lines)-1 {
			sep = ' '
		}
		c.replyLine(250, sep, EnhancedCode{}, l)
	}
	return true
}

func (c *conn) mail(arg []byte) bool {
	switch {
	case c.helo == "":
		return c.syntaxError(503, EnhancedCode{5, 5, 1}, "Send EHLO first")
	case c.inTx:
		return c.syntaxError(503, EnhancedCode{5, 5, 1}, "Nested MAIL command")
	}
	rest, ok := cutPrefixFold(arg, "FROM:")
	if !ok {
		return c.syntaxError(501, EnhancedCode{5, 5, 4}, "Syntax: MAIL FROM:<address>")
	}
	from, params, err := parsePath(rest)
	if err != nil {
		return c.syntaxError(501, EnhancedCode{5, 1, 7}, "Bad sender address syntax")
	}
	var opts MailOptions
	for _, p := range params {
		key, val, hasVal := bytes.Cut(p, []byte{'='})
		switch string(upper(key)) {
		case "SIZE":
			n, err := strconv.ParseInt(string(val), 10, 64)
			if !hasVal || err != nil || n < 0 {
				return c.syntaxError(501, EnhancedCode{5, 5, 4}, "Bad SIZE parameter")
			}
			if n > c.srv.MaxMessageBytes {
				c.reply(552, EnhancedCode{5, 3, 4}, "Message too big")
				return true
			}
			opts.Size = n
		case "BODY":
			switch v := string(upper(val)); v {
			case "7BIT", "8BITMIME":
				opts.Body = v
			default:
				return c.syntaxError(501, EnhancedCode{5, 5, 4}, "Unsupported BODY parameter")
			}
		case "SMTPUTF8":
			if hasVal {
				return c.syntaxError(501, EnhancedCode{5, 5, 4}, "SMTPUTF8 takes no value")
			}
			opts.UTF8 = true
		default:
			return c.syntaxError(555, EnhancedCode{5, 5, 4}, "Unsupported MAIL parameter")
		}
	}
	if !opts.UTF8 && !isASCII(from) {
		c.reply(553, EnhancedCode{5, 6, 7}, "Non-ASCII address requires SMTPUTF8")
		return true
	}
	if err := c.sess.Mail(from, opts); err != nil {
		c.replyErr(err)
		return true
	}
	c.inTx, c.rcpts, c.utf8 = true, 0, opts.UTF8
	c.reply(250, EnhancedCode{2, 1, 0}, "OK")
	return true
}

func (c *conn) rcpt(arg []byte) bool {
	if !c.inTx {
		return c.syntaxError(503, EnhancedCode{5, 5, 1}, "Send MAIL first")
	}
	rest, ok := cutPrefixFold(arg, "TO:")
	if !ok {
		return c.syntaxError(501, EnhancedCode{5, 5, 4}, "Syntax: RCPT TO:<address>")
	}
	to, params, err := parsePath(rest)
	if err != nil || to == "" {
		return c.syntaxError(501, EnhancedCode{5, 1, 3}, "Bad recipient address syntax")
	}
	if len(params) > 0 {
		return c.syntaxError(555, EnhancedCode{5, 5, 4}, "Unsupported RCPT parameter")
	}
	if !c.utf8 && !isASCII(to) {
		c.reply(553, EnhancedCode{5, 6, 7}, "Non-ASCII address requires SMTPUTF8")
		return true
	}
	if c.rcpts >= c.srv.MaxRecipients {
		c.reply(452, EnhancedCode{4, 5, 3}, "Too many recipients")
		return true
	}
	if err := c.sess.Rcpt(to); err != nil {
		c.replyErr(err)
		return true
	}
	c.rcpts++
	c.reply(250, EnhancedCode{2, 1, 5}, "OK")
	return true
}

// readyForData checks the state DATA and BDAT need. When not ready it has
// answered, and keep tells whether the connection stays open.
func (c *conn) readyForData() (ready, keep bool) {
	switch {
	case !c.inTx:
		return false, c.syntaxError(503, EnhancedCode{5, 5, 1}, "Send MAIL first")
	case c.rcpts == 0:
		if !c.junkCommand() {
			return false, false
		}
		c.reply(554, EnhancedCode{5, 5, 1}, "No valid recipients")
		return false, true
	}
	return true, true
}

// startData arms the data deadline (see Server.DataTimeout).
func (c *conn) startData() {
	c.dataIn = 0
	c.readDeadline(c.srv.DataTimeout)
}

// consumed counts message bytes read and renews the deadline per block.
func (c *conn) consumed(n int) {
	c.dataIn += n
	if c.dataIn >= DataBlock {
		c.dataIn = 0
		c.readDeadline(c.srv.DataTimeout)
	}
}

func (c *conn) data(arg []byte) bool {
	if len(arg) != 0 {
		return c.syntaxError(501, EnhancedCode{5, 5, 4}, "DATA takes no arguments")
	}
	if ready, keep := c.readyForData(); !ready {
		return keep
	}
	c.reply(354, EnhancedCode{}, "Start mail input; end with <CRLF>.<CRLF>")
	if err := c.flush(); err != nil {
		return false
	}
	c.startData()
	r := &dotReader{c: c, max: c.srv.MaxMessageBytes, bol: true}
	err := c.sess.Data(r)
	if !r.done && !isGone(r.err) {
		r.drain()
	}
	if g := asGone(r.err); g != nil {
		c.endTx()
		c.readFailed(g)
		return false
	}
	c.endOfMessage(r.err, err, r.eof)
	return true
}

// endOfMessage answers a message's last command and closes the
// transaction. readErr is the reader's own failure (a limit: the message
// never was complete), dataErr the Session's, eof whether the Session read
// the message to its end.
func (c *conn) endOfMessage(readErr, dataErr error, eof bool) {
	switch {
	case readErr != nil:
		c.replyErr(readErr)
	case dataErr != nil:
		c.replyErr(dataErr)
	case !eof:
		c.srv.Logger.Error("smtpd: session accepted a message it did not read to the end")
		c.replyErr(errors.New("incomplete read"))
	default:
		c.reply(250, EnhancedCode{2, 0, 0}, "OK")
		c.junk = 0
	}
	c.endTx()
}

func (c *conn) startTLS(arg []byte) bool {
	switch {
	case c.srv.TLSConfig == nil:
		return c.syntaxError(502, EnhancedCode{5, 5, 1}, "Command not implemented")
	case c.tls:
		return c.syntaxError(503, EnhancedCode{5, 5, 1}, "TLS already active")
	case len(arg) != 0:
		return c.syntaxError(501, EnhancedCode{5, 5, 4}, "STARTTLS takes no arguments")
	}
	c.reply(220, EnhancedCode{2, 0, 0}, "Ready to start TLS")
	if err := c.flush(); err != nil {
		return false
	}
	if n := c.br.Buffered(); n > 0 {
		// Plaintext sent behind STARTTLS must never run inside the TLS
		// session (CVE-2011-0411): it is dropped.
		_, _ = c.br.Discard(n)
		c.srv.Logger.Warn("commands pipelined after STARTTLS discarded", "remote", c.raw.RemoteAddr().String(), "bytes", n)
	}
	tc := tls.Server(c.raw, c.srv.TLSConfig)
	_ = tc.SetDeadline(time.Now().Add(c.srv.CommandTimeout))
	if err := tc.Handshake(); err != nil {
		c.srv.Logger.Debug("TLS handshake failed", "remote", c.raw.RemoteAddr().String(), "err", err)
		return false
	}
	_ = tc.SetReadDeadline(time.Time{}) // each read and write sets its own
	c.rd.Reset()
	c.wd.Reset()
	c.nc, c.tls = tc, true
	c.br.Reset(tc) // c.bw writes through c.out, which now uses tc
	c.endTx()
	c.helo = "" // RFC 3207: the client starts again with EHLO
	return true
}

func isGone(err error) bool { return asGone(err) != nil }

func asGone(err error) *gone {
	var g *gone
	if errors.As(err, &g) {
		return g
	}
	return nil
}

var _ io.Reader = (*dotReader)(nil)
