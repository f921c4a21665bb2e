package main

import (
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// directoryStub records what publish sends and answers as told.
type directoryStub struct {
	srv    *httptest.Server
	caFile string
	mu     sync.Mutex
	got    *http.Request
	body   string
}

func newDirectoryStub(t *testing.T, status int, answer string) *directoryStub {
	t.Helper()
	d := &directoryStub{}
	d.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		d.mu.Lock()
		d.got, d.body = r, string(b)
		d.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, answer)
	}))
	t.Cleanup(d.srv.Close)
	d.caFile = writeFile(t, t.TempDir(), "ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: d.srv.Certificate().Raw}))
	return d
}

func TestPublishRequest(t *testing.T) {
	t.Parallel()
	a := alice(t)
	d := newDirectoryStub(t, http.StatusCreated,
		`{"results":[{"fingerprint":"`+a.fingerprint+`","addresses":["alice@example.org"],"imported":true}]}`)
	token := writeFile(t, t.TempDir(), "token", []byte("sg_secret_token\n"))
	r := mustSealmail(t, nil, "publish", "--directory", d.srv.URL+"/prefix/", "--token-file", token, "--home", a.dir, "--ca-file", d.caFile)
	if r.stdout != "published "+a.fingerprint+" alice@example.org\n" {
		t.Errorf("stdout %q", r.stdout)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.got.Method != http.MethodPost || d.got.URL.Path != "/prefix/api/v1/keys" ||
		d.got.Header.Get("Authorization") != "Bearer sg_secret_token" ||
		d.got.Header.Get("Content-Type") != "application/pgp-keys" || d.body != string(a.public(t)) {
		t.Errorf("request %s %s %q %q, body %.40q", d.got.Method, d.got.URL.Path, d.got.Header.Get("Authorization"),
			d.got.Header.Get("Content-Type"), d.body)
	}
}

func TestPublishErrors(t *testing.T) {
	t.Parallel()
	a := alice(t)
	token := writeFile(t, t.TempDir(), "token", []byte("tok\n"))
	for _, tt := range []struct {
		name, answer string
		status       int
		want         string
	}{
		{"401 with JSON", `{"error":"missing or invalid bearer token"}`, 401, "401 Unauthorized: missing or invalid bearer token"},
		{"422 with JSON", `{"error":"no key was imported","results":[]}`, 422, "422 Unprocessable Entity: no key was imported"},
		{"500 with text", "boom", 500, "500 Internal Server Error: boom"},
	} {
		d := newDirectoryStub(t, tt.status, tt.answer)
		r := sealmail(t, nil, "publish", "--directory", d.srv.URL, "--token-file", token, "--home", a.dir, "--ca-file", d.caFile)
		if r.code != 1 || r.stdout != "" || !strings.Contains(r.stderr, tt.want) {
			t.Errorf("%s: exit %d, stderr %q; want %q", tt.name, r.code, r.stderr, tt.want)
		}
	}
	// A redirect is not followed: the token must not travel elsewhere.
	redirect := httptest.NewTLSServer(http.RedirectHandler("https://elsewhere.example/", http.StatusTemporaryRedirect))
	defer redirect.Close()
	ca := writeFile(t, t.TempDir(), "ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: redirect.Certificate().Raw}))
	if r := sealmail(t, nil, "publish", "--directory", redirect.URL, "--token-file", token, "--home", a.dir, "--ca-file", ca); r.code != 1 || !strings.Contains(r.stderr, "307") {
		t.Errorf("redirect: exit %d, stderr %q", r.code, r.stderr)
	}
	for name, args := range map[string][]string{
		"plain HTTP to another host": {"--directory", "http://keys.example.org", "--home", a.dir},
		"not a URL":                  {"--directory", "keys.example.org", "--home", a.dir},
		"no key in home":             {"--directory", "https://keys.example.org", "--home", t.TempDir()},
		"empty token file":           {"--directory", "https://keys.example.org", "--home", a.dir, "--token-file", writeFile(t, t.TempDir(), "t", []byte("\n"))},
		"no --directory":             {"--home", a.dir},
	} {
		if r := sealmail(t, nil, append([]string{"publish"}, args...)...); r.code != 1 || r.stdout != "" {
			t.Errorf("%s: exit %d, stdout %q, stderr %q", name, r.code, r.stdout, r.stderr)
		}
	}
}
