package httpd

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
)

// keyserverDir publishes alice (one user ID in the served domain, one
// outside it) and partner (outside only).
func keyserverDir(t *testing.T) (d *testDir, alice, partner *openpgp.Entity) {
	t.Helper()
	d = newTestDir(t, Options{}, vectorDomain)
	alice = entity(t, "alice@example.org", "alice@private.example")
	partner = entity(t, "partner@other.example")
	d.publish(alice)
	d.publish(partner)
	return d, alice, partner
}

// checkArmoredAnswer checks a VKS or HKP op=get answer and returns the
// user IDs it carries, read from the packets.
func checkArmoredAnswer(t *testing.T, what string, resp *http.Response, body []byte, wantFpr string) []string {
	t.Helper()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: status %d, body %q", what, resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/pgp-keys" {
		t.Errorf("%s: Content-Type %q", what, ct)
	}
	if resp.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Errorf("%s: no CORS header", what)
	}
	block, err := armor.Decode(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("%s: not armored: %v", what, err)
	}
	bin, err := io.ReadAll(block.Body)
	if err != nil || block.Type != "PGP PUBLIC KEY BLOCK" {
		t.Fatalf("%s: armor block %q: %v", what, block.Type, err)
	}
	el := readKeyRing(t, bin)
	if len(el) != 1 || fingerprint(el[0]) != wantFpr {
		t.Fatalf("%s: %d keys, want %s", what, len(el), wantFpr)
	}
	return userIDPackets(t, bin)
}

func TestVKS(t *testing.T) {
	d, alice, _ := keyserverDir(t)
	fpr := fingerprint(alice)
	keyID := fpr[len(fpr)-16:]
	want := []string{"Test User <alice@example.org>"}
	for _, path := range []string{
		"/vks/v1/by-email/alice@example.org",
		"/vks/v1/by-email/Alice%40Example.ORG",
		"/vks/v1/by-email/%3Calice@example.org%3E",
		"/vks/v1/by-fingerprint/" + fpr,
		"/vks/v1/by-fingerprint/" + strings.ToLower(fpr),
		"/vks/v1/by-keyid/" + keyID,
	} {
		resp, body := d.do("GET", path, "", nil, nil)
		if got := checkArmoredAnswer(t, path, resp, body, fpr); !slices.Equal(got, want) {
			t.Errorf("%s: user IDs %q, want %q (never the one outside the served domains)", path, got, want)
		}
	}
}

func TestVKSNotFoundAndMalformed(t *testing.T) {
	d, _, partner := keyserverDir(t)
	for _, tc := range []struct {
		path string
		want int
	}{
		{"/vks/v1/by-email/bob@example.org", 404},
		{"/vks/v1/by-email/partner@other.example", 404},
		{"/vks/v1/by-email/alice@private.example", 404},
		{"/vks/v1/by-fingerprint/" + fingerprint(partner), 404},
		{"/vks/v1/by-keyid/" + fingerprint(partner)[24:], 404},
		{"/vks/v1/by-fingerprint/" + strings.Repeat("A", 40), 404},
		{"/vks/v1/by-email/not-an-address", 400},
		{"/vks/v1/by-email/a@b@example.org", 400},
		{"/vks/v1/by-fingerprint/XYZ", 400},
		{"/vks/v1/by-fingerprint/" + strings.Repeat("A", 39), 400},
		{"/vks/v1/by-fingerprint/0x" + strings.Repeat("A", 38), 400},
		{"/vks/v1/by-keyid/DEADBEEF", 400},
		{"/vks/v1/by-keyid/" + strings.Repeat("G", 16), 400},
		{"/vks/v1/upload", 404},
	} {
		resp, _ := d.do("GET", tc.path, "", nil, nil)
		if resp.StatusCode != tc.want {
			t.Errorf("%s: status %d, want %d", tc.path, resp.StatusCode, tc.want)
		}
		if resp.Header.Get("Access-Control-Allow-Origin") != "*" {
			t.Errorf("%s: no CORS header on the error", tc.path)
		}
	}
}

func hkpPath(op, search string, extra ...string) string {
	q := url.Values{"op": {op}, "search": {search}}
	for i := 0; i+1 < len(extra); i += 2 {
		q.Set(extra[i], extra[i+1])
	}
	return "/pks/lookup?" + q.Encode()
}

func TestHKPGet(t *testing.T) {
	d, alice, _ := keyserverDir(t)
	fpr := fingerprint(alice)
	for _, search := range []string{"alice@example.org", "<alice@example.org>", "Test User <alice@example.org>", "0x" + fpr, "0x" + strings.ToLower(fpr), "0x" + fpr[24:]} {
		path := hkpPath("get", search, "options", "mr")
		resp, body := d.do("GET", path, "", nil, nil)
		if got := checkArmoredAnswer(t, path, resp, body, fpr); !slices.Equal(got, []string{"Test User <alice@example.org>"}) {
			t.Errorf("%s: user IDs %q", path, got)
		}
	}
}

func TestHKPIndex(t *testing.T) {
	d, alice, _ := keyserverDir(t)
	resp, body := d.do("GET", hkpPath("index", "alice@example.org", "options", "mr"), "", nil, nil)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("status %d, Content-Type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	pk := alice.PrimaryKey
	bits, _ := pk.BitLength()
	created := pk.CreationTime.Unix()
	want := fmt.Sprintf("info:1:1\npub:%s:%d:%d:%d::\nuid:Test User <alice@example.org>:%d::\n",
		fingerprint(alice), pk.PubKeyAlgo, bits, created, alice.Identities["Test User <alice@example.org>"].SelfSignature.CreationTime.Unix())
	if string(body) != want {
		t.Errorf("index:\n%s\nwant:\n%s", body, want)
	}
}

func TestHKPErrors(t *testing.T) {
	d, _, _ := keyserverDir(t)
	for _, tc := range []struct {
		path string
		want int
	}{
		{hkpPath("vindex", "alice@example.org"), 501},
		{hkpPath("x-stats", "alice@example.org"), 501},
		{"/pks/lookup?search=alice@example.org", 400},
		{"/pks/lookup?op=get", 400},
		{hkpPath("get", "0xDEADBEEF"), 400},
		{hkpPath("get", "alice"), 404},
		{hkpPath("index", "partner@other.example"), 404},
		{hkpPath("get", "bob@example.org"), 404},
		{"/pks/add", 404},
	} {
		resp, _ := d.do("GET", tc.path, "", nil, nil)
		if resp.StatusCode != tc.want {
			t.Errorf("%s: status %d, want %d", tc.path, resp.StatusCode, tc.want)
		}
		if resp.Header.Get("Access-Control-Allow-Origin") != "*" {
			t.Errorf("%s: no CORS header", tc.path)
		}
	}
}

func TestHKPEscape(t *testing.T) {
	for in, want := range map[string]string{
		"Test User <a@example.org>":  "Test User <a@example.org>",
		"Jörg: 100% <j@example.org>": "J%C3%B6rg%3A 100%25 <j@example.org>",
		"tab\there":                  "tab%09here",
	} {
		if got := hkpEscape(in); got != want {
			t.Errorf("hkpEscape(%q) = %q, want %q", in, got, want)
		}
	}
}
