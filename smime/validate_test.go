package smime

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// pki is one test world: a trusted root with its responder, an
// intermediate under it with its own responder, and an untrusted root.
type pki struct {
	root, inter, stranger *testCA
	rootResp, interResp   *responder
	clock                 *atomic.Pointer[time.Time]
}

func newPKI(t testing.TB) *pki {
	t.Helper()
	p := &pki{clock: new(atomic.Pointer[time.Time])}
	now := testNow
	p.clock.Store(&now)
	p.root = newCA(t, "Test Root", nil)
	p.rootResp = newResponder(t, p.root, p.now)
	// The intermediate itself is revocable through the root's responder.
	p.inter = newCAWithPointers(t, "Test Intermediate", p.root, p.rootResp)
	p.interResp = newResponder(t, p.inter, p.now)
	p.stranger = newCA(t, "Stranger Root", nil)
	return p
}

func (p *pki) now() time.Time { return *p.clock.Load() }

func (p *pki) advance(d time.Duration) {
	n := p.now().Add(d)
	p.clock.Store(&n)
}

func newCAWithPointers(t testing.TB, name string, parent *testCA, r *responder) *testCA {
	t.Helper()
	ca := newCA(t, name, parent)
	tmpl := *ca.cert
	tmpl.SerialNumber = nextSerial()
	tmpl.CRLDistributionPoints = []string{r.crlURL()}
	tmpl.OCSPServer = []string{r.ocspURL()}
	return &testCA{cert: parent.issue(t, &tmpl, ca.key.Public()), key: ca.key}
}

func (p *pki) validator(t testing.TB, mode Mode) *Validator {
	t.Helper()
	v, err := NewValidator(Options{
		Roots:        p.root.pool(),
		Revocation:   mode,
		HTTPClient:   &http.Client{Timeout: 5 * time.Second},
		Now:          p.now,
		FetchTimeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// withPointers adds the responder's CRL and/or OCSP URL to tmpl.
func withPointers(tmpl *x509.Certificate, crl, ocspURL string) *x509.Certificate {
	if crl != "" {
		tmpl.CRLDistributionPoints = []string{crl}
	}
	if ocspURL != "" {
		tmpl.OCSPServer = []string{ocspURL}
	}
	return tmpl
}

type checkCase struct {
	name    string
	mode    Mode
	setup   func(t *testing.T, p *pki) (cert *x509.Certificate, inter []*x509.Certificate, address string)
	wantErr error  // nil: usable
	wantMsg string // in the error message
}

func TestCheckMatrix(t *testing.T) {
	const bob = "bob@example.org"
	good := func(mut func(*x509.Certificate)) func(t *testing.T, p *pki) (*x509.Certificate, []*x509.Certificate, string) {
		return func(t *testing.T, p *pki) (*x509.Certificate, []*x509.Certificate, string) {
			tmpl := withPointers(leafTemplate(bob), p.rootResp.crlURL(), p.rootResp.ocspURL())
			if mut != nil {
				mut(tmpl)
			}
			return p.root.issue(t, tmpl, nil), nil, bob
		}
	}
	cases := []checkCase{
		{name: "good with OCSP and CRL", setup: good(nil)},
		{name: "good without revocation pointers", setup: good(func(c *x509.Certificate) { c.OCSPServer, c.CRLDistributionPoints = nil, nil })},
		{name: "expired", setup: good(func(c *x509.Certificate) {
			c.NotBefore, c.NotAfter = testNow.Add(-48*time.Hour), testNow.Add(-24*time.Hour)
		}), wantErr: ErrUnusable, wantMsg: "expired on"},
		{name: "not yet valid", setup: good(func(c *x509.Certificate) { c.NotBefore = testNow.Add(24 * time.Hour) }),
			wantErr: ErrUnusable, wantMsg: "not valid before"},
		{name: "wrong EKU", setup: good(func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth} }),
			wantErr: ErrUnusable, wantMsg: "lacks emailProtection"},
		{name: "unknown EKU only", setup: good(func(c *x509.Certificate) {
			c.ExtKeyUsage, c.UnknownExtKeyUsage = nil, []asn1.ObjectIdentifier{{1, 2, 3, 4}}
		}), wantErr: ErrUnusable, wantMsg: "lacks emailProtection"},
		{name: "anyExtendedKeyUsage", setup: good(func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageAny} })},
		{name: "no EKU extension", setup: good(func(c *x509.Certificate) { c.ExtKeyUsage = nil })},
		{name: "no keyEncipherment", setup: good(func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageDigitalSignature }),
			wantErr: ErrUnusable, wantMsg: "keyEncipherment"},
		{name: "no key usage extension", setup: good(func(c *x509.Certificate) { c.KeyUsage = 0 })},
		{name: "CA certificate as leaf", setup: good(func(c *x509.Certificate) { c.IsCA, c.BasicConstraintsValid = true, true }),
			wantErr: ErrUnusable, wantMsg: "CA certificate"},
		{name: "address mismatch", setup: func(t *testing.T, p *pki) (*x509.Certificate, []*x509.Certificate, string) {
			c, _, _ := good(nil)(t, p)
			return c, nil, "mallory@example.org"
		}, wantErr: ErrUnusable, wantMsg: `"mallory@example.org" is not in the certificate`},
		{name: "address differs in case and IDN form", setup: func(t *testing.T, p *pki) (*x509.Certificate, []*x509.Certificate, string) {
			c := p.root.issue(t, leafTemplate("bob@xn--bcher-kva.example"), nil)
			return c, nil, "BOB@Bücher.Example"
		}},
		{name: "subject emailAddress without SAN", setup: func(t *testing.T, p *pki) (*x509.Certificate, []*x509.Certificate, string) {
			tmpl := leafTemplate(bob)
			tmpl.EmailAddresses = nil
			tmpl.Subject.ExtraNames = []pkix.AttributeTypeAndValue{{Type: oidEmailAddress, Value: bob}}
			return p.root.issue(t, tmpl, nil), nil, bob
		}},
		{name: "subject emailAddress ignored beside a SAN", setup: func(t *testing.T, p *pki) (*x509.Certificate, []*x509.Certificate, string) {
			tmpl := leafTemplate(bob)
			tmpl.Subject.ExtraNames = []pkix.AttributeTypeAndValue{{Type: oidEmailAddress, Value: "other@example.org"}}
			return p.root.issue(t, tmpl, nil), nil, "other@example.org"
		}, wantErr: ErrUnusable, wantMsg: "not in the certificate"},
		{name: "untrusted chain", setup: func(t *testing.T, p *pki) (*x509.Certificate, []*x509.Certificate, string) {
			return p.stranger.issue(t, leafTemplate(bob), nil), nil, bob
		}, wantErr: ErrUnusable, wantMsg: "untrusted chain"},
		{name: "missing intermediate", setup: func(t *testing.T, p *pki) (*x509.Certificate, []*x509.Certificate, string) {
			return p.inter.issue(t, leafTemplate(bob), nil), nil, bob
		}, wantErr: ErrUnusable, wantMsg: "untrusted chain"},
		{name: "intermediate supplied", setup: func(t *testing.T, p *pki) (*x509.Certificate, []*x509.Certificate, string) {
			tmpl := withPointers(leafTemplate(bob), p.interResp.crlURL(), p.interResp.ocspURL())
			return p.inter.issue(t, tmpl, nil), []*x509.Certificate{p.inter.cert}, bob
		}},
		{name: "intermediate revoked", setup: func(t *testing.T, p *pki) (*x509.Certificate, []*x509.Certificate, string) {
			p.rootResp.revoke(p.inter.cert)
			return p.inter.issue(t, leafTemplate(bob), nil), []*x509.Certificate{p.inter.cert}, bob
		}, wantErr: ErrRevoked, wantMsg: "Test Intermediate"},
		{name: "revoked by CRL", setup: func(t *testing.T, p *pki) (*x509.Certificate, []*x509.Certificate, string) {
			c := p.root.issue(t, withPointers(leafTemplate(bob), p.rootResp.crlURL(), ""), nil)
			p.rootResp.revoke(c)
			return c, nil, bob
		}, wantErr: ErrRevoked, wantMsg: "according to CRL"},
		{name: "revoked by OCSP", setup: func(t *testing.T, p *pki) (*x509.Certificate, []*x509.Certificate, string) {
			c := p.root.issue(t, withPointers(leafTemplate(bob), "", p.rootResp.ocspURL()), nil)
			p.rootResp.revoke(c)
			return c, nil, bob
		}, wantErr: ErrRevoked, wantMsg: "according to OCSP"},
		{name: "revoked, revocation off", mode: Off, setup: func(t *testing.T, p *pki) (*x509.Certificate, []*x509.Certificate, string) {
			c := p.root.issue(t, withPointers(leafTemplate(bob), p.rootResp.crlURL(), p.rootResp.ocspURL()), nil)
			p.rootResp.revoke(c)
			return c, nil, bob
		}},
		{name: "OCSP unreachable, hard-fail", setup: func(t *testing.T, p *pki) (*x509.Certificate, []*x509.Certificate, string) {
			return p.root.issue(t, withPointers(leafTemplate(bob), "", deadURL(t)), nil), nil, bob
		}, wantErr: ErrRevocationUnknown, wantMsg: "connection refused"},
		{name: "CRL unreachable, hard-fail", setup: func(t *testing.T, p *pki) (*x509.Certificate, []*x509.Certificate, string) {
			return p.root.issue(t, withPointers(leafTemplate(bob), deadURL(t), ""), nil), nil, bob
		}, wantErr: ErrRevocationUnknown, wantMsg: "smime: CRL http://127.0.0.1"},
		{name: "both unreachable, soft-fail", mode: SoftFail, setup: func(t *testing.T, p *pki) (*x509.Certificate, []*x509.Certificate, string) {
			return p.root.issue(t, withPointers(leafTemplate(bob), deadURL(t), deadURL(t)), nil), nil, bob
		}},
		{name: "revoked by CRL, soft-fail", mode: SoftFail, setup: func(t *testing.T, p *pki) (*x509.Certificate, []*x509.Certificate, string) {
			c := p.root.issue(t, withPointers(leafTemplate(bob), p.rootResp.crlURL(), ""), nil)
			p.rootResp.revoke(c)
			return c, nil, bob
		}, wantErr: ErrRevoked},
		{name: "OCSP unreachable, CRL answers", setup: func(t *testing.T, p *pki) (*x509.Certificate, []*x509.Certificate, string) {
			return p.root.issue(t, withPointers(leafTemplate(bob), p.rootResp.crlURL(), deadURL(t)), nil), nil, bob
		}},
		{name: "OCSP signed by the wrong key", setup: func(t *testing.T, p *pki) (*x509.Certificate, []*x509.Certificate, string) {
			p.rootResp.set(func(r *responder) { r.signer = rsaKey(t, 1) })
			return p.root.issue(t, withPointers(leafTemplate(bob), "", p.rootResp.ocspURL()), nil), nil, bob
		}, wantErr: ErrRevocationUnknown, wantMsg: "bad OCSP signature"},
		{name: "CRL signed by the wrong key", setup: func(t *testing.T, p *pki) (*x509.Certificate, []*x509.Certificate, string) {
			p.rootResp.set(func(r *responder) { r.signer = rsaKey(t, 1) })
			return p.root.issue(t, withPointers(leafTemplate(bob), p.rootResp.crlURL(), ""), nil), nil, bob
		}, wantErr: ErrRevocationUnknown, wantMsg: "signature"},
		{name: "stale CRL", setup: func(t *testing.T, p *pki) (*x509.Certificate, []*x509.Certificate, string) {
			p.rootResp.set(func(r *responder) { r.validity = -time.Hour })
			return p.root.issue(t, withPointers(leafTemplate(bob), p.rootResp.crlURL(), ""), nil), nil, bob
		}, wantErr: ErrRevocationUnknown, wantMsg: "stale"},
		{name: "delegated OCSP responder", setup: func(t *testing.T, p *pki) (*x509.Certificate, []*x509.Certificate, string) {
			p.rootResp.set(func(r *responder) { r.delegate = delegateFor(t, p.root, true) })
			c := p.root.issue(t, withPointers(leafTemplate(bob), "", p.rootResp.ocspURL()), nil)
			p.rootResp.revoke(c)
			return c, nil, bob
		}, wantErr: ErrRevoked},
		{name: "delegated OCSP responder without OCSPSigning", setup: func(t *testing.T, p *pki) (*x509.Certificate, []*x509.Certificate, string) {
			p.rootResp.set(func(r *responder) { r.delegate = delegateFor(t, p.root, false) })
			return p.root.issue(t, withPointers(leafTemplate(bob), "", p.rootResp.ocspURL()), nil), nil, bob
		}, wantErr: ErrRevocationUnknown, wantMsg: "OCSPSigning"},
		{name: "RSA-1024", setup: func(t *testing.T, p *pki) (*x509.Certificate, []*x509.Certificate, string) {
			loadTestKeys(t)
			return p.root.issue(t, leafTemplate(bob), testKeys.rsa1024.Public()), nil, bob
		}, wantErr: ErrUnusable, wantMsg: "1024 bits"},
		{name: "EC certificate", setup: func(t *testing.T, p *pki) (*x509.Certificate, []*x509.Certificate, string) {
			loadTestKeys(t)
			return p.root.issue(t, leafTemplate(bob), testKeys.ec.Public()), nil, bob
		}, wantErr: ErrUnsupportedKey, wantMsg: "EC certificates need RFC 5753 key agreement, not supported"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := newPKI(t)
			cert, inter, addr := c.setup(t, p)
			err := p.validator(t, c.mode).Check(t.Context(), cert, inter, addr)
			t.Logf("Check: %v", err)
			switch {
			case c.wantErr == nil && err != nil:
				t.Fatalf("Check = %v; want usable", err)
			case c.wantErr != nil && !errors.Is(err, c.wantErr):
				t.Fatalf("Check = %v; want an error wrapping %v", err, c.wantErr)
			case c.wantErr != nil && !strings.HasPrefix(err.Error(), "smime: "):
				t.Errorf("error %q lacks the smime: prefix", err)
			case c.wantMsg != "" && !strings.Contains(err.Error(), c.wantMsg):
				t.Errorf("Check = %v; want the message to say %q", err, c.wantMsg)
			}
			// Only ErrRevoked and ErrRevocationUnknown are told apart from
			// "no usable certificate" by the gateway: never both.
			if errors.Is(err, ErrRevoked) && errors.Is(err, ErrRevocationUnknown) {
				t.Errorf("error %v is both revoked and unknown", err)
			}
		})
	}
}

func TestCheckCertSkipsAddress(t *testing.T) {
	p := newPKI(t)
	c := p.root.issue(t, withPointers(leafTemplate("bob@example.org"), p.rootResp.crlURL(), p.rootResp.ocspURL()), nil)
	if err := p.validator(t, HardFail).CheckCert(t.Context(), c, nil); err != nil {
		t.Errorf("CheckCert = %v; want usable", err)
	}
}

func TestRevocationCache(t *testing.T) {
	p := newPKI(t)
	c := p.root.issue(t, withPointers(leafTemplate("bob@example.org"), p.rootResp.crlURL(), p.rootResp.ocspURL()), nil)
	v := p.validator(t, HardFail)
	check := func() {
		t.Helper()
		if err := v.Check(t.Context(), c, nil, "bob@example.org"); err != nil {
			t.Fatalf("Check = %v", err)
		}
	}
	// Concurrent first checks share one OCSP request (singleflight).
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(check)
	}
	wg.Wait()
	if n := p.rootResp.ocspHits.Load(); n != 1 {
		t.Errorf("16 concurrent checks made %d OCSP requests; want 1", n)
	}
	check()
	if n := p.rootResp.ocspHits.Load(); n != 1 {
		t.Errorf("a cached answer was fetched again: %d OCSP requests", n)
	}
	// The answer's nextUpdate is an hour away: after it, ask again, and see
	// a revocation that happened meanwhile.
	p.rootResp.revoke(c)
	p.advance(61 * time.Minute)
	if err := v.Check(t.Context(), c, nil, "bob@example.org"); !errors.Is(err, ErrRevoked) {
		t.Errorf("Check after nextUpdate = %v; want ErrRevoked", err)
	}
	if n := p.rootResp.ocspHits.Load(); n != 2 {
		t.Errorf("OCSP requests = %d; want 2", n)
	}
	if n := p.rootResp.crlHits.Load(); n != 0 {
		t.Errorf("CRL fetched %d times though OCSP answered", n)
	}
}

func TestCheckCancelledContext(t *testing.T) {
	p := newPKI(t)
	c := p.root.issue(t, withPointers(leafTemplate("bob@example.org"), "", p.rootResp.ocspURL()), nil)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	v := p.validator(t, HardFail)
	if err := v.Check(ctx, c, nil, "bob@example.org"); !errors.Is(err, ErrRevocationUnknown) {
		t.Fatalf("Check with a cancelled context = %v; want ErrRevocationUnknown", err)
	}
	// The failure came from the caller's context: it is not cached.
	if err := v.Check(t.Context(), c, nil, "bob@example.org"); err != nil {
		t.Errorf("Check after a cancelled one = %v; want usable", err)
	}
}

func TestNewValidatorRefuses(t *testing.T) {
	for name, o := range map[string]Options{
		"revocation without HTTP client": {},
		"soft-fail without HTTP client":  {Revocation: SoftFail},
		"unknown mode":                   {Revocation: Mode(7), HTTPClient: http.DefaultClient},
		"negative TTL":                   {Revocation: Off, CacheTTL: -time.Second},
	} {
		if _, err := NewValidator(o); err == nil || !strings.HasPrefix(err.Error(), "smime: ") {
			t.Errorf("NewValidator(%s) = %v; want an smime error", name, err)
		}
	}
	if _, err := NewValidator(Options{Revocation: Off}); err != nil {
		t.Errorf("NewValidator(off, system roots) = %v", err)
	}
}

func TestParseMode(t *testing.T) {
	for in, want := range map[string]Mode{"": HardFail, "hard-fail": HardFail, "soft-fail": SoftFail, "off": Off} {
		if got, err := ParseMode(in); err != nil || got != want {
			t.Errorf("ParseMode(%q) = %v, %v; want %v", in, got, err, want)
		}
		if in != "" && want.String() != in {
			t.Errorf("%v.String() = %q", want, want.String())
		}
	}
	if _, err := ParseMode("hardfail"); err == nil {
		t.Error(`ParseMode("hardfail"): want an error`)
	}
}

func TestSoftFailLogsWarning(t *testing.T) {
	p := newPKI(t)
	c := p.root.issue(t, withPointers(leafTemplate("bob@example.org"), "", deadURL(t)), nil)
	var logs strings.Builder
	v, err := NewValidator(Options{
		Roots: p.root.pool(), Revocation: SoftFail, HTTPClient: &http.Client{Timeout: 5 * time.Second}, Now: p.now,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Check(t.Context(), c, nil, "bob@example.org"); err != nil {
		t.Fatalf("Check under soft-fail = %v; want usable", err)
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "revocation status unknown") {
		t.Errorf("soft-fail logged %q; want a warning naming the unknown status", logs.String())
	}
}
