package relay

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"strings"
	"time"

	"github.com/sealgate/sealgate/internal/deadline"
)

// client is one upstream SMTP connection. It pipelines MAIL, RCPT and
// DATA when upstream offers PIPELINING (RFC 2920) and dot-stuffs the body
// a line at a time (dotWriter); replies are parsed by net/textproto. It
// replaced go-smtp's client, whose DATA writer moves the body one byte at
// a time and which sends each command only after the previous reply:
// together about a quarter of the gateway's CPU at 100 KiB (bench/README.md).
type client struct {
	conn net.Conn // the TCP connection
	nc   net.Conn // conn, or TLS over it
	br   *bufio.Reader
	bw   *bufio.Writer
	tr   *textproto.Reader
	ext  map[string]string // EHLO keywords (upper case) and their parameters
	tls  bool
	dot  dotWriter
	// rd, wd: the read and write deadlines in force
	rd, wd deadline.Lazy
}

func newClient(conn net.Conn) *client {
	c := &client{conn: conn, nc: conn}
	c.br = bufio.NewReaderSize(conn, 4<<10)
	c.bw = bufio.NewWriterSize(conn, 32<<10)
	c.tr = textproto.NewReader(c.br)
	return c
}

// deadline bounds the next exchange: reads and writes must each end
// within d. Deadlines are renewed lazily (package deadline), so d may end
// up to 1/16 of it early; a pooled connection then moves the runtime's
// timers about once per message instead of at every step.
func (c *client) deadline(d time.Duration) {
	if at, set := c.rd.Next(d); set {
		_ = c.nc.SetReadDeadline(at)
	}
	c.writeDeadline(d)
}

// writeDeadline bounds the next write.
func (c *client) writeDeadline(d time.Duration) {
	if at, set := c.wd.Next(d); set {
		_ = c.nc.SetWriteDeadline(at)
	}
}

// cmd sends one command and reads its reply, which must have code want.
func (c *client) cmd(want int, line string) (string, error) {
	c.bw.WriteString(line)
	c.bw.WriteString("\r\n")
	if err := c.bw.Flush(); err != nil {
		return "", err
	}
	_, msg, err := c.tr.ReadResponse(want)
	return msg, err
}

// greet reads the greeting and says EHLO (HELO if EHLO is refused).
func (c *client) greet(hostname string) error {
	if _, _, err := c.tr.ReadResponse(220); err != nil {
		return fmt.Errorf("greeting: %w", err)
	}
	return c.hello(hostname)
}

func (c *client) hello(hostname string) error {
	msg, err := c.cmd(250, "EHLO "+hostname)
	var te *textproto.Error
	if errors.As(err, &te) && te.Code/100 == 5 {
		c.ext = map[string]string{}
		if _, err := c.cmd(250, "HELO "+hostname); err != nil {
			return fmt.Errorf("HELO: %w", err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("EHLO: %w", err)
	}
	c.ext = map[string]string{}
	lines := strings.Split(msg, "\n")
	for _, l := range lines[1:] {
		k, v, _ := strings.Cut(l, " ")
		c.ext[strings.ToUpper(k)] = v
	}
	return nil
}

func (c *client) has(ext string) bool {
	_, ok := c.ext[ext]
	return ok
}

// startTLS switches to TLS and says EHLO again (RFC 3207).
func (c *client) startTLS(cfg *tls.Config, hostname string) error {
	if _, err := c.cmd(220, "STARTTLS"); err != nil {
		return err
	}
	tc := tls.Client(c.conn, cfg)
	if err := tc.Handshake(); err != nil {
		return err
	}
	c.nc, c.tls = tc, true
	c.br.Reset(tc)
	c.bw.Reset(tc)
	return c.hello(hostname)
}

// open sends MAIL, every RCPT and DATA — in one write when upstream
// pipelines — and checks each reply. Any refusal is an error: the caller
// closes the connection, so nothing of the transaction survives.
func (c *client) open(from string, utf8 bool, rcpts []string) error {
	mail := "MAIL FROM:<" + from + ">"
	if c.has("8BITMIME") {
		mail += " BODY=8BITMIME"
	}
	if utf8 {
		mail += " SMTPUTF8"
	}
	lines := make([]string, 0, len(rcpts)+2)
	lines = append(lines, mail)
	for _, r := range rcpts {
		lines = append(lines, "RCPT TO:<"+r+">")
	}
	lines = append(lines, "DATA")
	names := func(i int) string {
		switch {
		case i == 0:
			return "MAIL FROM"
		case i == len(lines)-1:
			return "DATA"
		}
		return "RCPT TO " + rcpts[i-1]
	}
	want := func(i int) int {
		if i == len(lines)-1 {
			return 354
		}
		return 25 // 250 or 251 (RFC 5321 §3.4)
	}
	if c.has("PIPELINING") {
		for _, l := range lines {
			c.bw.WriteString(l)
			c.bw.WriteString("\r\n")
		}
		if err := c.bw.Flush(); err != nil {
			return fmt.Errorf("%s: %w", names(0), err)
		}
		for i := range lines {
			if _, _, err := c.tr.ReadResponse(want(i)); err != nil {
				return fmt.Errorf("%s: %w", names(i), err)
			}
		}
	} else {
		for i, l := range lines {
			if _, err := c.cmd(want(i), l); err != nil {
				return fmt.Errorf("%s: %w", names(i), err)
			}
		}
	}
	c.dot = dotWriter{w: c.bw, bol: true}
	return nil
}

// errUnexpectedReply: upstream said something nobody asked for. Its next
// reply could then belong to anything, so the transaction fails.
var errUnexpectedReply = errors.New("upstream sent a reply that was not asked for")

// clean reports whether upstream has sent nothing beyond what was read.
func (c *client) clean() bool { return c.br.Buffered() == 0 }

// finish ends the body with the final dot and returns upstream's reply.
// A reply that arrived before the dot is not taken for the dot's.
func (c *client) finish() (string, error) {
	if !c.clean() {
		return "", errUnexpectedReply
	}
	c.dot.close()
	if err := c.bw.Flush(); err != nil {
		return "", err
	}
	_, msg, err := c.tr.ReadResponse(250)
	return msg, err
}

func (c *client) quit(d time.Duration) {
	c.deadline(d)
	_, _ = c.cmd(221, "QUIT")
	_ = c.nc.Close()
}

func (c *client) close() error { return c.nc.Close() }

// dotWriter writes a message body for DATA: a dot is added to every line
// that starts with one, and every bare CR or LF becomes CRLF, so only the
// writer's own final CRLF.CRLF can end the message upstream. It scans
// for line ends with bytes.IndexByte and copies whole runs.
type dotWriter struct {
	w   *bufio.Writer
	bol bool // at the start of a line
	cr  bool // a CR was written; its LF is due
}

func (d *dotWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if d.cr {
			d.w.WriteByte('\n')
			d.cr, d.bol = false, true
			if p[0] == '\n' {
				p = p[1:]
				continue
			}
		}
		if d.bol && p[0] == '.' {
			d.w.WriteByte('.')
		}
		d.bol = false
		lf := bytes.IndexByte(p, '\n')
		end := len(p)
		if lf >= 0 {
			end = lf
		}
		if cr := bytes.IndexByte(p[:end], '\r'); cr >= 0 {
			d.w.Write(p[:cr])
			d.w.WriteByte('\r')
			d.cr = true
			p = p[cr+1:]
			continue
		}
		d.w.Write(p[:end])
		if lf < 0 {
			break
		}
		d.w.WriteString("\r\n")
		d.bol = true
		p = p[lf+1:]
	}
	// bufio.Writer keeps the first write error and returns it from then on.
	if _, err := d.w.Write(nil); err != nil {
		return 0, err
	}
	return n, nil
}

// close ends the last line and writes the end-of-data line.
func (d *dotWriter) close() {
	if d.cr {
		d.w.WriteByte('\n')
		d.cr, d.bol = false, true
	}
	if !d.bol {
		d.w.WriteString("\r\n")
	}
	d.w.WriteString(".\r\n")
}
