package httpd

import (
	"bytes"
	"context"
	"crypto"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"github.com/sealgate/sealgate/keydir"
)

// tokens are the credentials of the auth matrix.
type tokens struct {
	read, write, revoked, writeID string
}

func (d *testDir) tokens() tokens {
	d.t.Helper()
	ctx := context.Background()
	var tk tokens
	var err error
	if tk.read, _, err = d.store.CreateToken(ctx, "reader", keydir.ScopeRead); err != nil {
		d.t.Fatal(err)
	}
	var w keydir.Token
	if tk.write, w, err = d.store.CreateToken(ctx, "writer", keydir.ScopeWrite); err != nil {
		d.t.Fatal(err)
	}
	tk.writeID = w.ID
	var rv keydir.Token
	if tk.revoked, rv, err = d.store.CreateToken(ctx, "old", keydir.ScopeWrite); err != nil {
		d.t.Fatal(err)
	}
	if err := d.store.RevokeToken(ctx, rv.ID); err != nil {
		d.t.Fatal(err)
	}
	return tk
}

func bearer(secret string) http.Header {
	return http.Header{"Authorization": {"Bearer " + secret}}
}

// api sends an admin request with the bearer secret ("" = none) and
// decodes the JSON answer (nil for an empty body).
func (d *testDir) api(method, path, secret string, body []byte) (*http.Response, map[string]any) {
	d.t.Helper()
	var hdr http.Header
	if secret != "" {
		hdr = bearer(secret)
	}
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	resp, b := d.do(method, path, "", hdr, r)
	if len(b) == 0 {
		return resp, nil
	}
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		d.t.Fatalf("%s %s: answer is not JSON: %q", method, path, b)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		d.t.Errorf("%s %s: Content-Type %q", method, path, ct)
	}
	return resp, v
}

func (d *testDir) keyCount() int {
	d.t.Helper()
	keys, err := d.store.Store.List(context.Background())
	if err != nil {
		d.t.Fatal(err)
	}
	return len(keys)
}

func TestAdminAuthMatrix(t *testing.T) {
	d := newTestDir(t, Options{}, vectorDomain)
	tk := d.tokens()
	stored := entity(t, "stored@example.org")
	d.publish(stored)
	fresh := armored(t, "PGP PUBLIC KEY BLOCK", publicKey(t, entity(t, "fresh@example.org")))
	fpr := fingerprint(stored)
	before := mustStoredData(t, d, fpr)

	routes := []struct {
		method, path string
		body         []byte
		write        bool
		okStatus     int // with a write token, for read routes
	}{
		{"GET", "/api/v1/keys", nil, false, 200},
		{"GET", "/api/v1/keys/" + fpr, nil, false, 200},
		{"GET", "/api/v1/history?address=stored@example.org", nil, false, 200},
		{"POST", "/api/v1/keys", fresh, true, 0},
		{"DELETE", "/api/v1/keys/" + fpr, nil, true, 0},
		{"POST", "/api/v1/keys/" + fpr + "/revoke", []byte("x"), true, 0},
	}
	for _, rt := range routes {
		for _, cred := range []struct {
			name string
			hdr  http.Header
		}{
			{"no token", nil},
			{"basic auth", http.Header{"Authorization": {"Basic bm8tdXNlcjo="}}},
			{"empty bearer", http.Header{"Authorization": {"Bearer "}}},
			{"bad token", bearer(keydir.TokenPrefix + strings.Repeat("a", 52))},
			{"not a token", bearer("hunter2")},
			{"revoked token", bearer(tk.revoked)},
		} {
			resp, b := d.do(rt.method, rt.path, "", cred.hdr, bytes.NewReader(rt.body))
			if resp.StatusCode != 401 || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("%s %s, %s: status %d, WWW-Authenticate %q; want 401 Bearer", rt.method, rt.path, cred.name, resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
			}
			if strings.TrimSpace(string(b)) != "{\n  \"error\": \"unauthorized\"\n}" {
				t.Errorf("%s %s, %s: body %q, want the generic error", rt.method, rt.path, cred.name, b)
			}
		}
		resp, v := d.api(rt.method, rt.path, tk.read, rt.body)
		switch {
		case rt.write && (resp.StatusCode != 403 || v["error"] == nil):
			t.Errorf("%s %s with a read token: status %d %v, want 403", rt.method, rt.path, resp.StatusCode, v)
		case !rt.write && resp.StatusCode != rt.okStatus:
			t.Errorf("%s %s with a read token: status %d %v, want %d", rt.method, rt.path, resp.StatusCode, v, rt.okStatus)
		}
		if !rt.write {
			if resp, v := d.api(rt.method, rt.path, tk.write, rt.body); resp.StatusCode != rt.okStatus {
				t.Errorf("%s %s with a write token: status %d %v", rt.method, rt.path, resp.StatusCode, v)
			}
		}
	}
	// Nothing the refused requests asked for happened.
	if n := d.keyCount(); n != 1 {
		t.Errorf("%d keys stored after refused writes, want 1", n)
	}
	if !bytes.Equal(mustStoredData(t, d, fpr), before) {
		t.Error("the stored key changed")
	}
	// Authentication comes before routing.
	if resp, _ := d.api("GET", "/api/v1/nothing-here", "", nil); resp.StatusCode != 401 {
		t.Errorf("unknown route without a token: %d, want 401", resp.StatusCode)
	}
	if resp, _ := d.api("GET", "/api/v1/nothing-here", tk.read, nil); resp.StatusCode != 404 {
		t.Errorf("unknown route with a token: %d, want 404", resp.StatusCode)
	}
	if resp, _ := d.api("PUT", "/api/v1/keys", tk.write, nil); resp.StatusCode != 405 || resp.Header.Get("Allow") != "GET, POST" {
		t.Errorf("PUT /api/v1/keys: %d, Allow %q; want 405 with GET, POST", resp.StatusCode, resp.Header.Get("Allow"))
	}
}

func mustStoredData(t *testing.T, d *testDir, fpr string) []byte {
	t.Helper()
	k, err := d.store.Store.Get(t.Context(), fpr)
	if err != nil {
		t.Fatal(err)
	}
	return k.Data
}

func TestAdminImport(t *testing.T) {
	d := newTestDir(t, Options{}, vectorDomain)
	tk := d.tokens()
	good := entity(t, "alice@example.org")
	expired := expiredEntity(t, "old@example.org")
	body := append(armored(t, "PGP PUBLIC KEY BLOCK", publicKey(t, good)), armored(t, "PGP PUBLIC KEY BLOCK", publicKey(t, expired))...)
	resp, v := d.api("POST", "/api/v1/keys", tk.write, body)
	if resp.StatusCode != 201 {
		t.Fatalf("import: %d %v", resp.StatusCode, v)
	}
	results, _ := v["results"].([]any)
	if len(results) != 2 {
		t.Fatalf("results %v", v)
	}
	first, second := results[0].(map[string]any), results[1].(map[string]any)
	if first["fingerprint"] != fingerprint(good) || first["imported"] != true {
		t.Errorf("first result %v", first)
	}
	if second["fingerprint"] != fingerprint(expired) || second["imported"] != false || second["error"] == "" {
		t.Errorf("second result %v", second)
	}
	if n := d.keyCount(); n != 1 {
		t.Errorf("%d keys stored, want 1", n)
	}
	// The change is recorded as the token's.
	resp, v = d.api("GET", "/api/v1/history?address=Alice@Example.org", tk.read, nil)
	events, _ := v["events"].([]any)
	if resp.StatusCode != 200 || len(events) != 1 {
		t.Fatalf("history: %d %v", resp.StatusCode, v)
	}
	ev := events[0].(map[string]any)
	if ev["actor"] != "token:"+tk.writeID || ev["action"] != keydir.ActionImport || ev["fingerprint"] != fingerprint(good) {
		t.Errorf("history event %v", ev)
	}
	if resp, _ := d.api("GET", "/api/v1/history?address=nonsense", tk.read, nil); resp.StatusCode != 400 {
		t.Errorf("history of a bad address: %d, want 400", resp.StatusCode)
	}

	// Binary input; and input where every key is refused.
	if resp, v := d.api("POST", "/api/v1/keys", tk.write, publicKey(t, entity(t, "bin@example.org"))); resp.StatusCode != 201 {
		t.Errorf("binary import: %d %v", resp.StatusCode, v)
	}
	if resp, v := d.api("POST", "/api/v1/keys", tk.write, publicKey(t, expired)); resp.StatusCode != 422 || v["error"] != "no key was imported" {
		t.Errorf("all refused: %d %v, want 422", resp.StatusCode, v)
	}
}

func TestAdminImportRefusesSecretKeysAndGarbage(t *testing.T) {
	d := newTestDir(t, Options{}, vectorDomain)
	tk := d.tokens()
	e := entity(t, "alice@example.org")
	pub := armored(t, "PGP PUBLIC KEY BLOCK", publicKey(t, entity(t, "bob@example.org")))
	for name, body := range map[string][]byte{
		"armored secret key":            armored(t, "PGP PRIVATE KEY BLOCK", secretKey(t, e)),
		"binary secret key":             secretKey(t, e),
		"public key, then a secret key": append(pub, armored(t, "PGP PRIVATE KEY BLOCK", secretKey(t, e))...),
	} {
		resp, v := d.api("POST", "/api/v1/keys", tk.write, body)
		msg, _ := v["error"].(string)
		if resp.StatusCode != 422 || !strings.Contains(msg, "secret key") || !strings.Contains(msg, "nothing was stored") {
			t.Errorf("%s: %d %v, want 422 naming secret key material", name, resp.StatusCode, v)
		}
	}
	for name, body := range map[string][]byte{
		"empty":   {},
		"garbage": []byte("this is not a key\n"),
		"X.509":   []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"),
	} {
		if resp, v := d.api("POST", "/api/v1/keys", tk.write, body); resp.StatusCode != 422 || v["error"] == nil {
			t.Errorf("%s: %d %v, want 422", name, resp.StatusCode, v)
		}
	}
	if n := d.keyCount(); n != 0 {
		t.Errorf("%d keys stored, want none", n)
	}
}

func TestAdminBodyTooLarge(t *testing.T) {
	d := newTestDir(t, Options{MaxBodyBytes: 4096}, vectorDomain)
	tk := d.tokens()
	big := armored(t, "PGP PUBLIC KEY BLOCK", publicKey(t, entity(t, "alice@example.org")))
	big = append(big, bytes.Repeat([]byte("\n"), 8192)...)
	if resp, v := d.api("POST", "/api/v1/keys", tk.write, big); resp.StatusCode != 413 {
		t.Errorf("with Content-Length: %d %v, want 413", resp.StatusCode, v)
	}
	// Without a Content-Length (chunked), the cap applies while reading.
	req, err := http.NewRequest("POST", d.srv.URL+"/api/v1/keys", io.MultiReader(bytes.NewReader(big)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = bearer(tk.write)
	resp, err := d.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 413 || req.ContentLength != 0 {
		t.Errorf("chunked: %d (ContentLength %d), want 413", resp.StatusCode, req.ContentLength)
	}
	if n := d.keyCount(); n != 0 {
		t.Errorf("%d keys stored, want none", n)
	}
	// A body under the cap goes through.
	small := publicKey(t, entity(t, "small@example.org"))
	if resp, v := d.api("POST", "/api/v1/keys", tk.write, small); resp.StatusCode != 201 {
		t.Errorf("%d-byte key: %d %v", len(small), resp.StatusCode, v)
	}
}

func TestAdminShowAndRemove(t *testing.T) {
	d := newTestDir(t, Options{}, vectorDomain)
	tk := d.tokens()
	e := entity(t, "alice@example.org")
	d.publish(e)
	fpr := fingerprint(e)
	resp, v := d.api("GET", "/api/v1/keys/"+strings.ToLower(fpr), tk.read, nil)
	if resp.StatusCode != 200 || v["fingerprint"] != fpr || v["usable"] != true {
		t.Fatalf("show: %d %v", resp.StatusCode, v)
	}
	el, err := openpgp.ReadArmoredKeyRing(strings.NewReader(v["armored"].(string)))
	if err != nil || len(el) != 1 || fingerprint(el[0]) != fpr {
		t.Errorf("armored field: %v", err)
	}
	resp, v = d.api("GET", "/api/v1/keys", tk.read, nil)
	if keys, _ := v["keys"].([]any); resp.StatusCode != 200 || len(keys) != 1 {
		t.Errorf("list: %d %v", resp.StatusCode, v)
	}
	if resp, _ := d.api("GET", "/api/v1/keys/NOTHEX", tk.read, nil); resp.StatusCode != 400 {
		t.Errorf("malformed fingerprint: %d, want 400", resp.StatusCode)
	}
	if resp, _ := d.api("DELETE", "/api/v1/keys/"+fpr, tk.write, nil); resp.StatusCode != 204 {
		t.Errorf("delete: %d, want 204", resp.StatusCode)
	}
	for _, method := range []string{"GET", "DELETE"} {
		if resp, v := d.api(method, "/api/v1/keys/"+fpr, tk.write, nil); resp.StatusCode != 404 || v["error"] == nil {
			t.Errorf("%s after delete: %d %v, want 404", method, resp.StatusCode, v)
		}
	}
	_, v = d.api("GET", "/api/v1/history?address=alice@example.org", tk.read, nil)
	events, _ := v["events"].([]any)
	if len(events) != 2 || events[1].(map[string]any)["action"] != keydir.ActionRemove {
		t.Errorf("history after delete: %v", v)
	}
}

// expiredEntity makes a key that expired a minute ago.
func expiredEntity(t *testing.T, addr string) *openpgp.Entity {
	t.Helper()
	cfg := &packet.Config{
		Algorithm: packet.PubKeyAlgoEdDSA, Curve: packet.Curve25519, DefaultHash: crypto.SHA256,
		Time:            func() time.Time { return time.Now().Add(-2 * time.Hour) },
		KeyLifetimeSecs: 3600,
	}
	e, err := openpgp.NewEntity("Test User", "", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return e
}
