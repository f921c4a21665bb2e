package httpd

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"github.com/sealgate/sealgate/keydir"
)

// The draft's test vector (draft-koch-openpgp-webkey-service §3.1).
const (
	vectorAddress = "Joe.Doe@Example.ORG"
	vectorHash    = "iy9q119eutrkn8s1mk4r39qejnbu3n5q"
	vectorDomain  = "example.org"
)

// countingStore is the real store with a count of every read the public
// and admin routes can make, to prove that bad requests never reach it.
type countingStore struct {
	keydir.Store
	reads atomic.Int64
}

func (c *countingStore) Get(ctx context.Context, fpr string) (keydir.Key, error) {
	c.reads.Add(1)
	return c.Store.Get(ctx, fpr)
}

func (c *countingStore) Lookup(ctx context.Context, a string) ([]keydir.Key, error) {
	c.reads.Add(1)
	return c.Store.Lookup(ctx, a)
}

func (c *countingStore) List(ctx context.Context) ([]keydir.Key, error) {
	c.reads.Add(1)
	return c.Store.List(ctx)
}

func (c *countingStore) LookupWKD(ctx context.Context, domain, hash string) ([]keydir.Key, error) {
	c.reads.Add(1)
	return c.Store.LookupWKD(ctx, domain, hash)
}

func (c *countingStore) LookupKeyID(ctx context.Context, id string) ([]keydir.Key, error) {
	c.reads.Add(1)
	return c.Store.LookupKeyID(ctx, id)
}

func (c *countingStore) AuthenticateToken(ctx context.Context, secret string) (keydir.Token, error) {
	c.reads.Add(1)
	return c.Store.AuthenticateToken(ctx, secret)
}

func (c *countingStore) History(ctx context.Context, a string) ([]keydir.Event, error) {
	c.reads.Add(1)
	return c.Store.History(ctx, a)
}

// testDir is a directory server over a fresh SQLite store.
type testDir struct {
	t     *testing.T
	store *countingStore
	srv   *httptest.Server
	now   time.Time
}

func newTestDir(t *testing.T, opts Options, domains ...string) *testDir {
	t.Helper()
	sq, err := keydir.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "dir.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sq.Close() })
	d := &testDir{t: t, store: &countingStore{Store: sq}, now: time.Now()}
	opts.Store, opts.Domains = d.store, domains
	h, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	d.srv = httptest.NewServer(h)
	t.Cleanup(d.srv.Close)
	return d
}

// entity generates a key (EdDSA/Curve25519, which GnuPG 2.2 reads) with
// a user ID "Test User <address>" for each address.
func entity(t testing.TB, addrs ...string) *openpgp.Entity {
	t.Helper()
	cfg := &packet.Config{
		Algorithm: packet.PubKeyAlgoEdDSA, Curve: packet.Curve25519,
		DefaultHash: crypto.SHA256, DefaultCipher: packet.CipherAES256,
		Time: func() time.Time { return time.Now().Add(-time.Hour) },
	}
	e, err := openpgp.NewEntity("Test User", "", addrs[0], cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs[1:] {
		if err := e.AddUserId("Test User", "", a, cfg); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

func publicKey(t testing.TB, e *openpgp.Entity) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := e.Serialize(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func secretKey(t testing.TB, e *openpgp.Entity) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := e.SerializePrivateWithoutSigning(&buf, nil); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func armored(t testing.TB, blockType string, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := armor.Encode(&buf, blockType, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	buf.WriteByte('\n')
	return buf.Bytes()
}

func fingerprint(e *openpgp.Entity) string {
	return fmt.Sprintf("%X", e.PrimaryKey.Fingerprint)
}

// publish imports e's public key the way the CLI does.
func (d *testDir) publish(e *openpgp.Entity) {
	d.t.Helper()
	res, err := keydir.ImportPGP(context.Background(), d.store.Store, publicKey(d.t, e), d.now)
	if err != nil || len(res) != 1 || res[0].Err != nil {
		d.t.Fatalf("import: %v %+v", err, res)
	}
}

// do sends method path with Host host (none: the test server's) and
// extra headers, and returns the response with its body read.
func (d *testDir) do(method, path, host string, hdr http.Header, body io.Reader) (*http.Response, []byte) {
	d.t.Helper()
	req, err := http.NewRequest(method, d.srv.URL+path, body)
	if err != nil {
		d.t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := d.srv.Client().Do(req)
	if err != nil {
		d.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		d.t.Fatal(err)
	}
	return resp, b
}

// raw sends a request line exactly as given (the Go client would clean or
// re-escape the path) and returns the status code.
func (d *testDir) raw(target, host string) int {
	d.t.Helper()
	conn, err := net.Dial("tcp", d.srv.Listener.Addr().String())
	if err != nil {
		d.t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", target, host)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		d.t.Fatalf("GET %s: %v", target, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// userIDPackets returns the user ID strings of every User ID packet in a
// binary key stream, counted on the packets themselves.
func userIDPackets(t testing.TB, b []byte) []string {
	t.Helper()
	var ids []string
	r := packet.NewReader(bytes.NewReader(b))
	for {
		p, err := r.Next()
		if err == io.EOF {
			return ids
		}
		if err != nil {
			t.Fatalf("read packets: %v", err)
		}
		if u, ok := p.(*packet.UserId); ok {
			ids = append(ids, u.Id)
		}
	}
}

func readKeyRing(t testing.TB, b []byte) openpgp.EntityList {
	t.Helper()
	el, err := openpgp.ReadKeyRing(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("read keys: %v", err)
	}
	return el
}
