package httpd

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sealgate/sealgate/keydir"
)

// FuzzWKDPath sends GET requests with arbitrary paths under the WKD prefix
// and arbitrary Host headers to the directory, which holds one key
// (Joe.Doe@Example.ORG). Whatever the input: no panic and no 5xx; a 200
// only for a policy file (whose body is PolicyFile) or for the one hash
// that has a key; and a path whose last segment is not a WKD hash never
// reaches the store.
func FuzzWKDPath(f *testing.F) {
	sq, err := keydir.OpenSQLite(context.Background(), filepath.Join(f.TempDir(), "dir.db"))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { sq.Close() })
	store := &countingStore{Store: sq}
	if res, err := keydir.ImportPGP(context.Background(), sq, publicKey(f, entity(f, vectorAddress)), time.Now()); err != nil || res[0].Err != nil {
		f.Fatalf("import: %v %+v", err, res)
	}
	h, err := New(Options{Store: store, Domains: []string{vectorDomain}})
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range [][2]string{
		{"hu/" + vectorHash, "example.org"},
		{vectorDomain + "/hu/" + vectorHash, "openpgpkey.example.org"},
		{"policy", "example.org:443"},
		{vectorDomain + "/policy", "x"},
		{"../" + vectorDomain + "/hu/" + vectorHash, "example.org"},
		{"EXAMPLE.ORG./hu/" + strings.ToUpper(vectorHash), ""},
		{"hu//" + vectorHash, "example.org"},
		{"hu/" + vectorHash + "/", "[::1]:80"},
		{"example.org%2fhu/" + vectorHash, "example.org"},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, rest, host string) {
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.URL.Path = wkdPrefix + rest
		req.Host = host
		before := store.reads.Load()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		segs := strings.Split(rest, "/")
		last := segs[len(segs)-1]
		switch code := rec.Code; {
		case code >= 500:
			t.Fatalf("path %q host %q: %d", rest, host, code)
		case code == http.StatusOK && last == "policy":
			if rec.Body.String() != PolicyFile {
				t.Fatalf("path %q: policy body %q", rest, rec.Body.String())
			}
		case code == http.StatusOK && last != vectorHash:
			t.Fatalf("path %q host %q: 200 for a hash without a key", rest, host)
		}
		if !ValidWKDHash(last) && store.reads.Load() != before {
			t.Fatalf("path %q host %q: reached the store without a valid hash", rest, host)
		}
	})
}
