package gateway

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sealgate/sealgate/gateway/relay"
)

// testCert makes a self-signed certificate for 127.0.0.1 and returns it
// with a pool that trusts it.
func testCert(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "mx.test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"mx.test"},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

func TestInboundSTARTTLS(t *testing.T) {
	cert, pool := testCert(t)
	g := startGateway(t, nil, func(o *Options) {
		o.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	})
	c, err := smtp.DialStartTLS(g.addr, &tls.Config{RootCAs: pool, ServerName: "mx.test"})
	if err != nil {
		t.Fatalf("STARTTLS to the gateway: %v", err)
	}
	defer c.Close()
	if _, ok := c.TLSConnectionState(); !ok {
		t.Fatal("connection not encrypted")
	}
	if err := c.SendMail("s@firm.example", []string{"bob@other.example"}, strings.NewReader(testMsg)); err != nil {
		t.Fatal(err)
	}
	if len(g.up.messages()) != 1 {
		t.Fatal("message not relayed")
	}
}

// upstreamTLS restarts the test upstream with STARTTLS and a relay in mode.
func upstreamTLS(t *testing.T, g *testGateway, mode string, cert tls.Certificate, roots *x509.CertPool) {
	t.Helper()
	g.up.srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	rel, err := relay.New(relay.Options{Addr: g.up.addr, Hostname: "gw.test", TLS: mode,
		TLSConfig: &tls.Config{RootCAs: roots, ServerName: "mx.test"}, Timeout: 5 * time.Second, DataTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	g.reloadRelay(t, rel)
}

func TestUpstreamTLSModes(t *testing.T) {
	_, otherPool := testCert(t) // trusts a different certificate
	cases := []struct {
		mode     string
		trusted  bool
		wantCode int
	}{
		{relay.TLSOpportunistic, false, 0}, // encrypts without verifying
		{relay.TLSRequired, false, 451},    // unverifiable: never sent
		{relay.TLSRequired, true, 0},
	}
	for _, c := range cases {
		t.Run(c.mode, func(t *testing.T) {
			g := startGateway(t, nil, nil)
			cert, pool := testCert(t)
			if !c.trusted {
				pool = otherPool
			}
			upstreamTLS(t, g, c.mode, cert, pool)
			res := g.send(t, "s@firm.example", []string{"bob@other.example"}, testMsg, nil)
			if got := smtpCode(res.dataErr); got != c.wantCode {
				t.Fatalf("DATA reply %d (%v), want %d", got, res.dataErr, c.wantCode)
			}
			if want := map[bool]int{true: 1, false: 0}[c.wantCode == 0]; len(g.up.messages()) != want {
				t.Fatalf("upstream got %d messages, want %d", len(g.up.messages()), want)
			}
		})
	}
}

func TestUpstreamTLSRequiredWithoutSTARTTLS(t *testing.T) {
	g := startGateway(t, nil, nil)
	rel, err := relay.New(relay.Options{Addr: g.up.addr, Hostname: "gw.test", TLS: relay.TLSRequired, Timeout: 5 * time.Second, DataTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	g.reloadRelay(t, rel)
	res := g.send(t, "s@firm.example", []string{"bob@other.example"}, testMsg, nil)
	if code := smtpCode(res.dataErr); code != 451 {
		t.Fatalf("DATA reply %d, want 451", code)
	}
	if len(g.up.messages()) != 0 {
		t.Fatal("sent without TLS although TLS is required")
	}
}

func TestPipelinedTransaction(t *testing.T) {
	g := startGateway(t, nil, nil)
	conn, err := net.Dial("tcp", g.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// RFC 2920: the whole envelope in one write, then the body after 354.
	if _, err := conn.Write([]byte("EHLO c.test\r\nMAIL FROM:<s@firm.example>\r\nRCPT TO:<bob@other.example>\r\nRCPT TO:<carol@other.example>\r\nDATA\r\n")); err != nil {
		t.Fatal(err)
	}
	if !readUntil(t, conn, "354 ") {
		t.Fatal("no 354 after pipelined envelope")
	}
	if _, err := conn.Write([]byte(testMsg + ".\r\nQUIT\r\n")); err != nil {
		t.Fatal(err)
	}
	if !readUntil(t, conn, "221 ") {
		t.Fatal("no 221")
	}
	msgs := g.up.messages()
	if len(msgs) != 1 || len(msgs[0].rcpts) != 2 {
		t.Fatalf("upstream got %+v", msgs)
	}
}

// readUntil reads replies until a line starting with prefix (true) or EOF.
func readUntil(t *testing.T, conn net.Conn, prefix string) bool {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var buf bytes.Buffer
	b := make([]byte, 4096)
	for {
		n, err := conn.Read(b)
		buf.Write(b[:n])
		for _, line := range strings.Split(buf.String(), "\r\n") {
			if strings.HasPrefix(line, prefix) {
				return true
			}
		}
		if err != nil {
			return false
		}
	}
}

func TestConnectionLimit(t *testing.T) {
	g := startGateway(t, nil, func(o *Options) { o.MaxConnections = 2 })
	var open []net.Conn
	defer func() {
		for _, c := range open {
			c.Close()
		}
	}()
	for i := 0; i < 2; i++ {
		c, err := net.Dial("tcp", g.addr)
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, c)
		if !readUntil(t, c, "220 ") {
			t.Fatalf("connection %d not greeted", i)
		}
	}
	c, err := net.Dial("tcp", g.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !readUntil(t, c, "421 4.7.0") {
		t.Fatal("third connection not refused with 421")
	}
	// A slot frees up when a client leaves.
	open[0].Close()
	open = open[1:]
	time.Sleep(100 * time.Millisecond)
	c2, err := net.Dial("tcp", g.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if !readUntil(t, c2, "220 ") {
		t.Fatal("no slot after a client left")
	}
}
