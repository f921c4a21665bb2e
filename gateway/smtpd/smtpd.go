// Package smtpd is sealgate's SMTP server engine: the protocol side of the
// gateway's listener (RFC 5321 with PIPELINING, 8BITMIME, SMTPUTF8,
// CHUNKING, SIZE, ENHANCEDSTATUSCODES and STARTTLS).
//
// It exists because go-smtp's server, which sealgate used before, runs
// each BDAT transfer in a goroutine that reads the connection's session
// and result channel after a reset or hang-up may have replaced them (a
// misrouted reply, a possible duplicate, a recovered panic), and moves
// DATA one byte at a time with a write system call per reply. Here every
// command, DATA and every BDAT chunk are handled on the connection's own
// goroutine, in order: a transfer cannot outlive its transaction. Replies
// are buffered and written when the server is about to wait for input,
// so a pipelined group of commands costs one write, and DATA is scanned
// a line at a time.
//
// The engine knows nothing of policy or encryption: a Backend gets the
// envelope and the message stream through a Session.
package smtpd

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
)

// EnhancedCode is an RFC 3463 status code, e.g. {5, 7, 1}.
type EnhancedCode [3]int

// Error is a reply a Session gives the client. Any other error a Session
// returns is answered 451 4.3.0: the sender retries (fail closed).
type Error struct {
	Code     int
	Enhanced EnhancedCode
	Message  string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%d %d.%d.%d %s", e.Code, e.Enhanced[0], e.Enhanced[1], e.Enhanced[2], e.Message)
}

// Temporary reports whether the sender should retry (a 4xx reply).
func (e *Error) Temporary() bool { return e.Code/100 == 4 }

// MailOptions are the MAIL FROM parameters the server accepted.
type MailOptions struct {
	Body string // "7BIT", "8BITMIME", or "" when not given
	Size int64  // the SIZE= declared by the client, 0 when not given
	UTF8 bool   // SMTPUTF8 (RFC 6531)
}

// Backend opens a Session for each accepted connection.
type Backend interface {
	NewSession(c *Conn) (Session, error)
}

// Session receives one connection's transactions, always from the
// connection's goroutine: its methods never run concurrently.
type Session interface {
	// Mail starts a transaction.
	Mail(from string, opts MailOptions) error
	// Rcpt adds a recipient; an error refuses this recipient only.
	Rcpt(to string) error
	// Data reads the message from r. DATA arrives dot-unstuffed, BDAT
	// chunks as sent. r returns io.EOF only after the whole message has
	// arrived; any other error (a reset, a hang-up, a size or line limit)
	// means the message is incomplete and Data must not act on it. A Data
	// that returns nil without having read io.EOF is answered 451.
	Data(r io.Reader) error
	// Reset ends the transaction (RSET, EHLO, STARTTLS, end of message).
	Reset()
	// Logout is called once when the connection ends.
	Logout()
}

// Errors a Data reader returns when the message cannot be complete.
var (
	// ErrTooBig: the message exceeds Server.MaxMessageBytes.
	ErrTooBig = &Error{Code: 552, Enhanced: EnhancedCode{5, 3, 4}, Message: "Message too big"}
	// ErrLineTooLong: a DATA line exceeds Server.MaxLineLength.
	ErrLineTooLong = &Error{Code: 554, Enhanced: EnhancedCode{5, 6, 0}, Message: "Message line too long"}
	// ErrAborted: the client reset the transaction or hung up mid-message.
	ErrAborted = errors.New("smtpd: message transfer aborted by the client")
)

// Conn is what a Backend may know about a connection.
type Conn struct {
	c *conn
}

// RemoteAddr is the client's address.
func (c *Conn) RemoteAddr() net.Addr { return c.c.nc.RemoteAddr() }

// TLS returns the TLS state once STARTTLS has happened.
func (c *Conn) TLS() (tls.ConnectionState, bool) {
	if tc, ok := c.c.nc.(*tls.Conn); ok {
		return tc.ConnectionState(), true
	}
	return tls.ConnectionState{}, false
}

// Hello is the name the client gave in HELO or EHLO ("" before it did).
func (c *Conn) Hello() string { return c.c.helo }
