package httpd

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/sealgate/sealgate/keydir"
)

// The admin API (all JSON; errors are {"error": "..."}):
//
//	GET    /api/v1/keys                       read   list every key
//	POST   /api/v1/keys                       write  import (body: armored or binary public keys)
//	GET    /api/v1/keys/{fingerprint}         read   one key, with its armored certificate
//	DELETE /api/v1/keys/{fingerprint}         write  remove
//	POST   /api/v1/keys/{fingerprint}/revoke  write  apply a revocation certificate (body)
//	GET    /api/v1/history?address=ADDRESS    read   the recorded changes for an address
//
// Every request needs "Authorization: Bearer <secret>" of an active token
// (sealgate tokens create); authentication comes before routing, so
// without one even unknown paths answer 401. The API sends no CORS
// headers, and browsers do not attach bearer tokens by themselves, so a
// cross-site form post cannot act on it (reliability K5, CSRF).

type tokenKey struct{}

func (s *server) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/keys", s.allow(keydir.ScopeRead, s.listKeys))
	mux.HandleFunc("POST /api/v1/keys", s.allow(keydir.ScopeWrite, s.importKeys))
	mux.HandleFunc("GET /api/v1/keys/{fingerprint}", s.allow(keydir.ScopeRead, s.showKey))
	mux.HandleFunc("DELETE /api/v1/keys/{fingerprint}", s.allow(keydir.ScopeWrite, s.removeKey))
	mux.HandleFunc("POST /api/v1/keys/{fingerprint}/revoke", s.allow(keydir.ScopeWrite, s.revokeKey))
	mux.HandleFunc("GET /api/v1/history", s.allow(keydir.ScopeRead, s.history))
	mux.Handle("/api/", noRoute(mux))
	return s.authenticate(mux)
}

// authenticate admits requests with the bearer secret of an active token
// (RFC 6750 §2.1). Every failure gets the same generic 401.
func (s *server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		secret, ok := bearerSecret(r.Header.Get("Authorization"))
		if !ok {
			// RFC 6750 §3.1: no error code when the request had no token.
			w.Header().Set("WWW-Authenticate", `Bearer realm="sealgate"`)
			jsonError(w, http.StatusUnauthorized, "unauthorized")
			return
		}
		tok, err := s.store.AuthenticateToken(r.Context(), secret)
		switch {
		case errors.Is(err, keydir.ErrUnauthorized):
			s.logger(r).Warn("admin API: bad token", "remote", r.RemoteAddr, "method", r.Method, "path", r.URL.Path)
			w.Header().Set("WWW-Authenticate", `Bearer realm="sealgate", error="invalid_token"`)
			jsonError(w, http.StatusUnauthorized, "unauthorized")
			return
		case err != nil:
			s.logger(r).Error("admin API: authenticate", "err", err)
			jsonError(w, http.StatusInternalServerError, "internal server error")
			return
		}
		ctx := context.WithValue(r.Context(), tokenKey{}, tok)
		ctx = keydir.WithActor(ctx, "token:"+tok.ID)
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// bearerSecret returns the credentials of "Bearer <secret>" (the scheme is
// case-insensitive, RFC 9110 §11.1).
func bearerSecret(header string) (string, bool) {
	scheme, secret, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	secret = strings.TrimSpace(secret)
	return secret, secret != ""
}

// allow runs h when the request's token has scope (a write token may also
// read), else answers 403.
func (s *server) allow(scope keydir.Scope, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok, _ := r.Context().Value(tokenKey{}).(keydir.Token)
		ok := tok.Scope == keydir.ScopeWrite || (scope == keydir.ScopeRead && tok.Scope == keydir.ScopeRead)
		if !ok {
			s.logger(r).Warn("admin API: token lacks scope", "token", tok.ID, "want", scope, "method", r.Method, "path", r.URL.Path)
			jsonError(w, http.StatusForbidden, "forbidden: this token may not "+verb(scope))
			return
		}
		h(w, r)
	}
}

func verb(scope keydir.Scope) string {
	if scope == keydir.ScopeWrite {
		return "change the directory"
	}
	return "read the directory"
}

// noRoute answers requests no admin route takes: 405 with Allow when the
// path exists with other methods, else 404.
func noRoute(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var allowed []string
		for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodDelete} {
			probe := r.Clone(r.Context())
			probe.Method = m
			if _, pattern := mux.Handler(probe); pattern != "/api/" {
				allowed = append(allowed, m)
			}
		}
		if len(allowed) == 0 {
			jsonError(w, http.StatusNotFound, "no such API route")
			return
		}
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		jsonError(w, http.StatusMethodNotAllowed, "method not allowed")
	})
}

// keyJSON is a key in API answers.
type keyJSON struct {
	Fingerprint string    `json:"fingerprint"`
	Kind        string    `json:"kind"`
	Addresses   []string  `json:"addresses"`
	Created     time.Time `json:"created"`
	Updated     time.Time `json:"updated"`
	// Usable and Status say whether the gateway would encrypt to the key now.
	Usable bool   `json:"usable"`
	Status string `json:"status"`
	// Armored is the whole stored certificate (GET of one key only).
	Armored string `json:"armored,omitempty"`
}

func (s *server) keyJSON(k keydir.Key) keyJSON {
	j := keyJSON{Fingerprint: k.Fingerprint, Kind: string(k.Kind), Addresses: k.Addresses, Created: k.Created.UTC(), Updated: k.Updated.UTC()}
	if j.Addresses == nil {
		j.Addresses = []string{}
	}
	switch {
	case k.Kind != keydir.KindPGP:
		j.Status = "not an OpenPGP key"
	default:
		cert, err := readStoredCert(k)
		if err != nil {
			j.Status = "unreadable: " + err.Error()
			break
		}
		if err := cert.CheckEncryption(s.now()); err != nil {
			j.Status = "not usable: " + err.Error()
			break
		}
		j.Usable, j.Status = true, "usable for encryption"
	}
	return j
}

func (s *server) listKeys(w http.ResponseWriter, r *http.Request) {
	keys, err := s.store.List(r.Context())
	if err != nil {
		s.internalError(w, r, "list keys", err)
		return
	}
	out := make([]keyJSON, len(keys))
	for i, k := range keys {
		out[i] = s.keyJSON(k)
	}
	writeJSON(w, http.StatusOK, map[string]any{"keys": out})
}

func (s *server) showKey(w http.ResponseWriter, r *http.Request) {
	k, ok := s.storedKey(w, r)
	if !ok {
		return
	}
	j := s.keyJSON(k)
	armored, err := armorKey(k.Data)
	if err != nil {
		s.internalError(w, r, "armor key", err)
		return
	}
	j.Armored = armored
	writeJSON(w, http.StatusOK, j)
}

func (s *server) removeKey(w http.ResponseWriter, r *http.Request) {
	fpr, ok := pathFingerprint(w, r)
	if !ok {
		return
	}
	err := s.store.Remove(r.Context(), fpr)
	if errors.Is(err, keydir.ErrNotFound) {
		jsonError(w, http.StatusNotFound, "no key with this fingerprint")
		return
	}
	if err != nil {
		s.internalError(w, r, "remove key", err)
		return
	}
	s.logger(r).Info("admin API: key removed", "actor", keydir.ActorFrom(r.Context()), "fingerprint", fpr)
	w.WriteHeader(http.StatusNoContent)
}

// storedKey returns the key named by the {fingerprint} path value, or
// writes the 400, 404 or 500 and returns false.
func (s *server) storedKey(w http.ResponseWriter, r *http.Request) (keydir.Key, bool) {
	fpr, ok := pathFingerprint(w, r)
	if !ok {
		return keydir.Key{}, false
	}
	k, err := s.store.Get(r.Context(), fpr)
	if errors.Is(err, keydir.ErrNotFound) {
		jsonError(w, http.StatusNotFound, "no key with this fingerprint")
		return keydir.Key{}, false
	}
	if err != nil {
		s.internalError(w, r, "get key", err)
		return keydir.Key{}, false
	}
	return k, true
}

// pathFingerprint returns the {fingerprint} path value upper-cased, or
// answers 400 when it is not 40 or 64 hex digits.
func pathFingerprint(w http.ResponseWriter, r *http.Request) (string, bool) {
	q, err := parseHexSearch(r.PathValue("fingerprint"), 40, 64)
	if err != nil {
		jsonError(w, http.StatusBadRequest, "a fingerprint is 40 (v4) or 64 (v6) hex digits")
		return "", false
	}
	return q.fingerprint, true
}

type eventJSON struct {
	Time        time.Time `json:"time"`
	Actor       string    `json:"actor"`
	Action      string    `json:"action"`
	Fingerprint string    `json:"fingerprint"`
	Addresses   []string  `json:"addresses"`
}

func (s *server) history(w http.ResponseWriter, r *http.Request) {
	addr, err := keydir.NormalizeAddress(r.URL.Query().Get("address"))
	if err != nil {
		jsonError(w, http.StatusBadRequest, "address: "+err.Error())
		return
	}
	events, err := s.store.History(r.Context(), addr)
	if err != nil {
		s.internalError(w, r, "history", err)
		return
	}
	out := make([]eventJSON, len(events))
	for i, e := range events {
		out[i] = eventJSON{Time: e.Time.UTC(), Actor: e.Actor, Action: e.Action, Fingerprint: e.Fingerprint, Addresses: e.Addresses}
		if out[i].Addresses == nil {
			out[i].Addresses = []string{}
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"address": addr, "events": out})
}

func (s *server) internalError(w http.ResponseWriter, r *http.Request, what string, err error) {
	s.logger(r).Error("admin API: "+what, "err", err)
	jsonError(w, http.StatusInternalServerError, "internal server error")
}

func jsonError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // the status is sent; a write error means the client left
}
