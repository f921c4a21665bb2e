package smtpd_test

// BenchmarkDATA compares this engine with go-smtp's server on the same
// work: one connection, b.N pipelined transactions (MAIL, RCPT, DATA,
// body, end of data), with a Session that copies the message to
// io.Discard. Compare with
//
//	go test -run '^$' -bench DATA -count 6 ./gateway/smtpd | benchstat -col /impl -
import (
	"bufio"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/sealgate/sealgate/gateway/smtpd"
)

// discardBackend is the smtpd side: read the message to its end.
type discardBackend struct{}

func (discardBackend) NewSession(*smtpd.Conn) (smtpd.Session, error) { return discardSession{}, nil }

type discardSession struct{}

func (discardSession) Mail(string, smtpd.MailOptions) error { return nil }
func (discardSession) Rcpt(string) error                    { return nil }
func (discardSession) Data(r io.Reader) error {
	_, err := io.Copy(io.Discard, r)
	return err
}
func (discardSession) Reset()  {}
func (discardSession) Logout() {}

// goSMTPBackend is the go-smtp side.
type goSMTPBackend struct{}

func (goSMTPBackend) NewSession(*gosmtp.Conn) (gosmtp.Session, error) { return goSMTPSession{}, nil }

type goSMTPSession struct{}

func (goSMTPSession) Reset()                                 {}
func (goSMTPSession) Logout() error                          { return nil }
func (goSMTPSession) Mail(string, *gosmtp.MailOptions) error { return nil }
func (goSMTPSession) Rcpt(string, *gosmtp.RcptOptions) error { return nil }
func (goSMTPSession) Data(r io.Reader) error {
	_, err := io.Copy(io.Discard, r)
	return err
}

// benchBody is a text message of about size bytes in 78-byte lines, some
// of them dot-stuffed, returned as sent on the wire (ending CRLF.CRLF)
// together with its length before stuffing.
func benchBody(size int) (wire []byte, n int) {
	var b strings.Builder
	b.WriteString("From: a@example.org\r\nTo: b@example.net\r\nSubject: benchmark\r\n\r\n")
	for i := 0; b.Len() < size-80; i++ {
		line := fmt.Sprintf("%06d %s", i, strings.Repeat("abcdefghij", 7))
		if i%10 == 0 {
			line = "." + line[1:]
		}
		b.WriteString(line + "\r\n")
	}
	msg := b.String()
	n = len(msg)
	wire = []byte(strings.ReplaceAll("\r\n"+msg, "\r\n.", "\r\n..")[2:] + ".\r\n")
	return wire, n
}

type benchServer struct {
	addr  string
	close func()
}

func startSmtpd(b *testing.B) benchServer {
	s := &smtpd.Server{
		Hostname:        "mx.test",
		MaxMessageBytes: 1 << 20,
		MaxRecipients:   10,
		MaxLineLength:   1000,
		CommandTimeout:  30 * time.Second,
		DataTimeout:     30 * time.Second,
		WriteTimeout:    30 * time.Second,
		Backend:         discardBackend{},
		Logger:          slog.New(slog.DiscardHandler),
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = s.Serve(l) }()
	return benchServer{addr: l.Addr().String(), close: func() { _ = s.Close() }}
}

func startGoSMTP(b *testing.B) benchServer {
	s := gosmtp.NewServer(goSMTPBackend{})
	s.Domain = "mx.test"
	s.MaxMessageBytes = 1 << 20
	s.MaxRecipients = 10
	s.ReadTimeout = 30 * time.Second
	s.WriteTimeout = 30 * time.Second
	s.AllowInsecureAuth = true
	s.ErrorLog = log.New(io.Discard, "", 0)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = s.Serve(l) }()
	return benchServer{addr: l.Addr().String(), close: func() { _ = s.Close() }}
}

func BenchmarkDATA(b *testing.B) {
	impls := []struct {
		name  string
		start func(*testing.B) benchServer
	}{
		{"smtpd", startSmtpd},
		{"go-smtp", startGoSMTP},
	}
	sizes := []struct {
		name string
		n    int
	}{
		{"4KiB", 4 << 10},
		{"100KiB", 100 << 10},
	}
	for _, impl := range impls {
		b.Run("impl="+impl.name, func(b *testing.B) {
			for _, size := range sizes {
				b.Run("size="+size.name, func(b *testing.B) {
					benchDATA(b, impl.start, size.n)
				})
			}
		})
	}
}

func benchDATA(b *testing.B, start func(*testing.B) benchServer, size int) {
	srv := start(b)
	defer srv.close()
	body, n := benchBody(size)
	tx := append([]byte("MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n"), body...)

	nc, err := net.Dial("tcp", srv.addr)
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(5 * time.Minute))
	br := bufio.NewReaderSize(nc, 64<<10)
	// readReply returns the reply's code, without allocating (the
	// client's allocations count in allocs/op too).
	readReply := func() (code [3]byte, err error) {
		for {
			l, err := br.ReadSlice('\n')
			if err != nil {
				return code, err
			}
			if len(l) < 4 {
				return code, fmt.Errorf("short reply line %q", l)
			}
			if l[3] == ' ' {
				return [3]byte(l[:3]), nil
			}
		}
	}
	code := func(s string) [3]byte { return [3]byte([]byte(s)) }
	if c, err := readReply(); err != nil || c != code("220") {
		b.Fatalf("greeting %q %v", c, err)
	}
	if _, err := nc.Write([]byte("EHLO bench.test\r\n")); err != nil {
		b.Fatal(err)
	}
	if c, err := readReply(); err != nil || c != code("250") {
		b.Fatalf("EHLO %q %v", c, err)
	}

	b.SetBytes(int64(n))
	b.ReportAllocs()
	b.ResetTimer()
	werr := make(chan error, 1)
	go func() {
		bw := bufio.NewWriterSize(nc, 64<<10)
		for range b.N {
			if _, err := bw.Write(tx); err != nil {
				werr <- err
				return
			}
		}
		werr <- bw.Flush()
	}()
	want := [4][3]byte{code("250"), code("250"), code("354"), code("250")}
	for i := range b.N {
		for j, w := range want {
			c, err := readReply()
			if err != nil {
				b.Fatalf("transaction %d reply %d: %v", i, j, err)
			}
			if c != w {
				b.Fatalf("transaction %d reply %d: %s, want %s", i, j, c[:], w[:])
			}
		}
	}
	b.StopTimer()
	if err := <-werr; err != nil {
		b.Fatal(err)
	}
	_, _ = nc.Write([]byte("QUIT\r\n"))
	if c, err := readReply(); err != nil || c != code("221") {
		b.Fatalf("QUIT %q %v", c, err)
	}
}
