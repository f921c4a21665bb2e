package httpd

import (
	"bytes"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"github.com/sealgate/sealgate/keydir/wkd"
)

const (
	directPath   = "/.well-known/openpgpkey/hu/"
	advancedPath = "/.well-known/openpgpkey/" + vectorDomain + "/hu/"
)

// checkKeyAnswer checks a WKD answer: 200, binary, CORS, no-cache, and
// exactly the user IDs want (on the packets, in order).
func checkKeyAnswer(t *testing.T, resp *http.Response, body []byte, want ...string) {
	t.Helper()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200; body %q", resp.StatusCode, body)
	}
	for h, v := range map[string]string{
		"Content-Type":                "application/octet-stream",
		"Access-Control-Allow-Origin": "*",
		"Cache-Control":               "no-cache",
	} {
		if got := resp.Header.Get(h); got != v {
			t.Errorf("%s: %q, want %q", h, got, v)
		}
	}
	if len(body) == 0 || body[0]&0x80 == 0 {
		t.Fatalf("body is not binary OpenPGP: %q", body[:min(len(body), 40)])
	}
	if got := userIDPackets(t, body); !slices.Equal(got, want) {
		t.Errorf("user IDs %q, want %q", got, want)
	}
}

func TestWKDDraftVectorBothMethods(t *testing.T) {
	if h := wkd.Hash("Joe.Doe"); h != vectorHash {
		t.Fatalf("wkd.Hash(Joe.Doe) = %s, want the draft's %s", h, vectorHash)
	}
	d := newTestDir(t, Options{}, vectorDomain)
	e := entity(t, vectorAddress, "joe@other.example", "jane@example.org")
	d.publish(e)
	want := "Test User <" + vectorAddress + ">"

	for _, tc := range []struct{ name, path, host string }{
		{"direct", directPath + vectorHash + "?l=Joe.Doe", "example.org"},
		{"direct, host with port and case", directPath + vectorHash, "Example.ORG:443"},
		{"direct, host with trailing dot", directPath + vectorHash + "?l=joe.doe", "example.org."},
		{"advanced", advancedPath + vectorHash + "?l=Joe.Doe", "openpgpkey.example.org"},
		{"advanced, other host", advancedPath + vectorHash, "directory.internal:8080"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := d.do("GET", tc.path, tc.host, nil, nil)
			checkKeyAnswer(t, resp, body, want)
			el := readKeyRing(t, body)
			if len(el) != 1 || fingerprint(el[0]) != fingerprint(e) {
				t.Errorf("served %d keys, want %s", len(el), fingerprint(e))
			}
		})
	}
}

func TestWKDHead(t *testing.T) {
	d := newTestDir(t, Options{}, vectorDomain)
	d.publish(entity(t, vectorAddress))
	get, getBody := d.do("GET", advancedPath+vectorHash, "openpgpkey.example.org", nil, nil)
	head, headBody := d.do("HEAD", advancedPath+vectorHash, "openpgpkey.example.org", nil, nil)
	if head.StatusCode != http.StatusOK || len(headBody) != 0 {
		t.Fatalf("HEAD: status %d, %d body bytes", head.StatusCode, len(headBody))
	}
	if cl := head.Header.Get("Content-Length"); cl != strconv.Itoa(len(getBody)) || get.StatusCode != 200 {
		t.Errorf("HEAD Content-Length %q, GET sent %d bytes", cl, len(getBody))
	}
	if head.Header.Get("Content-Type") != "application/octet-stream" || head.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Errorf("HEAD headers %v", head.Header)
	}
	miss, _ := d.do("HEAD", advancedPath+strings.Repeat("y", 32), "openpgpkey.example.org", nil, nil)
	if miss.StatusCode != http.StatusNotFound {
		t.Errorf("HEAD of a miss: %d, want 404", miss.StatusCode)
	}
}

func TestWKDMiss(t *testing.T) {
	d := newTestDir(t, Options{}, vectorDomain)
	d.publish(entity(t, vectorAddress))
	for _, path := range []string{directPath + wkd.Hash("nobody"), advancedPath + wkd.Hash("nobody")} {
		resp, _ := d.do("GET", path, "example.org", nil, nil)
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s: status %d, want 404", path, resp.StatusCode)
		}
		if resp.Header.Get("Access-Control-Allow-Origin") != "*" || resp.Header.Get("Cache-Control") != "no-cache" {
			t.Errorf("%s: 404 lacks CORS or Cache-Control: %v", path, resp.Header)
		}
	}
}

func TestWKDPolicy(t *testing.T) {
	d := newTestDir(t, Options{}, vectorDomain, "xn--bcher-kva.example")
	for _, tc := range []struct {
		path, host string
		want       int
	}{
		{"/.well-known/openpgpkey/policy", "example.org", 200},
		{"/.well-known/openpgpkey/policy", "xn--bcher-kva.example", 200},
		{"/.well-known/openpgpkey/example.org/policy", "openpgpkey.example.org", 200},
		{"/.well-known/openpgpkey/xn--bcher-kva.example/policy", "openpgpkey.xn--bcher-kva.example", 200},
		{"/.well-known/openpgpkey/b%C3%BCcher.example/policy", "openpgpkey.xn--bcher-kva.example", 200},
		{"/.well-known/openpgpkey/policy", "other.example", 404},
		{"/.well-known/openpgpkey/other.example/policy", "openpgpkey.other.example", 404},
		{"/.well-known/openpgpkey/policy", "openpgpkey.example.org", 404},
	} {
		resp, body := d.do("GET", tc.path, tc.host, nil, nil)
		if resp.StatusCode != tc.want {
			t.Errorf("%s (Host %s): status %d, want %d", tc.path, tc.host, resp.StatusCode, tc.want)
			continue
		}
		if tc.want != 200 {
			continue
		}
		if !bytes.HasSuffix(body, []byte("\n")) {
			t.Errorf("%s: policy %q does not end with LF", tc.path, body)
		}
		if resp.Header.Get("Access-Control-Allow-Origin") != "*" {
			t.Errorf("%s: no CORS header", tc.path)
		}
	}
}

func TestWKDCORSAndMethods(t *testing.T) {
	d := newTestDir(t, Options{}, vectorDomain)
	for _, path := range []string{advancedPath + vectorHash, directPath + vectorHash, "/.well-known/openpgpkey/policy", "/vks/v1/by-email/a@example.org", "/pks/lookup"} {
		resp, body := d.do("OPTIONS", path, "example.org", http.Header{
			"Origin":                         {"https://webmail.example"},
			"Access-Control-Request-Method":  {"GET"},
			"Access-Control-Request-Headers": {"authorization, x-openpgp-padding"},
		}, nil)
		if resp.StatusCode != http.StatusNoContent || len(body) != 0 {
			t.Errorf("OPTIONS %s: status %d, body %q", path, resp.StatusCode, body)
		}
		for h, want := range map[string]string{
			"Access-Control-Allow-Origin":  "*",
			"Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
		} {
			if got := resp.Header.Get(h); got != want {
				t.Errorf("OPTIONS %s: %s %q, want %q", path, h, got, want)
			}
		}
		allowHeaders := resp.Header.Get("Access-Control-Allow-Headers")
		if !strings.Contains(allowHeaders, "*") || !strings.Contains(allowHeaders, "Authorization") {
			t.Errorf("OPTIONS %s: Access-Control-Allow-Headers %q", path, allowHeaders)
		}
		post, _ := d.do("POST", path, "example.org", nil, strings.NewReader("x"))
		if post.StatusCode != http.StatusMethodNotAllowed || post.Header.Get("Access-Control-Allow-Origin") != "*" {
			t.Errorf("POST %s: status %d, CORS %q", path, post.StatusCode, post.Header.Get("Access-Control-Allow-Origin"))
		}
	}
}

// A key whose only address is outside the configured domains is in the
// store (and found by the store's WKD index) but never served.
func TestWKDKeyOutsideDomainsNotServed(t *testing.T) {
	d := newTestDir(t, Options{}, vectorDomain)
	d.publish(entity(t, "joe.doe@other.example"))
	keys, err := d.store.LookupWKD(t.Context(), "other.example", vectorHash)
	if err != nil || len(keys) != 1 {
		t.Fatalf("fixture: store has %d keys for other.example (%v)", len(keys), err)
	}
	for _, tc := range []struct{ path, host string }{
		{directPath + vectorHash, "other.example"},
		{"/.well-known/openpgpkey/other.example/hu/" + vectorHash, "openpgpkey.other.example"},
		{advancedPath + vectorHash, "openpgpkey.example.org"},
		{directPath + vectorHash, "example.org"},
	} {
		if resp, _ := d.do("GET", tc.path, tc.host, nil, nil); resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s (Host %s): status %d, want 404", tc.path, tc.host, resp.StatusCode)
		}
	}
}

// A key with two addresses in the served domain: each WKD answer carries
// only the user ID of the requested address.
func TestWKDOnlyMatchingUserID(t *testing.T) {
	d := newTestDir(t, Options{}, vectorDomain)
	d.publish(entity(t, "alice@example.org", "bob@example.org"))
	for _, local := range []string{"alice", "bob"} {
		resp, body := d.do("GET", advancedPath+wkd.Hash(local), "openpgpkey.example.org", nil, nil)
		checkKeyAnswer(t, resp, body, "Test User <"+local+"@example.org>")
	}
}

// Several keys for one address are concatenated, usable ones first, at
// most MaxWKDKeys; a revoked key is still served after them.
func TestWKDSeveralKeys(t *testing.T) {
	d := newTestDir(t, Options{}, vectorDomain)
	revoked := entity(t, "carol@example.org")
	d.publish(revoked)
	if err := revoked.RevokeKey(packet.KeyRetired, "retired", nil); err != nil {
		t.Fatal(err)
	}
	k, err := d.store.Get(t.Context(), fingerprint(revoked))
	if err != nil {
		t.Fatal(err)
	}
	k.Data, k.Updated = publicKey(t, revoked), time.Now().Add(time.Hour) // newest, but revoked
	if err := d.store.Put(t.Context(), k); err != nil {
		t.Fatal(err)
	}
	for range MaxWKDKeys {
		d.publish(entity(t, "carol@example.org"))
	}
	resp, body := d.do("GET", advancedPath+wkd.Hash("carol"), "openpgpkey.example.org", nil, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	el := readKeyRing(t, body)
	if len(el) != MaxWKDKeys {
		t.Fatalf("served %d keys, want %d", len(el), MaxWKDKeys)
	}
	for i, e := range el {
		if e.Revoked(time.Now()) {
			t.Errorf("key %d of %d is the revoked one; usable keys must come first", i+1, len(el))
		}
	}

	// With fewer usable keys than the cap, the revoked key comes last.
	d2 := newTestDir(t, Options{}, vectorDomain)
	d2.publish(entity(t, "carol@example.org"))
	if err := d2.store.Put(t.Context(), k); err != nil {
		t.Fatal(err)
	}
	_, body = d2.do("GET", advancedPath+wkd.Hash("carol"), "openpgpkey.example.org", nil, nil)
	el = readKeyRing(t, body)
	if len(el) != 2 || el[0].Revoked(time.Now()) || !el[1].Revoked(time.Now()) {
		t.Errorf("served %d keys; want the usable key, then the revoked one", len(el))
	}
}

func TestWKDETag(t *testing.T) {
	d := newTestDir(t, Options{}, vectorDomain)
	d.publish(entity(t, vectorAddress))
	resp, _ := d.do("GET", advancedPath+vectorHash, "openpgpkey.example.org", nil, nil)
	etag := resp.Header.Get("ETag")
	if etag == "" {
		t.Fatal("no ETag")
	}
	again, body := d.do("GET", advancedPath+vectorHash, "openpgpkey.example.org", http.Header{"If-None-Match": {etag}}, nil)
	if again.StatusCode != http.StatusNotModified || len(body) != 0 {
		t.Errorf("revalidation: status %d, %d bytes; want 304", again.StatusCode, len(body))
	}
}

// Reliability K4: traversal attempts and malformed hashes get 400 or 404,
// and the store is never asked.
func TestWKDTraversalAndMalformed(t *testing.T) {
	d := newTestDir(t, Options{}, vectorDomain)
	d.publish(entity(t, vectorAddress))
	targets := []string{
		"/.well-known/openpgpkey/hu/../../../../etc/passwd",
		"/.well-known/openpgpkey/hu/..%2f..%2fetc%2fpasswd",
		"/.well-known/openpgpkey/hu/%2e%2e/%2e%2e/etc/passwd",
		"/.well-known/openpgpkey/hu/%252e%252e%252f",
		"/.well-known/openpgpkey/hu/..%5c..%5cetc",
		"/.well-known/openpgpkey/hu/" + vectorHash + "%00.asc",
		"/.well-known/openpgpkey/hu/" + vectorHash + "%2f..",
		"/.well-known/openpgpkey/hu/" + vectorHash + "/",
		"/.well-known/openpgpkey/hu/" + vectorHash + ".asc",
		"/.well-known/openpgpkey/hu/" + vectorHash[:31],
		"/.well-known/openpgpkey/hu/" + vectorHash + "y",
		"/.well-known/openpgpkey/hu/" + strings.ToUpper(vectorHash),
		"/.well-known/openpgpkey/hu/" + "0" + vectorHash[1:], // '0' is not z-base-32
		"/.well-known/openpgpkey/hu/" + "l" + vectorHash[1:], // nor 'l'
		"/.well-known/openpgpkey/hu/",
		"/.well-known/openpgpkey/..%2F..%2Fetc/hu/" + vectorHash,
		"/.well-known/openpgpkey/%2e%2e/hu/" + vectorHash,
		"/.well-known/openpgpkey/evil.example/hu/" + vectorHash,
		"/.well-known/openpgpkey/example.org%2fhu/" + vectorHash,
		"/.well-known/openpgpkey/example.org/hu/" + vectorHash + "/x",
		"/.well-known/openpgpkey//hu/" + vectorHash,
		"//.well-known/openpgpkey/hu/" + vectorHash,
		"/.well-known/openpgpkey/./hu/" + vectorHash,
		"/.well-known/openpgpkey/submission-address",
	}
	for _, target := range targets {
		if code := d.raw(target, "example.org"); code != 400 && code != 404 {
			t.Errorf("GET %s: status %d, want 400 or 404", target, code)
		}
	}
	// A configured path with an unconfigured Host.
	if code := d.raw(directPath+vectorHash, "evil.example"); code != 404 {
		t.Errorf("direct method with Host evil.example: status %d, want 404", code)
	}
	if n := d.store.reads.Load(); n != 0 {
		t.Errorf("the store was asked %d times", n)
	}
	// The control: a good request does reach the store.
	if code := d.raw(directPath+vectorHash, "example.org"); code != 200 {
		t.Errorf("good request: status %d", code)
	}
	if d.store.reads.Load() == 0 {
		t.Error("the counting store saw no read for a good request")
	}
}

func TestValidWKDHash(t *testing.T) {
	for _, h := range []string{vectorHash, strings.Repeat("y", 32), wkd.Hash("x")} {
		if !ValidWKDHash(h) {
			t.Errorf("ValidWKDHash(%q) = false", h)
		}
	}
	for _, h := range []string{"", vectorHash[:31], vectorHash + "y", strings.ToUpper(vectorHash), strings.Repeat("v", 32), strings.Repeat("2", 32)} {
		if ValidWKDHash(h) {
			t.Errorf("ValidWKDHash(%q) = true", h)
		}
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	d := newTestDir(t, Options{}, vectorDomain)
	for name, opts := range map[string]Options{
		"no store":           {},
		"upper-case domain":  {Store: d.store, Domains: []string{"Example.org"}},
		"unicode domain":     {Store: d.store, Domains: []string{"bücher.example"}},
		"trailing dot":       {Store: d.store, Domains: []string{"example.org."}},
		"negative body cap":  {Store: d.store, MaxBodyBytes: -1},
		"body cap too large": {Store: d.store, MaxBodyBytes: 1 << 30},
	} {
		if _, err := New(opts); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
}
