package smtpd_test

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sealgate/sealgate/gateway/smtpd"
)

// FuzzDotReader sends body as DATA (closed by CRLF.CRLF if it has no end
// marker of its own) through a Server, in writes of split bytes, and
// compares what the Session read with refDot.
func FuzzDotReader(f *testing.F) {
	for _, seed := range []string{
		"",
		".\r\n",
		"\r\n.\r\n",
		"..\r\n.\r\n",
		"a\r\n..b\r\n.c\r\n",
		"x\n.\nMAIL FROM:<evil@x>\r\n",
		"x\n.\r\ny\r.\rz\r\n.\rw\r\n\x00.\r\n",
		"x\r\n.\r\nQUIT\r\n",
		"\r\r\n.\r\r\n..\r\n",
		"no end at all",
		strings.Repeat("y", 16383) + "\r\n.\r\n",
		strings.Repeat("y", 16383) + "\r.\r\n",
		strings.Repeat("y", 16384) + ".\r\n",
		"." + strings.Repeat("z", 20000) + "\r\n..\r\n",
	} {
		f.Add([]byte(seed), uint16(0))
		f.Add([]byte(seed), uint16(1))
		f.Add([]byte(seed), uint16(7))
	}
	be := newBackend()
	ts := startServer(f, be, func(s *smtpd.Server) {
		s.MaxMessageBytes = 1 << 24
		s.MaxLineLength = 1 << 24
		s.DataTimeout = 2 * time.Second
	})
	var seq atomic.Int64
	f.Fuzz(func(t *testing.T, body []byte, split uint16) {
		stream := body
		want, n, ok := refDot(stream)
		if !ok {
			stream = append(append([]byte(nil), body...), "\r\n.\r\n"...)
			want, n, _ = refDot(stream)
		}
		stream = stream[:n]
		from := fmt.Sprintf("f%d@x", seq.Add(1))

		c := dialGreeted(t, ts.addr)
		c.write("EHLO fuzz\r\nMAIL FROM:<" + from + ">\r\nRCPT TO:<r@y>\r\nDATA\r\n")
		for _, w := range []string{"250 ", "250 ", "250 ", "354 "} {
			c.expect(w)
		}
		piece := len(stream)
		if split > 0 {
			piece = max(int(split), len(stream)/64)
		}
		for rest := stream; len(rest) > 0; {
			k := min(piece, len(rest))
			c.write(string(rest[:k]))
			rest = rest[k:]
		}
		c.write("QUIT\r\n")
		c.expect("250 2.0.0")
		c.expect("221 ")

		var got *msg
		for _, m := range be.take() {
			if m.From == from {
				got = &m
			}
		}
		if got == nil {
			t.Fatal("the Session saw no message")
		}
		if got.Err != io.EOF {
			t.Fatalf("the reader ended with %v", got.Err)
		}
		if !bytes.Equal(got.Body, want) {
			t.Fatalf("DATA %q:\nsession read %q\nreference   %q", stream, got.Body, want)
		}
	})
}

var replyLine = regexp.MustCompile(`^[2-5][0-9][0-9][ -][^\r\n]*\r\n$`)

// FuzzServer feeds arbitrary client bytes to a Server: it must not panic
// or hang, every reply is a well-formed reply line, and no Session gets
// more than MaxMessageBytes or overlapping calls.
func FuzzServer(f *testing.F) {
	for _, seed := range []string{
		"",
		"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n",
		"HELO x\r\nMAIL FROM:<a@b> SIZE=10 BODY=8BITMIME SMTPUTF8\r\nRCPT TO:<c@d>\r\nRCPT TO:<e@f>\r\nDATA\r\n..x\r\n.\r\n",
		"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 5\r\nhelloRSET\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 3 LAST\r\nabcQUIT\r\n",
		"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 5\r\nhelloNOOP\r\nMAIL FROM:<x@y>\r\nBDAT 1 LAST\r\n!",
		"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 99999999999999999999\r\n",
		"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 10 LAST\r\nhello",
		"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 5\r\nhelloBDAT x\r\n",
		"EHLO x\r\nSTARTTLS\r\nMAIL FROM:<a@b>\r\n",
		"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nx\n.\nMAIL FROM:<e@f>\r\n.\r\nRSET\r\n",
		"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n" + strings.Repeat("z", 300) + "\r\n.\r\nNOOP\r\n",
		"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n" + strings.Repeat("line\r\n", 1000) + ".\r\n",
		"FOO\r\nBAR\r\n\r\n\x00\r\nEXPN\r\nAUTH PLAIN\r\nVRFY\r\nHELP\r\n",
		"EHLO\r\nHELO\r\nEHLO " + strings.Repeat("h", 500) + "\r\n",
		"ehlo x\nmail from:<a@b>\nrcpt to:<c@d>\ndata\nbody\n.\r\n",
		"EHLO x\r\nMAIL FROM:<@r1,@r2:a@b>\r\nRCPT TO:<c@d> NOTIFY=NEVER\r\nRCPT TO:<\xff@d>\r\nMAIL FROM:<\r\n",
		"\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	cert, _ := testCert(f)
	be := newBackend()
	const maxBytes = 4096
	ts := startServer(f, be, func(s *smtpd.Server) {
		s.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
		s.MaxMessageBytes = maxBytes
		s.MaxLineLength = 200
		s.MaxRecipients = 3
		s.MaxErrors = 5
	})
	f.Fuzz(func(t *testing.T, input []byte) {
		c := dial(t, ts.addr)
		werr := make(chan error, 1)
		go func() {
			_ = c.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
			_, err := c.nc.Write(input)
			_ = c.nc.(*net.TCPConn).CloseWrite()
			werr <- err
		}()
		_ = c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		out, err := io.ReadAll(c.br)
		var ne net.Error
		switch {
		case err == nil:
		case errors.As(err, &ne) && ne.Timeout():
			t.Fatalf("the server did not end the connection (read %q)", trunc(string(out)))
		case errors.Is(err, syscall.ECONNRESET):
			// The server hung up with input unread: the last line may be cut.
			if i := bytes.LastIndex(out, []byte("\r\n")); i >= 0 {
				out = out[:i+2]
			} else {
				out = nil
			}
		default:
			t.Fatalf("read: %v", err)
		}
		<-werr
		lines := strings.SplitAfter(string(out), "\r\n")
		if lines[len(lines)-1] == "" {
			lines = lines[:len(lines)-1]
		}
		if len(lines) == 0 || !strings.HasPrefix(lines[0], "220 ") {
			t.Fatalf("no greeting: %q", trunc(string(out)))
		}
		for _, l := range lines {
			if !replyLine.MatchString(l) {
				t.Fatalf("malformed reply line %q in %q", l, trunc(string(out)))
			}
			if strings.HasPrefix(l, "220 2.0.0") {
				break // STARTTLS: what follows is TLS
			}
		}
		if be.overlap.Load() {
			t.Fatal("Session methods ran concurrently")
		}
		for _, m := range be.take() {
			if len(m.Body) > maxBytes {
				t.Fatalf("a Session read %d bytes, over MaxMessageBytes %d", len(m.Body), maxBytes)
			}
		}
		if strings.Contains(ts.logs.String(), "panic") {
			t.Fatalf("the server panicked:\n%s", ts.logs.String())
		}
	})
}
