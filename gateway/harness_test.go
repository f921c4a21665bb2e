package gateway

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/emersion/go-message"
	"github.com/emersion/go-smtp"

	"github.com/sealgate/sealgate/gateway/policy"
	"github.com/sealgate/sealgate/gateway/relay"
	"github.com/sealgate/sealgate/keydir"
)

// captured is one message as the upstream test server received it.
type captured struct {
	from  string
	rcpts []string
	data  []byte
}

// upstream is a real SMTP server (go-smtp) on loopback that records what
// it is given. failRcpt makes RCPT to that address fail with failCode;
// failData makes the final dot fail.
type upstream struct {
	addr     string
	mu       sync.Mutex
	msgs     []captured
	failRcpt map[string]int
	failData int
	srv      *smtp.Server
}

func (u *upstream) messages() []captured {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]captured(nil), u.msgs...)
}

type upSession struct {
	u   *upstream
	cur captured
}

func (s *upSession) Reset()        { s.cur = captured{} }
func (s *upSession) Logout() error { return nil }
func (s *upSession) Mail(from string, _ *smtp.MailOptions) error {
	s.cur = captured{from: from}
	return nil
}
func (s *upSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.u.mu.Lock()
	code := s.u.failRcpt[to]
	s.u.mu.Unlock()
	if code != 0 {
		return &smtp.SMTPError{Code: code, EnhancedCode: smtp.EnhancedCode{code / 100, 1, 1}, Message: "no such user"}
	}
	s.cur.rcpts = append(s.cur.rcpts, to)
	return nil
}
func (s *upSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.u.mu.Lock()
	defer s.u.mu.Unlock()
	if s.u.failData != 0 {
		return &smtp.SMTPError{Code: s.u.failData, EnhancedCode: smtp.EnhancedCode{s.u.failData / 100, 0, 0}, Message: "rejected"}
	}
	s.cur.data = b
	s.u.msgs = append(s.u.msgs, s.cur)
	return nil
}

func startUpstream(t *testing.T) *upstream {
	t.Helper()
	u := &upstream{failRcpt: map[string]int{}}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &upSession{u: u}, nil }))
	srv.Domain = "upstream.test"
	srv.EnableSMTPUTF8 = true
	srv.MaxMessageBytes = 100 << 20
	srv.MaxLineLength = 100000
	srv.ReadTimeout = 30 * time.Second
	srv.WriteTimeout = 30 * time.Second
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u.addr, u.srv = l.Addr().String(), srv
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return u
}

// testGateway is a gateway on loopback with a real SQLite directory.
type testGateway struct {
	addr  string
	store *keydir.SQLStore
	up    *upstream
	srv   *Server
}

func startGateway(t *testing.T, rules []policy.Rule, tweak func(*Options)) *testGateway {
	t.Helper()
	up := startUpstream(t)
	store, err := keydir.OpenSQLite(context.Background(), t.TempDir()+"/keys.db")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	pol, err := policy.New(rules)
	if err != nil {
		t.Fatal(err)
	}
	rel, err := relay.New(relay.Options{Addr: up.addr, Hostname: "gw.test", TLS: relay.TLSOpportunistic, Timeout: 10 * time.Second, DataTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{
		Hostname:         "gw.test",
		AllowedNetworks:  []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		MaxMessageBytes:  30 << 20,
		MaxRecipients:    50,
		MaxLineLength:    8192,
		MaxHeaderBytes:   64 << 10,
		MaxConnections:   20,
		CommandTimeout:   30 * time.Second,
		DataTimeout:      30 * time.Second,
		WriteTimeout:     30 * time.Second,
		LookupTimeout:    5 * time.Second,
		SpoolDir:         t.TempDir(),
		SpoolMemoryBytes: 64 << 10,
		ProtectHeaders:   true,
		Policy:           pol,
		Directory:        store,
		Relay:            rel,
		Logger:           slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	if tweak != nil {
		tweak(&opts)
	}
	srv, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return &testGateway{addr: l.Addr().String(), store: store, up: up, srv: srv}
}

// newKey makes an OpenPGP key (x25519 v4) and publishes it in the directory.
func (g *testGateway) newKey(t *testing.T, address string) *openpgp.Entity {
	t.Helper()
	e, err := openpgp.NewEntity("Test", "", address, &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := e.Serialize(&buf); err != nil {
		t.Fatal(err)
	}
	res, err := keydir.ImportPGP(context.Background(), g.store, buf.Bytes(), time.Now())
	if err != nil || len(res) != 1 || res[0].Err != nil {
		t.Fatalf("import: %v %+v", err, res)
	}
	return e
}

// sendResult holds the reply to each step of one SMTP transaction.
type sendResult struct {
	rcptErrs map[string]error
	dataErr  error
}

// send delivers msg through the gateway with a real SMTP client.
func (g *testGateway) send(t *testing.T, from string, rcpts []string, msg string, opts *smtp.MailOptions) sendResult {
	t.Helper()
	c, err := smtp.Dial(g.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail(from, opts); err != nil {
		t.Fatalf("MAIL: %v", err)
	}
	res := sendResult{rcptErrs: map[string]error{}}
	accepted := 0
	for _, r := range rcpts {
		if err := c.Rcpt(r, nil); err != nil {
			res.rcptErrs[r] = err
			continue
		}
		accepted++
	}
	if accepted == 0 {
		return res
	}
	w, err := c.Data()
	if err != nil {
		t.Fatalf("DATA: %v", err)
	}
	if _, err := io.WriteString(w, msg); err != nil {
		t.Fatal(err)
	}
	res.dataErr = w.Close()
	_ = c.Quit()
	return res
}

func smtpCode(err error) int {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

// decryptPGPMIME checks the RFC 3156 structure of an upstream message and
// decrypts it with keys; it returns the outer header, the inner entity and
// the key IDs the message was encrypted to.
func decryptPGPMIME(t *testing.T, raw []byte, keys openpgp.EntityList) (message.Header, []byte, []uint64) {
	t.Helper()
	ent, err := message.Read(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("parse upstream message: %v", err)
	}
	ct, params, _ := ent.Header.ContentType()
	if ct != "multipart/encrypted" || params["protocol"] != "application/pgp-encrypted" {
		t.Fatalf("outer Content-Type %q %v", ct, params)
	}
	mr := ent.MultipartReader()
	p1, err := mr.NextPart()
	if err != nil {
		t.Fatal(err)
	}
	if ct, _, _ := p1.Header.ContentType(); ct != "application/pgp-encrypted" {
		t.Fatalf("first part %q", ct)
	}
	v, _ := io.ReadAll(p1.Body)
	if !strings.Contains(string(v), "Version: 1") {
		t.Fatalf("version part %q", v)
	}
	p2, err := mr.NextPart()
	if err != nil {
		t.Fatal(err)
	}
	if ct, _, _ := p2.Header.ContentType(); ct != "application/octet-stream" {
		t.Fatalf("second part %q", ct)
	}
	armored, _ := io.ReadAll(p2.Body)
	if _, err := mr.NextPart(); err != io.EOF {
		t.Fatalf("more than two parts: %v", err)
	}
	block, err := armor.Decode(bytes.NewReader(armored))
	if err != nil {
		t.Fatal(err)
	}
	ciphertext, _ := io.ReadAll(block.Body)
	ids := pkeskKeyIDs(t, ciphertext)
	md, err := openpgp.ReadMessage(bytes.NewReader(ciphertext), keys, nil, nil)
	if err != nil {
		t.Fatalf("decrypt: %v", err)
	}
	inner, err := io.ReadAll(md.UnverifiedBody)
	if err != nil {
		t.Fatalf("decrypt body (integrity): %v", err)
	}
	return ent.Header, inner, ids
}

func pkeskKeyIDs(t *testing.T, ciphertext []byte) []uint64 {
	t.Helper()
	var ids []uint64
	pr := packet.NewReader(bytes.NewReader(ciphertext))
	for {
		p, err := pr.Next()
		if err != nil {
			t.Fatalf("read packets: %v", err)
		}
		switch pk := p.(type) {
		case *packet.EncryptedKey:
			ids = append(ids, pk.KeyId)
			continue
		case *packet.SymmetricallyEncrypted:
			return ids
		}
		t.Fatalf("unexpected packet %T before the encrypted data", p)
	}
}

func encryptionKeyID(t *testing.T, e *openpgp.Entity) uint64 {
	t.Helper()
	k, ok := e.EncryptionKey(time.Now())
	if !ok {
		t.Fatal("no encryption key")
	}
	return k.PublicKey.KeyId
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// reloadRelay switches the gateway to another relay, as a reload does.
func (g *testGateway) reloadRelay(t *testing.T, rel *relay.Relay) {
	t.Helper()
	st := *g.srv.live.Load()
	st.Relay = rel
	if err := g.srv.Reload(st); err != nil {
		t.Fatal(err)
	}
}
