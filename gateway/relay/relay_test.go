package relay

import (
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// sink is a real SMTP server (go-smtp) that counts connections and
// accepted messages and can refuse a recipient.
type sink struct {
	addr     string
	conns    atomic.Int32
	mu       sync.Mutex
	accepted []string
	srv      *smtp.Server
	ln       net.Listener
}

type sinkSession struct {
	s    *sink
	from string
}

func (ss *sinkSession) Reset()        {}
func (ss *sinkSession) Logout() error { return nil }
func (ss *sinkSession) Mail(from string, _ *smtp.MailOptions) error {
	ss.from = from
	return nil
}
func (ss *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if strings.HasPrefix(to, "refuse") {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no"}
	}
	return nil
}
func (ss *sinkSession) Data(r io.Reader) error {
	b, _ := io.ReadAll(r)
	ss.s.mu.Lock()
	ss.s.accepted = append(ss.s.accepted, ss.from+":"+strings.TrimSpace(string(b)))
	ss.s.mu.Unlock()
	return nil
}

type countingListener struct {
	net.Listener
	n *atomic.Int32
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

func startSink(t *testing.T) *sink {
	t.Helper()
	s := &sink{}
	s.srv = smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &sinkSession{s: s}, nil }))
	s.srv.Domain = "sink.test"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr, s.ln = ln.Addr().String(), ln
	go s.srv.Serve(countingListener{ln, &s.conns})
	t.Cleanup(func() { s.srv.Close() })
	return s
}

func newRelay(t *testing.T, addr string) *Relay {
	t.Helper()
	r, err := New(Options{Addr: addr, Hostname: "gw.test", TLS: TLSNone, Timeout: 5 * time.Second, DataTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

func send(t *testing.T, r *Relay, from string, rcpts ...string) error {
	t.Helper()
	tx, err := r.Begin(context.Background(), from, false, rcpts)
	if err != nil {
		return err
	}
	if _, err := io.WriteString(tx, "Subject: x\r\n\r\nbody of "+from+"\r\n"); err != nil {
		tx.Abort()
		return err
	}
	_, err = tx.Commit()
	return err
}

func TestPooledConnectionCarriesTheNextMessage(t *testing.T) {
	s := startSink(t)
	r := newRelay(t, s.addr)
	for _, from := range []string{"a@x.example", "b@x.example", "c@x.example"} {
		if err := send(t, r, from, "rcpt@y.example"); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.conns.Load(); n != 1 {
		t.Fatalf("%d connections for 3 messages, want 1", n)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.accepted) != 3 || !strings.HasPrefix(s.accepted[2], "c@x.example:") || !strings.Contains(s.accepted[2], "body of c@x.example") {
		t.Fatalf("accepted %q", s.accepted)
	}
}

func TestFailedTransactionIsNotPooled(t *testing.T) {
	s := startSink(t)
	r := newRelay(t, s.addr)
	if err := send(t, r, "a@x.example", "refuse@y.example"); err == nil {
		t.Fatal("refused recipient accepted")
	}
	if err := send(t, r, "b@x.example", "rcpt@y.example"); err != nil {
		t.Fatal(err)
	}
	if n := s.conns.Load(); n != 2 {
		t.Fatalf("%d connections, want 2: a connection with a failed transaction must not be reused", n)
	}
}

func TestStalePooledConnectionIsReplaced(t *testing.T) {
	s := startSink(t)
	r := newRelay(t, s.addr)
	if err := send(t, r, "a@x.example", "rcpt@y.example"); err != nil {
		t.Fatal(err)
	}
	// Upstream restarts: the pooled connection is dead.
	s.srv.Close()
	s2 := &sink{}
	s2.srv = smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &sinkSession{s: s2}, nil }))
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	go s2.srv.Serve(countingListener{ln, &s2.conns})
	defer s2.srv.Close()
	if err := send(t, r, "b@x.example", "rcpt@y.example"); err != nil {
		t.Fatalf("after upstream restart: %v", err)
	}
	if len(s2.accepted) != 1 {
		t.Fatalf("new upstream accepted %d", len(s2.accepted))
	}
}

func TestNewValidates(t *testing.T) {
	for _, o := range []Options{
		{},
		{Addr: "127.0.0.1:25", Hostname: "h", TLS: TLSNone},
		{Addr: "127.0.0.1:25", Hostname: "h", TLS: "sometimes", Timeout: time.Second, DataTimeout: time.Second},
		{Addr: "no-port", Hostname: "h", TLS: TLSNone, Timeout: time.Second, DataTimeout: time.Second},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v) accepted", o)
		}
	}
}
