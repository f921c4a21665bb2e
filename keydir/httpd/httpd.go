// Package httpd serves the key directory over HTTP: the Web Key Directory
// (draft-koch-openpgp-webkey-service) that mail clients query, the VKS and
// HKP keyserver lookups, and the admin API under /api/v1/.
//
// Routes:
//
//	GET  /healthz                                      "ok"
//	GET  /.well-known/openpgpkey/hu/{hash}             WKD direct method (domain from Host)
//	GET  /.well-known/openpgpkey/{domain}/hu/{hash}    WKD advanced method (domain from the path)
//	GET  /.well-known/openpgpkey[/{domain}]/policy     WKD policy file
//	GET  /vks/v1/by-email/{address}                    VKS (armored)
//	GET  /vks/v1/by-fingerprint/{FPR}
//	GET  /vks/v1/by-keyid/{KEYID}
//	GET  /pks/lookup?op=get|index&search=…             HKP
//	     /api/v1/…                                     admin API (bearer token), see admin.go
package httpd

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"runtime/debug"
	"strings"
	"time"

	"github.com/sealgate/sealgate/keydir"
)

// DefaultMaxBodyBytes caps admin request bodies when Options.MaxBodyBytes
// is zero: far more than any real certificate (GnuPG refuses WKD answers
// over 256 KiB; keys.openpgp.org takes uploads up to 1 MiB).
const DefaultMaxBodyBytes = 1 << 20

// Options configures New. The zero value of every field but Store is a
// safe default.
type Options struct {
	// Store is the directory. Required.
	Store keydir.Store
	// Domains are the domains whose keys are published over WKD, VKS and
	// HKP, normalised (lower-case ASCII, IDNA A-labels), as config
	// validation leaves them. With none, every lookup is a 404.
	Domains []string
	// Logger gets errors and admin changes; nil discards them.
	Logger *slog.Logger
	// MaxBodyBytes caps admin request bodies (413 beyond it); 0 means
	// DefaultMaxBodyBytes. It may not exceed keydir.MaxImportBytes.
	MaxBodyBytes int64
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// server holds what every handler needs.
type server struct {
	store   keydir.Store
	domains map[string]bool
	log     *slog.Logger
	maxBody int64
	now     func() time.Time
	// wkdCache holds keys already reduced for WKD answers.
	wkdCache *candidateCache
}

// New returns the directory's HTTP handler.
func New(opts Options) (http.Handler, error) {
	s, err := newServer(opts)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok\n")
	})
	mux.Handle(wkdPrefix, public(http.HandlerFunc(s.serveWKD)))
	s.routeKeyserver(mux)
	mux.Handle("/api/", s.adminHandler())
	return s.guard(mux), nil
}

func newServer(opts Options) (*server, error) {
	if opts.Store == nil {
		return nil, errors.New("httpd: Options.Store is nil")
	}
	s := &server{store: opts.Store, domains: map[string]bool{}, log: opts.Logger, maxBody: opts.MaxBodyBytes, now: opts.Now,
		wkdCache: newCandidateCache()}
	for _, d := range opts.Domains {
		n, ok := normalizeDomain(d)
		if !ok || n != d {
			return nil, fmt.Errorf("httpd: domain %q is not normalised (lower-case ASCII, IDNA A-labels, no trailing dot)", d)
		}
		s.domains[d] = true
	}
	switch {
	case s.maxBody == 0:
		s.maxBody = DefaultMaxBodyBytes
	case s.maxBody < 0 || s.maxBody > keydir.MaxImportBytes:
		return nil, fmt.Errorf("httpd: MaxBodyBytes %d: want 1 to %d", s.maxBody, keydir.MaxImportBytes)
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	return s, nil
}

// normalizeDomain returns the form domains are configured and indexed in
// (keydir.NormalizeAddress's: lower case, no trailing dot, A-labels).
func normalizeDomain(d string) (string, bool) {
	if d == "" || strings.ContainsAny(d, "@<>") {
		return "", false
	}
	a, err := keydir.NormalizeAddress("x@" + d)
	if err != nil {
		return "", false
	}
	return a[len("x@"):], true
}

// domainOf returns the domain of a normalised address.
func domainOf(address string) string {
	return address[strings.LastIndexByte(address, '@')+1:]
}

type requestIDKey struct{}

// logger returns the server's logger with the request's ID.
func (s *server) logger(r *http.Request) *slog.Logger {
	id, _ := r.Context().Value(requestIDKey{}).(string)
	return s.log.With("req", id)
}

// guard runs before routing: it gives the request an ID, turns a panic
// into a logged 500, and answers 400 to paths that try to climb out of
// their route or that encode a slash (reliability K4), so that no
// handler, and never the store, sees them. http.ServeMux would otherwise
// redirect them to the cleaned path.
func (s *server) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := newRequestID()
		r = r.WithContext(context.WithValue(r.Context(), requestIDKey{}, id))
		defer s.recoverPanic(w, r)
		if !cleanPath(r.URL.Path) || encodedSlash(r.URL) {
			plainError(w, http.StatusBadRequest, "bad request")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *server) recoverPanic(w http.ResponseWriter, r *http.Request) {
	v := recover()
	if v == nil {
		return
	}
	if v == http.ErrAbortHandler {
		panic(v)
	}
	s.logger(r).Error("panic in HTTP handler", "method", r.Method, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
	plainError(w, http.StatusInternalServerError, "internal server error")
}

// cleanPath reports whether the decoded request path is absolute and has
// no empty, "." or ".." segment, no backslash and no control character.
// Percent-encoded forms ("%2e%2e", "%2f", "%5c", "%00") are decoded by
// then, so they are caught too.
func cleanPath(p string) bool {
	if !strings.HasPrefix(p, "/") {
		return false
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c < 0x20 || c == 0x7f || c == '\\' {
			return false
		}
	}
	segs := strings.Split(p[1:], "/")
	for i, seg := range segs {
		if seg == "." || seg == ".." || (seg == "" && i != len(segs)-1) {
			return false
		}
	}
	return true
}

// encodedSlash reports a "%2F" in the path, which would let one path
// segment pose as several. Only an address in a VKS by-email lookup may
// hold one ("a/b@example.org" is a valid address, RFC 5322 atext); that
// route takes the whole segment as the address.
func encodedSlash(u *url.URL) bool {
	if u.RawPath == "" || strings.HasPrefix(u.Path, "/vks/v1/by-email/") {
		return false
	}
	return strings.Contains(strings.ToLower(u.RawPath), "%2f")
}

func newRequestID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return hex.EncodeToString(b)
}

// public wraps the lookup routes (WKD, VKS, HKP): every answer, errors
// included, may be read cross-origin and must be revalidated before reuse,
// and the only methods are GET, HEAD and an OPTIONS preflight.
//
// Cache-Control "no-cache" (as keys.openpgp.org sends): a revocation or a
// new key must reach clients at once (reliability K6), and GnuPG asks for
// no-cache anyway. Key answers carry an ETag, so a cache that revalidates
// gets a 304 instead of the key.
func public(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Content-Type-Options", "nosniff")
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			next.ServeHTTP(w, r)
		case http.MethodOptions:
			h.Set("Allow", "GET, HEAD, OPTIONS")
			h.Set("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
			// "*" does not cover Authorization (Fetch standard, CORS
			// non-wildcard request-header name), which Thunderbird's
			// WKD fetch sends ("no-user:"); it is named too.
			h.Set("Access-Control-Allow-Headers", "*, Authorization")
			h.Set("Access-Control-Max-Age", "86400")
			w.WriteHeader(http.StatusNoContent)
		default:
			h.Set("Allow", "GET, HEAD, OPTIONS")
			plainError(w, http.StatusMethodNotAllowed, "method not allowed")
		}
	})
}

// plainError writes a short text/plain error, as keyservers do for GET
// routes.
func plainError(w http.ResponseWriter, code int, msg string) {
	h := w.Header()
	h.Del("ETag")
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	io.WriteString(w, msg+"\n")
}
