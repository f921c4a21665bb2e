package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"

	"github.com/sealgate/sealgate/keydir/wkd"
)

// wkdServer is an HTTPS server with a certificate for example.org and
// openpgpkey.example.org from a private CA, recording every request.
type wkdServer struct {
	srv    *httptest.Server
	caFile string
	mu     sync.Mutex
	seen   []string // "host path?query"
}

func newWKDServer(t *testing.T, handler http.HandlerFunc) *wkdServer {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "WKD test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "example.org"},
		DNSNames: []string{"example.org", "openpgpkey.example.org"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	w := &wkdServer{caFile: writeFile(t, t.TempDir(), "ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}))}
	w.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w.mu.Lock()
		w.seen = append(w.seen, r.Host+" "+r.URL.RequestURI())
		w.mu.Unlock()
		handler(rw, r)
	}))
	w.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // expected handshake failures
	w.srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{leafDER}, PrivateKey: leafKey}}}
	w.srv.StartTLS()
	t.Cleanup(w.srv.Close)
	return w
}

func (w *wkdServer) requests() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.seen...)
}

// resolve maps the given hosts to the server.
func (w *wkdServer) resolve(hosts ...string) map[string]string {
	var items []string
	for _, h := range hosts {
		items = append(items, h+"="+w.srv.Listener.Addr().String())
	}
	return map[string]string{testResolveEnv: strings.Join(items, ",")}
}

// wkdKey is a public key with two user IDs, only one for the address.
func wkdKey(t *testing.T) (bin []byte, fpr string) {
	t.Helper()
	e, err := openpgp.NewEntity("Alice", "", "alice@example.org", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.AddUserId("Alice at home", "", "alice@home.example", nil); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := e.Serialize(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), strings.ToUpper(hex.EncodeToString(e.PrimaryKey.Fingerprint))
}

func TestLookup(t *testing.T) {
	t.Parallel()
	key, fpr := wkdKey(t)
	hash := wkd.Hash("alice")
	advanced := "openpgpkey.example.org /.well-known/openpgpkey/example.org/hu/" + hash + "?l=alice"
	direct := "example.org /.well-known/openpgpkey/hu/" + hash + "?l=alice"
	serveKey := func(body []byte) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if strings.Contains(r.URL.Path, "/hu/"+hash) {
				w.Write(body)
				return
			}
			http.NotFound(w, r)
		}
	}
	var armored bytes.Buffer
	aw, _ := armor.Encode(&armored, "PGP PUBLIC KEY BLOCK", nil)
	aw.Write(key)
	aw.Close()

	tests := []struct {
		name    string
		handler http.HandlerFunc
		hosts   []string // resolvable; "openpgpkey.example.org=servfail" style entries pass through
		vars    map[string]string
		want    string // in stdout on success, in stderr on failure
		ok      bool
		seen    []string
	}{
		{name: "advanced method", handler: serveKey(key), hosts: []string{"openpgpkey.example.org", "example.org"},
			ok: true, want: fpr + "\n  uid  Alice <alice@example.org>\n", seen: []string{advanced}},
		{name: "direct method when openpgpkey.DOMAIN does not exist", handler: serveKey(key), hosts: []string{"example.org"},
			ok: true, want: fpr + "\n", seen: []string{direct}},
		{name: "armored answer", handler: serveKey(armored.Bytes()), hosts: []string{"openpgpkey.example.org"}, ok: true, want: fpr},
		{name: "no fallback after a 404 from the advanced host", handler: http.NotFound,
			hosts: []string{"openpgpkey.example.org", "example.org"}, want: "404", seen: []string{advanced}},
		{name: "too large", handler: serveKey(bytes.Repeat([]byte{0x99}, maxWKDBytes+1)), hosts: []string{"openpgpkey.example.org"}, want: "larger than"},
		{name: "no user ID for the address", handler: func(w http.ResponseWriter, r *http.Request) {
			e, _ := openpgp.NewEntity("Eve", "", "eve@example.org", nil)
			e.Serialize(w)
		}, hosts: []string{"openpgpkey.example.org"}, want: "no user ID for alice@example.org"},
		{name: "secret key served", handler: func(w http.ResponseWriter, r *http.Request) {
			e, _ := openpgp.NewEntity("Alice", "", "alice@example.org", nil)
			e.SerializePrivate(w, nil)
		}, hosts: []string{"openpgpkey.example.org"}, want: "secret key material"},
		{name: "three redirects", handler: redirector(3, key), hosts: []string{"openpgpkey.example.org"}, want: "more than 2 redirects"},
		{name: "two redirects", handler: redirector(2, key), hosts: []string{"openpgpkey.example.org"}, ok: true, want: fpr},
		{name: "redirect to http", handler: func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "http://example.org/key", http.StatusFound)
		}, hosts: []string{"openpgpkey.example.org"}, want: "HTTPS only"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			w := newWKDServer(t, tt.handler)
			r := sealmailEnv(t, nil, w.resolve(tt.hosts...), "lookup", "alice@example.org", "--ca-file", w.caFile)
			out := r.stderr
			if tt.ok {
				out = r.stdout
			}
			if (r.code == 0) != tt.ok || !strings.Contains(out, tt.want) {
				t.Errorf("exit %d, stdout %q, stderr %q; want %q", r.code, r.stdout, r.stderr, tt.want)
			}
			if tt.ok && strings.Contains(r.stdout, "home.example") {
				t.Errorf("a user ID for another address was kept: %q", r.stdout)
			}
			if tt.seen != nil && strings.Join(w.requests(), "\n") != strings.Join(tt.seen, "\n") {
				t.Errorf("requests %q, want %q", w.requests(), tt.seen)
			}
		})
	}
}

// redirector answers n redirects within the advanced host, then the key.
func redirector(n int, key []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		step := strings.Count(r.URL.Path, "/r")
		if step < n {
			http.Redirect(w, r, "https://openpgpkey.example.org"+r.URL.Path+"/r", http.StatusFound)
			return
		}
		w.Write(key)
	}
}

func TestLookupDNSAndTLSFailures(t *testing.T) {
	t.Parallel()
	key, _ := wkdKey(t)
	w := newWKDServer(t, func(rw http.ResponseWriter, r *http.Request) { rw.Write(key) })
	addr := w.srv.Listener.Addr().String()

	// A DNS failure of openpgpkey.DOMAIN is no reason to fall back.
	vars := map[string]string{testResolveEnv: "openpgpkey.example.org=servfail,example.org=" + addr}
	r := sealmailEnv(t, nil, vars, "lookup", "alice@example.org", "--ca-file", w.caFile)
	if r.code != 1 || !strings.Contains(r.stderr, "resolve openpgpkey.example.org") || len(w.requests()) != 0 {
		t.Errorf("servfail: exit %d, stderr %q, requests %q", r.code, r.stderr, w.requests())
	}
	// Without the private CA the server's certificate is not trusted.
	r = sealmailEnv(t, nil, w.resolve("openpgpkey.example.org"), "lookup", "alice@example.org")
	if r.code != 1 || !strings.Contains(r.stderr, "certificate") {
		t.Errorf("untrusted certificate: exit %d, stderr %q", r.code, r.stderr)
	}
	// --output keeps only the user ID for the address.
	out := filepath.Join(t.TempDir(), "alice.asc")
	mustSealmailEnv(t, w.resolve("openpgpkey.example.org"), "lookup", "alice@example.org", "--ca-file", w.caFile, "--output", out)
	keys, err := openpgp.ReadArmoredKeyRing(bytes.NewReader(readFile(t, out)))
	if err != nil || len(keys) != 1 || len(keys[0].Identities) != 1 {
		t.Fatalf("--output: %v, %v", keys, err)
	}
	if _, ok := keys[0].Identities["Alice <alice@example.org>"]; !ok {
		t.Errorf("--output identities %v", keys[0].Identities)
	}
	if r := sealmail(t, nil, "lookup", "not-an-address"); r.code != 1 {
		t.Errorf("bad address: exit %d", r.code)
	}
}

func mustSealmailEnv(t testing.TB, vars map[string]string, args ...string) result {
	t.Helper()
	r := sealmailEnv(t, nil, vars, args...)
	if r.code != 0 {
		t.Fatalf("sealmail %s: exit %d\nstderr: %s", strings.Join(args, " "), r.code, r.stderr)
	}
	return r
}
