package smime

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"
)

// responder serves a CA's CRL and OCSP on loopback, the way a real CA
// does: the CRL signed by the CA (x509.CreateRevocationList), OCSP
// answers signed by the CA or a delegated responder (ocsp.CreateResponse).
type responder struct {
	ca  *testCA
	srv *httptest.Server
	now func() time.Time

	mu       sync.Mutex
	revoked  map[string]time.Time // serial (hex) → when
	signer   crypto.Signer        // nil: the CA key (a wrong key makes bad signatures)
	delegate *testCA              // OCSP answers signed by this responder certificate
	validity time.Duration        // nextUpdate - now; negative: stale answers

	crlHits, ocspHits atomic.Int32
}

func newResponder(t testing.TB, ca *testCA, now func() time.Time) *responder {
	t.Helper()
	r := &responder{ca: ca, now: now, revoked: make(map[string]time.Time), validity: time.Hour}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /crl", r.serveCRL)
	mux.HandleFunc("POST /ocsp", r.serveOCSP)
	r.srv = httptest.NewServer(mux)
	t.Cleanup(r.srv.Close)
	return r
}

func (r *responder) crlURL() string  { return r.srv.URL + "/crl" }
func (r *responder) ocspURL() string { return r.srv.URL + "/ocsp" }

func (r *responder) revoke(c *x509.Certificate) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.revoked[c.SerialNumber.Text(16)] = r.now().Add(-time.Minute)
}

func (r *responder) set(f func(r *responder)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f(r)
}

// window is thisUpdate and nextUpdate of an answer made at now.
func (r *responder) window(now time.Time) (time.Time, time.Time) {
	if r.validity < 0 {
		return now.Add(2 * r.validity), now.Add(r.validity)
	}
	return now.Add(-time.Minute), now.Add(r.validity)
}

func (r *responder) serveCRL(w http.ResponseWriter, _ *http.Request) {
	r.crlHits.Add(1)
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	this, next := r.window(now)
	tmpl := &x509.RevocationList{Number: big.NewInt(now.Unix()), ThisUpdate: this, NextUpdate: next}
	for s, at := range r.revoked {
		serial, _ := new(big.Int).SetString(s, 16)
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries,
			x509.RevocationListEntry{SerialNumber: serial, RevocationTime: at})
	}
	signer := r.signer
	if signer == nil {
		signer = r.ca.key
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, r.ca.cert, signer)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	_, _ = w.Write(der)
}

func (r *responder) serveOCSP(w http.ResponseWriter, req *http.Request) {
	r.ocspHits.Add(1)
	body, err := io.ReadAll(req.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	q, err := ocsp.ParseRequest(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	this, next := r.window(now)
	tmpl := ocsp.Response{Status: ocsp.Good, SerialNumber: q.SerialNumber, ThisUpdate: this, NextUpdate: next}
	if at, ok := r.revoked[q.SerialNumber.Text(16)]; ok {
		tmpl.Status, tmpl.RevokedAt, tmpl.RevocationReason = ocsp.Revoked, at, ocsp.KeyCompromise
	}
	responderCert, signer := r.ca.cert, r.ca.key
	if r.delegate != nil {
		responderCert, signer = r.delegate.cert, r.delegate.key
		tmpl.Certificate = r.delegate.cert
	}
	if r.signer != nil {
		signer = r.signer
	}
	der, err := ocsp.CreateResponse(r.ca.cert, responderCert, tmpl, signer)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/ocsp-response")
	_, _ = w.Write(der)
}

// deadURL is an http URL on loopback where nothing listens.
func deadURL(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return "http://" + addr + "/gone"
}

// delegateFor makes an OCSP responder certificate issued by ca, with or
// without the OCSPSigning EKU.
func delegateFor(t testing.TB, ca *testCA, withEKU bool) *testCA {
	t.Helper()
	tmpl := leafTemplate("ocsp@ca.example")
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = nil
	if withEKU {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageOCSPSigning}
	}
	key := rsaKey(t, 2)
	return &testCA{cert: ca.issue(t, tmpl, key.Public()), key: key}
}
