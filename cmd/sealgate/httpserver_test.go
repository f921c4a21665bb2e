package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sealgate/sealgate/config"
	"github.com/sealgate/sealgate/gateway"
	"github.com/sealgate/sealgate/keydir"
)

// selfSigned writes a self-signed certificate for 127.0.0.1 and its key
// as PEM files and returns their paths and the certificate.
func selfSigned(t *testing.T) (certFile, keyFile string, cert *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:   time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err = x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, cert
}

// startHTTP runs the directory's HTTP server for cfg on a loopback port.
func startHTTP(t *testing.T, cfg *config.Config) string {
	t.Helper()
	store, err := keydir.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "dir.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	addr, _ := startHTTPWith(t, cfg, store)
	return addr
}

// startHTTPWith runs the HTTP server over store, with a registry holding the
// gateway's metrics and a stand-in SMTP listener for /readyz.
func startHTTPWith(t *testing.T, cfg *config.Config, store keydir.Store) (string, net.Listener) {
	t.Helper()
	reg := prometheus.NewRegistry()
	if _, err := gateway.NewMetrics(reg); err != nil {
		t.Fatal(err)
	}
	smtpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { smtpLn.Close() })
	go func() {
		for {
			c, err := smtpLn.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	hs, err := newHTTPServer(cfg, store, slog.New(slog.DiscardHandler), reg, smtpLn.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go serveHTTP(hs, ln)
	t.Cleanup(func() { hs.Close() })
	return ln.Addr().String(), smtpLn
}

func TestMetricsAndReadiness(t *testing.T) {
	store, err := keydir.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "dir.db"))
	if err != nil {
		t.Fatal(err)
	}
	addr, smtpLn := startHTTPWith(t, config.Default(), store)
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, "sealgate_message_duration_seconds") {
		t.Fatalf("/metrics: %d\n%.300s", code, body)
	}
	if code, body := get("/readyz"); code != 200 || body != "ready\n" {
		t.Fatalf("/readyz: %d %q", code, body)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Fatalf("/healthz: %d", code)
	}
	smtpLn.Close()
	if code, _ := get("/readyz"); code != 503 {
		t.Fatalf("/readyz with the SMTP listener gone: %d, want 503", code)
	}
	store.Close()
	if code, _ := get("/readyz"); code != 503 {
		t.Fatalf("/readyz with the database gone: %d, want 503", code)
	}
}

func TestHTTPListenerServesTLS(t *testing.T) {
	certFile, keyFile, cert := selfSigned(t)
	cfg := config.Default()
	cfg.HTTP.TLSCert, cfg.HTTP.TLSKey = certFile, keyFile
	cfg.Directory.Domains = []string{"example.org"}
	addr := startHTTP(t, cfg)

	roots := x509.NewCertPool()
	roots.AddCert(cert)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	for path, want := range map[string]int{"/healthz": 200, "/.well-known/openpgpkey/example.org/policy": 200, "/api/v1/keys": 401} {
		resp, err := client.Get("https://" + addr + path)
		if err != nil {
			t.Fatalf("GET %s over TLS: %v", path, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want || resp.TLS == nil {
			t.Errorf("GET %s: status %d (TLS %v), want %d", path, resp.StatusCode, resp.TLS != nil, want)
		}
	}
	// Plain HTTP on the TLS listener gets no directory answer.
	resp, err := http.Get("http://" + addr + "/healthz")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Error("plain HTTP was served on the TLS listener")
		}
	}
}

func TestHTTPListenerPlain(t *testing.T) {
	addr := startHTTP(t, config.Default())
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "ok\n" {
		t.Errorf("healthz: %d %q", resp.StatusCode, body)
	}
}

func TestHTTPListenerBadKeyPair(t *testing.T) {
	certFile, _, _ := selfSigned(t)
	_, otherKey, _ := selfSigned(t)
	cfg := config.Default()
	cfg.HTTP.TLSCert, cfg.HTTP.TLSKey = certFile, otherKey
	store, err := keydir.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "dir.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	_, err = newHTTPServer(cfg, store, slog.New(slog.DiscardHandler), prometheus.NewRegistry(), "127.0.0.1:1")
	if err == nil || !strings.HasPrefix(err.Error(), "http.tls_cert: ") {
		t.Errorf("a mismatched certificate and key: %v", err)
	}
}
